"""WebDataset tar shards (img2dataset layout): spec forms, reading order, record hygiene, damage."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ToyEncoder
from monoscope._util import MonoscopeError
from monoscope.data import BadRecord, load_image_ref, open_source
from monoscope.data.webdataset import TarPairs, is_tar_spec
from monoscope.embed import embed
from monoscope.store import Store

wds = pytest.importorskip("webdataset")


def encoded(i: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    rgb = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()


def write_shard(path: Path, samples: list[dict]) -> Path:
    with wds.TarWriter(str(path)) as w:
        for s in samples:
            w.write(s)
    return path


def plain(shard: int, n: int) -> list[dict]:
    return [
        {
            "__key__": f"{shard:05d}{i:04d}",
            "png": encoded(100 * shard + i),
            "txt": f"caption {shard}-{i}",
            "json": {"key": f"{shard:05d}{i:04d}", "status": "success", "width": 8},
        }
        for i in range(n)
    ]


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """Three shards of 4, 7 and 3 samples; shard 1 holds one of each kind of bad record."""
    d = tmp_path / "shards"
    d.mkdir()
    write_shard(d / "00000.tar", plain(0, 4))
    odd = [
        {"__key__": "000010000", "jpg": encoded(1, "JPEG"), "txt": "a jpeg"},
        {"__key__": "000010001", "png": b"\x89PNG not really", "txt": "corrupt image"},
        {"__key__": "000010002", "png": encoded(2)},  # no caption
        {"__key__": "000010003", "png": encoded(3), "txt": b"caf\xe9 latin-1"},
        {"__key__": "000010004", "png": encoded(4), "json": {"caption": "from json", "n": 1}},
        {"__key__": "000010005", "txt": "no image"},
        {"__key__": "000010006", "png": encoded(6), "txt": "x", "json": b"{not json"},
    ]
    write_shard(d / "00001.tar", odd)
    write_shard(d / "00002.tar", plain(2, 3))
    return d


def test_spec_forms_name_the_same_shards(shards: Path) -> None:
    ids = [p.id for p in TarPairs(str(shards))]
    assert len(ids) == 14 and ids == sorted(ids)
    for spec in (f"{shards}/{{00000..00002}}.tar", f"{shards}/*.tar"):
        assert is_tar_spec(spec)
        assert [p.id for p in open_source(spec)] == ids
    assert [p.id for p in open_source(str(shards / "00002.tar"))] == ids[-3:]
    assert is_tar_spec(str(shards)) and not is_tar_spec(str(shards.parent))
    with pytest.raises(MonoscopeError, match="1 of 4 shards do not exist"):
        open_source(f"{shards}/{{00000..00003}}.tar")
    with pytest.raises(MonoscopeError, match="no tar shards match"):
        open_source(f"{shards}/*9.tar")


def test_reads_what_webdataset_reads(shards: Path) -> None:
    """Same samples, same order, same captions as the webdataset library itself."""
    spec = f"{shards}/{{00000..00002}}.tar"
    theirs = [(s["__key__"], s.get("txt")) for s in wds.WebDataset(spec, shardshuffle=False)]
    ours = list(open_source(spec))
    assert [p.id for p in ours] == [k for k, _ in theirs]
    for pair, (_, txt) in zip(ours, theirs, strict=True):
        skipped = pair.caption in ("undecodable caption", "corrupt labels", "missing image")
        if txt is not None and not skipped:
            assert pair.caption == txt.decode("utf-8")


def test_records_labels_and_lazy_images(shards: Path) -> None:
    pairs = {p.id: p for p in TarPairs(str(shards))}
    first = pairs["000000000"]
    assert first.caption == "caption 0-0"
    assert first.labels == {"key": "000000000", "status": "success", "width": 8}
    assert first.image_ref == f"tar:{shards / '00000.tar'}#000000000.png"
    im = first.load_image()
    assert im.mode == "RGB" and np.array_equal(
        np.asarray(im), np.asarray(Image.open(io.BytesIO(encoded(0))))
    )
    assert np.array_equal(np.asarray(load_image_ref(first.image_ref)), np.asarray(im))
    assert pairs["000010000"].load_image().size == (8, 8)  # JPEG
    assert pairs["000010004"].caption == "from json" and pairs["000010004"].labels == {"n": 1}
    assert pairs["000010002"].caption == ""  # embed skips it as "empty caption"
    reasons = {}
    for key in ("000010001", "000010003", "000010005", "000010006"):
        with pytest.raises(BadRecord) as e:
            pairs[key].load_image()
        reasons[key] = e.value.reason
    assert reasons == {
        "000010001": "corrupt image",
        "000010003": "undecodable caption",
        "000010005": "missing image",
        "000010006": "corrupt labels",
    }
    with pytest.raises(BadRecord, match="missing image"):
        load_image_ref(f"tar:{shards / '00000.tar'}#nope.png")


def test_embed_counts_every_bad_record(shards: Path, tmp_path: Path) -> None:
    store = Store(
        embed(
            ToyEncoder(),
            str(shards),
            tmp_path / "s",
            shard_size=5,
            batch_size=3,
            device="cpu",
            progress=False,
        )  # fmt: skip
    )
    assert store.manifest["records"] == 14 and store.count == 9
    assert store.manifest["skipped"]["reasons"] == {
        "corrupt image": 1,
        "empty caption": 1,
        "undecodable caption": 1,
        "missing image": 1,
        "corrupt labels": 1,
    }
    assert store.manifest["source"]["kind"] == "webdataset"
    assert store.manifest["source"]["shards"] == 3


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "no end marker"])
def test_damaged_shard_is_a_counted_skip(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "shards"
    d.mkdir()
    for b in range(3):
        write_shard(d / f"{b:05d}.tar", plain(b, 6))
    bad = d / "00001.tar"
    if damage == "truncated":
        _truncate(bad, 0.5)
    elif damage == "garbage":
        bad.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == "empty":
        bad.write_bytes(b"")
    else:  # cut exactly after the last member: tarfile alone would not notice
        data = bad.read_bytes().rstrip(b"\0")
        bad.write_bytes(data + b"\0" * (-len(data) % 512))
    pairs = list(open_source(str(d)))
    ids = [p.id for p in pairs]
    assert ids[:6] == [f"00000{i:04d}" for i in range(6)]
    assert ids[-6:] == [f"00002{i:04d}" for i in range(6)]
    lost = [p for p in pairs if p.id.startswith("00001.tar#lost")]
    assert len(lost) == 1
    with pytest.raises(BadRecord, match="corrupt shard"):
        lost[0].load_image()
    kept = [i for i in ids if i.startswith("00001") and "#" not in i]
    assert len(kept) < 6 and (damage == "truncated" or damage == "no end marker" or not kept)


def test_truncated_shard_counts_lost_samples_from_img2dataset_stats(tmp_path: Path) -> None:
    d = tmp_path / "shards"
    d.mkdir()
    write_shard(d / "00000.tar", plain(0, 10))
    (d / "00000_stats.json").write_text(json.dumps({"count": 12, "successes": 10}))
    _truncate(d / "00000.tar", 0.45)
    s = Store(
        embed(ToyEncoder(), str(d), tmp_path / "s", shard_size=4, device="cpu", progress=False)
    )
    assert s.manifest["records"] == 10  # read + lost = what the shard held
    assert s.manifest["skipped"]["reasons"]["corrupt shard"] == 10 - s.count
    assert 0 < s.count < 10
