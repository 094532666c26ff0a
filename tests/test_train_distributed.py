"""Data-parallel train_featuremap: two gloo processes (as torchrun would start them) train the
same maps as one process, up to the order of floating-point reductions."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from monoscope._util import MonoscopeError
from monoscope.analysis.planted import make_planted, write_planted_store
from monoscope.featuremaps import load_featuremap
from monoscope.featuremaps.train import train_featuremap

METHODS = ("sae-topk", "ncl")
OPTIONS = {"latents": 16, "k": 3, "batch_size": 64, "steps": 30, "progress": False}
SCRIPT = f"""
import sys
import torch
torch.set_num_threads(1)
from monoscope.featuremaps.train import train_featuremap
for method in {METHODS!r}:
    out = train_featuremap(sys.argv[1], method, sys.argv[2] + "/" + method, **{OPTIONS!r})
    assert str(out) == sys.argv[2] + "/" + method
"""
ATOL = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str], world: int) -> None:
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", SCRIPT, *args],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errors = [p.communicate(timeout=120)[1] for p in procs]
    for p, err in zip(procs, errors, strict=True):
        assert p.returncode == 0, err


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    image, text, _ = make_planted(dim=8, n_atoms=16, n_pairs=300, seed=1)
    return write_planted_store(tmp_path_factory.mktemp("store") / "s", image, text, shard_size=128)


def test_two_ranks_train_the_same_maps_as_one(store, tmp_path: Path):
    _launch([str(store.path), str(tmp_path / "ddp")], world=2)
    for method in METHODS:
        ref = train_featuremap(store, method, tmp_path / "ref" / method, **OPTIONS)
        ddp = tmp_path / "ddp" / method
        assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in ref.iterdir())
        a, b = load_file(str(ref / "model.safetensors")), load_file(str(ddp / "model.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(b[key].numpy(), a[key].numpy(), rtol=0, atol=ATOL)
        log = (ddp / "train_log.jsonl").read_text().splitlines()
        assert len(log) == len((ref / "train_log.jsonl").read_text().splitlines())
        load_featuremap(ddp)


def test_batch_size_must_divide_among_the_processes(store, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setattr("torch.distributed.is_initialized", lambda: True)
    monkeypatch.setattr("torch.distributed.get_rank", lambda: 0)
    monkeypatch.setattr("torch.distributed.get_world_size", lambda: 3)
    monkeypatch.setattr("torch.distributed.broadcast_object_list", lambda box, src: None)
    with pytest.raises(MonoscopeError, match="not divisible by the 3 processes"):
        train_featuremap(store, "sae-topk", tmp_path / "m", **OPTIONS)
