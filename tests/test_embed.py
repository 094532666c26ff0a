from pathlib import Path

import numpy as np
import pytest

from conftest import ListSource, ToyEncoder, colour_image
from monoscope._util import MonoscopeError
from monoscope.embed import embed
from monoscope.store import Store


def _embed(path: Path, source, **kw) -> Store:
    kw = {"shard_size": 16, "batch_size": 8, "device": "cpu", "progress": False, **kw}
    return Store(embed(ToyEncoder(), source, path, **kw))


def test_rows_are_normalised_embeddings_in_source_order(tmp_path: Path):
    s = _embed(tmp_path / "s", ListSource(20))
    assert s.count == 20 and s.n_shards == 2
    raw = ToyEncoder().encode_images([colour_image(i) for i in range(20)]).numpy()
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(s.load("image"), expected, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(s.load("text"), axis=1), 1.0, rtol=1e-6)
    assert s.manifest["normalized"] is True and s.manifest["model"]["kind"] == "toy"


def test_bad_records_are_skipped_and_counted(tmp_path: Path):
    source = ListSource(
        12,
        bad={1: "missing image", 2: "corrupt image", 3: "corrupt image"},
        captions={4: "  ", 5: "a NaN caption"},
    )
    s = _embed(tmp_path / "s", source)
    assert s.count == 7
    assert s.manifest["skipped"] == {
        "count": 5,
        "reasons": {
            "missing image": 1,
            "corrupt image": 2,
            "empty caption": 1,
            "non-finite embedding": 1,
        },
    }
    assert [p["id"] for p in s.pairs()] == ["p0", "p6", "p7", "p8", "p9", "p10", "p11"]
    assert np.isfinite(s.load("text")).all()


def test_nothing_embeddable_is_an_error(tmp_path: Path):
    with pytest.raises(MonoscopeError, match="no pair could be embedded"):
        _embed(
            tmp_path / "s",
            ListSource(3, bad={0: "missing image", 1: "missing image", 2: "missing image"}),
        )


class Interrupt(Exception):
    pass


class DyingSource(ListSource):
    """Raises after yielding ``die_at`` records, like a killed process."""

    def __init__(self, n: int, die_at: int, **kw):
        super().__init__(n, **kw)
        self.die_at = die_at

    def __iter__(self):
        for i, pair in enumerate(super().__iter__()):
            if i == self.die_at:
                raise Interrupt
            yield pair


def test_interrupted_embed_resumes_without_loss_or_duplicates(tmp_path: Path):
    bad = {3: "corrupt image", 20: "missing image"}
    reference = _embed(tmp_path / "ref", ListSource(40, bad=bad))
    with pytest.raises(Interrupt):
        _embed(tmp_path / "s", DyingSource(40, die_at=37, bad=bad))
    with pytest.raises(MonoscopeError, match="incomplete"):
        Store(tmp_path / "s")
    encoder = ToyEncoder()
    resumed = Store(
        embed(
            encoder,
            ListSource(40, bad=bad),
            tmp_path / "s",
            shard_size=16,
            batch_size=8,
            device="cpu",
            progress=False,
            resume=True,
        )
    )
    # Shards 0 and 1 (records 0..31) were committed before the crash, so only records 32..39
    # are decoded again.
    assert encoder.image_calls == 8
    assert [p["id"] for p in resumed.pairs()] == [p["id"] for p in reference.pairs()]
    np.testing.assert_array_equal(resumed.load("image"), reference.load("image"))
    assert resumed.manifest["skipped"] == reference.manifest["skipped"]


def test_decoding_workers_give_the_same_store(tmp_path: Path):
    bad = {5: "corrupt image", 30: "missing image"}
    ref = _embed(tmp_path / "ref", ListSource(45, bad=bad))
    par = _embed(tmp_path / "par", ListSource(45, bad=bad), workers=2, batch_size=4)
    assert [p["id"] for p in par.pairs()] == [p["id"] for p in ref.pairs()]
    np.testing.assert_array_equal(par.load("text"), ref.load("text"))
    assert par.manifest["skipped"] == ref.manifest["skipped"]


def test_existing_store_needs_resume_or_overwrite(tmp_path: Path):
    _embed(tmp_path / "s", ListSource(5))
    with pytest.raises(MonoscopeError, match="already exists"):
        _embed(tmp_path / "s", ListSource(5))
    assert _embed(tmp_path / "s", ListSource(7), overwrite=True).count == 7
