"""Hypothesis fuzzing: the store under random shard sizes, skips, writers and interruptions; the
captions parsers (JSONL, CSV, tar shards) under junk input."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from monoscope._util import MonoscopeError
from monoscope.data import BadRecord, Pair
from monoscope.data.files import FilePairs
from monoscope.data.webdataset import TarPairs
from monoscope.doctor import diagnose
from monoscope.store import Store, StoreWriter

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _row(i: int, dim: int) -> np.ndarray:
    return np.arange(i * dim, (i + 1) * dim, dtype=np.float32)


@FUZZ
@given(
    dim=st.integers(1, 4),
    shard_size=st.integers(1, 5),
    keep=st.lists(st.booleans(), max_size=30),
    world=st.integers(1, 3),
    crash_after=st.integers(0, 4),
)
def test_store_roundtrip(dim, shard_size, keep, world, crash_after) -> None:
    """Any shard size, skips and writer count, with every writer killed once after
    ``crash_after`` shards and resumed: the store reads back exactly the kept rows, in order."""
    header = {"model": {}, "dim": dim, "normalized": False, "source": {}, "shard_size": shard_size}
    n_shards = -(-len(keep) // shard_size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s"
        for rank in range(world):
            writer = StoreWriter(path, header, rank=rank, world=world)
            for attempt in range(2):  # the first writer "dies"; a resumed one finishes
                written = 0
                for b in range(n_shards):
                    if not writer.mine(b) or writer.done(b):
                        continue
                    if attempt == 0 and written == crash_after:
                        break
                    rows = [i for i in range(b * shard_size, (b + 1) * shard_size) if i < len(keep)]
                    kept = [i for i in rows if keep[i]]
                    writer.add_shard(
                        b,
                        np.stack([_row(i, dim) for i in kept]) if kept else np.zeros((0, dim)),
                        -np.stack([_row(i, dim) for i in kept]) if kept else np.zeros((0, dim)),
                        [
                            {"id": str(i), "caption": "c", "image_ref": "", "labels": {}}
                            for i in kept
                        ],
                        Counter({"missing image": len(rows) - len(kept)}),
                    )
                    written += 1
                writer = StoreWriter(path, header, resume=True, rank=rank, world=world)
            writer.end(len(keep))
        final = StoreWriter(path, header, resume=True, world=world)
        kept = [i for i, k in enumerate(keep) if k]
        if not kept:
            with pytest.raises(MonoscopeError, match="no pair could be embedded"):
                final.finish()
            return
        final.finish()
        store = Store(path)
        expected = np.stack([_row(i, dim) for i in kept])
        np.testing.assert_array_equal(store.load("image"), expected)
        np.testing.assert_array_equal(store.load("text"), -expected)
        assert [p["id"] for p in store.pairs()] == [str(i) for i in kept]
        assert store.manifest["records"] == len(keep)
        assert store.manifest["skipped"]["count"] == len(keep) - len(kept)
        assert diagnose(path) == []


_text = st.text(st.characters(codec="utf-8"), max_size=20) | st.sampled_from(
    ["", " ", "\u00e9", "\u2028", "\x00", "\\", '"', ",", "\n", "\r"]
)
_scalar = st.none() | st.booleans() | st.integers() | st.floats() | _text
_json = st.recursive(
    _scalar,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_text, c, max_size=3),
    max_leaves=10,
)
_record = st.fixed_dictionaries(
    {"image": st.sampled_from(["a.png", "bad.png", "nope.png", ""]) | _json},
    optional={"caption": _json, "id": _json, "label": _json},
)
_jsonl_line = (
    _record.map(lambda r: json.dumps(r).encode())
    | _json.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=30)
    | st.just(b'{"image": "a.png", "caption": "caf\xe9"}')
    | st.just(b'{"image": "a.png", "caption": "\\ud800"}')
    | st.just(b'{"image": "a.png", "caption": 1' + b"0" * 5000 + b"}")
)
_csv_field = (_text | st.binary(max_size=10).map(lambda b: b.decode("latin-1"))).map(
    lambda s: s.encode("utf-8", "surrogatepass")
)


def _folder(tmp: str) -> Path:
    root = Path(tmp)
    Image.new("RGB", (3, 3), (1, 2, 3)).save(root / "a.png")
    (root / "bad.png").write_bytes(b"\x89PNG junk")
    return root


def _drain(pairs: list[Pair]) -> None:
    """Every record is either writable to pairs.jsonl with a decodable image, or a counted
    skip (``BadRecord``)."""
    for p in pairs:
        try:
            p.load_image()
        except BadRecord:
            continue
        record = {"id": p.id, "caption": p.caption, "image_ref": p.image_ref, "labels": p.labels}
        json.dumps(record, ensure_ascii=False).encode("utf-8")


def _parse(path: Path) -> None:
    try:
        source = FilePairs(path)
        pairs = list(source)
        assert len(source) == len(pairs)
        source.describe()
    except MonoscopeError:
        return
    _drain(pairs)


@FUZZ
@given(st.lists(_jsonl_line, min_size=1, max_size=8), st.sampled_from([b"\n", b"\r\n"]))
def test_jsonl_parser_yields_pairs_or_a_clear_error(lines, newline) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _folder(tmp) / "pairs.jsonl"
        path.write_bytes(b'{"image": "a.png", "caption": "ok"}\n' + newline.join(lines))
        _parse(path)


@FUZZ
@given(
    st.lists(st.sampled_from([b"image", b"caption", b"id", b"x"]), min_size=1, max_size=4),
    st.lists(st.lists(_csv_field, max_size=5), max_size=6),
)
def test_csv_parser_yields_pairs_or_a_clear_error(header, rows) -> None:
    def line(fields: list[bytes]) -> bytes:
        return b",".join(b'"' + f.replace(b'"', b'""') + b'"' for f in fields)

    with tempfile.TemporaryDirectory() as tmp:
        path = _folder(tmp) / "pairs.csv"
        path.write_bytes(b"\n".join([line(header), b"a.png,ok", *map(line, rows)]) + b"\n")
        _parse(path)


def _shard() -> bytes:
    buf = io.BytesIO()
    png = io.BytesIO()
    Image.new("RGB", (3, 3), (9, 9, 9)).save(png, "PNG")
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for key in range(3):
            for ext, data in (("png", png.getvalue()), ("txt", b"cap"), ("json", b'{"a": 1}')):
                info = tarfile.TarInfo(f"{key:04d}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SHARD = _shard()


@FUZZ
@given(
    cut=st.integers(0, len(SHARD)),
    flips=st.lists(st.tuples(st.integers(0, len(SHARD) - 1), st.integers(0, 255)), max_size=6),
)
def test_tar_reader_survives_damage(cut, flips) -> None:
    """Truncated or byte-flipped shards give pairs and counted skips, never an exception."""
    data = bytearray(SHARD[:cut])
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "0.tar").write_bytes(bytes(data))
        (Path(tmp) / "1.tar").write_bytes(SHARD)
        pairs = list(TarPairs(tmp))
        assert [p.id for p in pairs[-3:]] == ["0000", "0001", "0002"]  # the sound shard
        _drain(pairs)
