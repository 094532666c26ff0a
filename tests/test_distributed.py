"""Data-parallel embed: two gloo processes (as torchrun would start them) vs one process."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import ListSource, ToyEncoder
from monoscope.embed import embed
from monoscope.store import Store

TESTS = Path(__file__).parent
BAD = {2: "corrupt image", 17: "missing image"}
SCRIPT = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from conftest import ListSource, ToyEncoder
from monoscope.embed import embed
embed(ToyEncoder(), ListSource(45, bad={BAD!r}), sys.argv[1], shard_size=8, batch_size=4,
      device="cpu", progress=False)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_write_the_same_store_as_one(tmp_path: Path):
    ref = Store(
        embed(
            ToyEncoder(),
            ListSource(45, bad=BAD),
            tmp_path / "ref",
            shard_size=8,
            batch_size=4,
            device="cpu",
            progress=False,
        )
    )
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", SCRIPT, str(tmp_path / "ddp")],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errors = [p.communicate(timeout=120)[1] for p in procs]
    for p, err in zip(procs, errors, strict=True):
        assert p.returncode == 0, err
    ddp = Store(tmp_path / "ddp")
    assert ddp.manifest["writers"] == 2
    assert [p["id"] for p in ddp.pairs()] == [p["id"] for p in ref.pairs()]
    np.testing.assert_array_equal(ddp.load("image"), ref.load("image"))
    np.testing.assert_array_equal(ddp.load("text"), ref.load("text"))
    assert ddp.manifest["skipped"] == ref.manifest["skipped"]
