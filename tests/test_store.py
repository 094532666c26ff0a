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
    w.add_shard(0, *_rows(4), Counter())
    w.add_shard(1, *_rows(2, 4), Counter({"empty caption": 1, "corrupt image": 1}))
    w.end(8)
    w.finish()
    s = Store(tmp_path / "s")
    assert (s.count, s.dim, s.n_shards) == (6, 3, 2)
    np.testing.assert_array_equal(s.load("image"), np.arange(18, dtype=np.float32).reshape(6, 3))
    np.testing.assert_array_equal(s.load("text"), -s.load("image"))
    assert [p["id"] for p in s.pairs()] == [f"p{i}" for i in range(6)]
    assert s.manifest["skipped"] == {
        "count": 2,
        "reasons": {"empty caption": 1, "corrupt image": 1},
    }
    assert s.manifest["records"] == 8
    shard = s.shard(1)
    assert shard.start == 4 and isinstance(shard.image, np.memmap)
    assert not (tmp_path / "s" / "progress").exists()  # working files are gone


def test_incomplete_store_is_refused_then_resumed(tmp_path: Path):
    w = StoreWriter(tmp_path / "s", HEADER)
    w.add_shard(0, *_rows(4), Counter())
    with pytest.raises(MonoscopeError, match="incomplete"):
        Store(tmp_path / "s")
    with pytest.raises(MonoscopeError, match="--resume"):
        StoreWriter(tmp_path / "s", HEADER)
    w2 = StoreWriter(tmp_path / "s", HEADER, resume=True)
    assert w2.done(0) and not w2.done(1)
    w2.add_shard(1, *_rows(1, 4), Counter())
    w2.end(5)
    w2.finish()
    assert [p["id"] for p in Store(tmp_path / "s").pairs()] == ["p0", "p1", "p2", "p3", "p4"]


def test_finish_refuses_missing_shards_and_unfinished_writers(tmp_path: Path):
    w = StoreWriter(tmp_path / "s", HEADER, world=2)
    w.add_shard(0, *_rows(4), Counter())
    w.end(8)
    with pytest.raises(MonoscopeError, match="not every writer has finished"):
        w.finish()
    w1 = StoreWriter(tmp_path / "s", HEADER, resume=True, rank=1, world=2)
    w1.end(8)
    with pytest.raises(MonoscopeError, match=r"shards \[1\] are missing"):
        w.finish()


def test_resume_with_different_model_is_refused(tmp_path: Path):
    StoreWriter(tmp_path / "s", HEADER)
    with pytest.raises(MonoscopeError, match="'model' differs"):
        StoreWriter(tmp_path / "s", {**HEADER, "model": {"kind": "other"}}, resume=True)


def test_corrupt_shard_gives_clear_error(tmp_path: Path):
    w = StoreWriter(tmp_path / "s", HEADER)
    w.add_shard(0, *_rows(4), Counter())
    w.end(4)
    w.finish()
    (tmp_path / "s" / "image" / "00000.npy").write_bytes(b"garbage")
    with pytest.raises(MonoscopeError, match="7 bytes, the manifest says"):
        Store(tmp_path / "s").load("image")


def test_not_a_store(tmp_path: Path):
    with pytest.raises(MonoscopeError, match="not a store"):
        Store(tmp_path)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=6))
def test_any_shard_sizes_roundtrip(tmp_path_factory, kept):
    """Shards keep any number of their 4 records (the rest skipped); rows stay in order."""
    path = tmp_path_factory.mktemp("s")
    w = StoreWriter(path, HEADER, overwrite=True)
    offset = 0
    for b, n in enumerate(kept):
        w.add_shard(b, *_rows(n, offset), Counter({"missing image": 4 - n}))
        offset += n
    w.end(4 * len(kept))
    if offset == 0:
        with pytest.raises(MonoscopeError, match="no pair could be embedded"):
            w.finish()
        return
    w.finish()
    s = Store(path)
    assert s.count == offset and s.manifest["skipped"]["count"] == 4 * len(kept) - offset
    np.testing.assert_array_equal(s.load("image"), _rows(offset)[0])
    assert [p["id"] for p in s.pairs()] == [f"p{i}" for i in range(offset)]


def test_rows_gathers_across_shards(tmp_path: Path):
    w = StoreWriter(tmp_path / "s", HEADER)
    w.add_shard(0, *_rows(4), Counter())
    w.add_shard(1, *_rows(3, 4), Counter())
    w.end(8)
    w.finish()
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
