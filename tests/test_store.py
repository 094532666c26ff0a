from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monoscope._util import MonoscopeError
from monoscope.store import Store, StoreWriter

HEADER = {
    "model": {"kind": "toy"},
    "dim": 3,
    "normalized": False,
    "source": {"k": 1},
    "shard_size": 4,
}


def _rows(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    img = np.arange(offset * 3, (offset + n) * 3, dtype=np.float32).reshape(n, 3)
    return (
        img,
        -img,
        [{"id": f"p{offset + i}", "caption": "c", "image_ref": "", "labels": {}} for i in range(n)],
    )


def test_write_read_roundtrip(tmp_path: Path):
    w = StoreWriter(tmp_path / "s", HEADER)
    w.add_shard(*_rows(4), consumed=4, skipped=Counter())
    w.add_shard(*_rows(2, 4), consumed=7, skipped=Counter({"empty caption": 1}))
    w.finish(7, Counter({"empty caption": 1}))
    s = Store(tmp_path / "s")
    assert (s.count, s.dim, s.n_shards) == (6, 3, 2)
    np.testing.assert_array_equal(s.load("image"), np.arange(18, dtype=np.float32).reshape(6, 3))
    np.testing.assert_array_equal(s.load("text"), -s.load("image"))
    assert [p["id"] for p in s.pairs()] == [f"p{i}" for i in range(6)]
    assert s.manifest["skipped"] == {"count": 1, "reasons": {"empty caption": 1}}
    shard = s.shard(1)
    assert shard.start == 4 and isinstance(shard.image, np.memmap)


def test_incomplete_store_is_refused_then_resumed(tmp_path: Path):
    w = StoreWriter(tmp_path / "s", HEADER)
    w.add_shard(*_rows(4), consumed=4, skipped=Counter())
    # Simulate a crash after appending pair lines of an uncommitted shard.
    with open(tmp_path / "s" / "pairs.jsonl", "a") as f:
        f.write('{"id": "half-written"}\n')
    with pytest.raises(MonoscopeError, match="incomplete"):
        Store(tmp_path / "s")
    with pytest.raises(MonoscopeError, match="--resume"):
        StoreWriter(tmp_path / "s", HEADER)
    w2 = StoreWriter(tmp_path / "s", HEADER, resume=True)
    assert w2.consumed == 4
    w2.add_shard(*_rows(1, 4), consumed=5, skipped=Counter())
    w2.finish(5, Counter())
    assert [p["id"] for p in Store(tmp_path / "s").pairs()] == ["p0", "p1", "p2", "p3", "p4"]


def test_resume_with_different_model_is_refused(tmp_path: Path):
    StoreWriter(tmp_path / "s", HEADER)
    with pytest.raises(MonoscopeError, match="'model' differs"):
        StoreWriter(tmp_path / "s", {**HEADER, "model": {"kind": "other"}}, resume=True)


def test_corrupt_shard_gives_clear_error(tmp_path: Path):
    w = StoreWriter(tmp_path / "s", HEADER)
    w.add_shard(*_rows(4), consumed=4, skipped=Counter())
    w.finish(4, Counter())
    (tmp_path / "s" / "image" / "00000.npy").write_bytes(b"garbage")
    with pytest.raises(MonoscopeError, match="unreadable shard"):
        Store(tmp_path / "s").load("image")


def test_not_a_store(tmp_path: Path):
    with pytest.raises(MonoscopeError, match="not a store"):
        Store(tmp_path)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=6))
def test_any_shard_sizes_roundtrip(tmp_path_factory, sizes):
    path = tmp_path_factory.mktemp("s")
    w = StoreWriter(path, HEADER, overwrite=True)
    offset = 0
    for n in sizes:
        w.add_shard(*_rows(n, offset), consumed=offset + n, skipped=Counter())
        offset += n
    w.finish(offset, Counter())
    s = Store(path)
    assert s.count == offset
    np.testing.assert_array_equal(s.load("image"), _rows(offset)[0])
    assert [p["id"] for p in s.pairs()] == [f"p{i}" for i in range(offset)]


def test_rows_gathers_across_shards(tmp_path: Path):
    w = StoreWriter(tmp_path / "s", HEADER)
    w.add_shard(*_rows(4), consumed=4, skipped=Counter())
    w.add_shard(*_rows(3, 4), consumed=7, skipped=Counter())
    w.finish(7, Counter())
    s = Store(tmp_path / "s")
    idx = np.array([[6, 0], [-1, 4]])
    got = s.rows("image", idx)
    full = s.load("image")
    assert got.shape == (2, 2, 3)
    np.testing.assert_array_equal(got[0, 0], full[6])
    np.testing.assert_array_equal(got[1, 1], full[4])
    np.testing.assert_array_equal(got[1, 0], np.zeros(3))
    with pytest.raises(IndexError):
        s.rows("text", np.array([7]))
