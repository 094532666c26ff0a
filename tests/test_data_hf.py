"""Hugging Face datasets as pair sources: a local save_to_disk dataset and a local parquet folder
(streamed), split and column choice, lazy image decoding, image refs, embed with workers."""

from __future__ import annotations

import io
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ToyEncoder
from monoscope._util import MonoscopeError
from monoscope.data import BadRecord, load_image_ref, open_source
from monoscope.data.hfdata import HFPairs
from monoscope.embed import embed
from monoscope.store import Store

datasets = pytest.importorskip("datasets")
datasets.disable_progress_bars()


def picture(i: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8))


def png(i: int) -> bytes:
    buf = io.BytesIO()
    picture(i).save(buf, "PNG")
    return buf.getvalue()


def table(n: int, image: str = "image", caption: str = "caption") -> datasets.Dataset:
    features = datasets.Features(
        {
            image: datasets.Image(),
            caption: datasets.Value("string"),
            "label": datasets.ClassLabel(names=["cat", "dog"]),
            "score": datasets.Value("float32"),
            "tags": datasets.Sequence(datasets.Value("string")),
        }
    )
    return datasets.Dataset.from_dict(
        {
            image: [{"bytes": png(i), "path": None} for i in range(n)],
            caption: [f"pet {i}" if i != 3 else "" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "score": [i / 2 for i in range(n)],
            "tags": [["a"]] * n,
        },
        features=features,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hf") / "pets"
    datasets.DatasetDict({"train": table(10), "test": table(4)}).save_to_disk(str(path))
    return path


def test_save_to_disk_dataset(saved: Path) -> None:
    source = open_source(f"hf:{saved}")
    assert isinstance(source, HFPairs) and len(source) == 10
    assert (source.split, source.image_column, source.caption_column) == (
        "train",
        "image",
        "caption",
    )
    pairs = list(source)
    p = pairs[1]
    assert (p.id, p.caption) == ("1", "pet 1")
    assert p.labels == {"label": "dog", "score": 0.5}  # class names; list columns left out
    assert p.image_ref == f"hf:{saved}:train#image[1]"
    assert np.array_equal(np.asarray(p.load_image()), np.asarray(picture(1)))
    assert np.array_equal(np.asarray(load_image_ref(p.image_ref)), np.asarray(picture(1)))
    assert pairs[3].caption == ""  # embed skips it as "empty caption"
    d = source.describe()
    assert d["kind"] == "hf" and d["count"] == 10 and d["fingerprint"]
    assert [p.id for p in open_source(f"hf:{saved}:test")] == ["0", "1", "2", "3"]


def test_split_and_column_errors(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(MonoscopeError, match="no split 'valid'; splits: train, test"):
        open_source(f"hf:{saved}:valid")
    with pytest.raises(MonoscopeError, match="no column 'photo'; pass --image-column"):
        open_source(f"hf:{saved}", image_column="photo")
    with pytest.raises(MonoscopeError, match="cannot open the dataset"):
        open_source(f"hf:{tmp_path / 'nothing-here'}")
    with pytest.raises(MonoscopeError, match="apply to hf: sources only"):
        open_source("emoji", caption_column="text")
    plain = datasets.Dataset.from_dict({"picture": [png(0)], "words": ["x"]})
    plain.save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(MonoscopeError, match="cannot tell which column.*--image-column"):
        open_source(f"hf:{tmp_path / 'plain'}")
    source = open_source(f"hf:{tmp_path / 'plain'}", image_column="picture", caption_column="words")
    (pair,) = list(source)  # raw bytes in a binary column decode too
    assert pair.caption == "x" and pair.load_image().size == (8, 8)
    with pytest.raises(MonoscopeError, match="has no splits"):
        open_source(f"hf:{tmp_path / 'plain'}:train")


def test_detects_other_column_names_and_odd_cells(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict(
        {
            "img": [png(0), None, png(2)],
            "text": [["first", "second"], ["x"], []],
            "id": ["a", "b", "c"],
        }
    )
    ds.save_to_disk(str(tmp_path / "odd"))
    a, b, c = open_source(f"hf:{tmp_path / 'odd'}")
    assert [p.id for p in (a, b, c)] == ["a", "b", "c"]
    assert (a.caption, c.caption) == ("first", "")  # a list of captions gives its first
    with pytest.raises(BadRecord, match="missing image"):
        b.load_image()
    picture(7).save(tmp_path / "on-disk.png")
    paths = datasets.Dataset.from_dict({"image": [str(tmp_path / "on-disk.png")], "txt": ["p"]})
    paths.save_to_disk(str(tmp_path / "paths"))
    (d,) = open_source(f"hf:{tmp_path / 'paths'}")
    assert np.array_equal(np.asarray(d.load_image()), np.asarray(picture(7)))


def test_streamed_parquet_folder_with_workers_matches_saved(saved: Path, tmp_path: Path) -> None:
    """A folder of data files is streamed; DataLoader workers must not split it between them
    (``datasets`` does that to torch workers unless asked not to)."""
    folder = tmp_path / "parquet"
    folder.mkdir()
    table(10).to_parquet(str(folder / "train.parquet"))
    source = open_source(f"hf:{folder}")
    assert source.split == "train" and "count" not in source.describe()
    with pytest.raises(TypeError):
        len(source)
    p = list(source)[5]
    assert np.array_equal(np.asarray(load_image_ref(p.image_ref)), np.asarray(picture(5)))

    def run(data: str, out: str, workers: int) -> Store:
        return Store(
            embed(
                ToyEncoder(),
                data,
                tmp_path / out,
                shard_size=4,
                batch_size=3,
                workers=workers,
                device="cpu",
                progress=False,
            )
        )

    ref = run(f"hf:{saved}", "ref", 0)
    streamed = run(f"hf:{folder}", "streamed", 2)
    assert ref.count == 9 and ref.manifest["skipped"]["reasons"] == {"empty caption": 1}
    assert [p["id"] for p in streamed.pairs()] == [p["id"] for p in ref.pairs()]
    np.testing.assert_array_equal(streamed.load("image"), ref.load("image"))
    np.testing.assert_array_equal(streamed.load("text"), ref.load("text"))
