"""Pairs from a JSONL/CSV captions file: parsing, labels, bad images, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monoscope._util import MonoscopeError
from monoscope.data import BadRecord, load_image_ref, open_source
from monoscope.data.files import FilePairs, decode_image


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (10, 6), (200, 10, 20)).save(tmp_path / "img" / "red.png")
    Image.new("RGBA", (4, 4), (0, 0, 255, 0)).save(tmp_path / "img" / "clear.png")
    Image.new("L", (5, 5), 128).save(tmp_path / "img" / "grey.jpg")
    (tmp_path / "img" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return tmp_path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_jsonl(folder: Path) -> None:
    path = write_jsonl(
        folder / "pairs.jsonl",
        [
            {"image": "img/red.png", "caption": "a red square", "colour": "red", "n": 3},
            {"image": "img/grey.jpg", "caption": "", "id": "g1"},
            {"image": "img/missing.png", "caption": "gone"},
        ],
    )
    source = open_source(str(path))
    assert isinstance(source, FilePairs) and len(source) == 3
    a, b, c = list(source)
    assert (a.id, a.caption, a.labels) == ("1", "a red square", {"colour": "red", "n": 3})
    assert a.image_ref == str((folder / "img" / "red.png").resolve())
    assert Path(a.image_ref).is_absolute()
    im = a.load_image()
    assert im.mode == "RGB" and im.size == (10, 6) and im.getpixel((0, 0)) == (200, 10, 20)
    assert (b.id, b.caption, b.labels) == ("g1", "", {})  # empty caption passes through
    assert b.load_image().getpixel((2, 2)) == (128, 128, 128)
    with pytest.raises(BadRecord) as e:
        c.load_image()
    assert e.value.reason == "missing image"
    d = source.describe()
    assert d["kind"] == "files" and d["format"] == "jsonl" and d["count"] == 3
    assert len(d["sha256"]) == 64


def test_jsonl_blank_lines_keep_line_numbers(folder: Path) -> None:
    path = folder / "pairs.jsonl"
    path.write_text(
        '\n{"image": "img/red.png", "caption": "x"}\n\n{"image": "img/red.png", "caption": "y"}\n'
    )
    assert [p.id for p in FilePairs(path)] == ["2", "4"]


def test_csv(folder: Path) -> None:
    path = folder / "pairs.csv"
    path.write_text(
        'image,caption,split\nimg/red.png,"red, square",train\nimg/clear.png,clear,test\n',
        encoding="utf-8-sig",  # a BOM, as spreadsheets write it
    )
    pairs = list(open_source(str(path)))
    assert [(p.id, p.caption, p.labels) for p in pairs] == [
        ("2", "red, square", {"split": "train"}),
        ("3", "clear", {"split": "test"}),
    ]
    # Transparent pixels are composited on white.
    assert pairs[1].load_image().getpixel((0, 0)) == (255, 255, 255)
    assert FilePairs(path).describe()["format"] == "csv"


def test_decode_image(folder: Path) -> None:
    with pytest.raises(BadRecord) as e:
        decode_image(folder / "img" / "broken.jpg")
    assert e.value.reason == "corrupt image" and "broken.jpg" in str(e.value)
    with pytest.raises(BadRecord) as e:
        decode_image(folder / "img" / "nope.png")
    assert e.value.reason == "missing image"
    (folder / "img" / "trunc.png").write_bytes((folder / "img" / "red.png").read_bytes()[:40])
    with pytest.raises(BadRecord, match="corrupt image"):
        decode_image(folder / "img" / "trunc.png")
    ref = str(folder / "img" / "red.png")
    assert np.asarray(load_image_ref(ref)).shape == (6, 10, 3)


def test_missing_columns(folder: Path) -> None:
    csv_path = folder / "bad.csv"
    csv_path.write_text("path,text\nimg/red.png,x\n")
    with pytest.raises(MonoscopeError, match=r"bad\.csv has no 'image' or 'caption' column"):
        FilePairs(csv_path)
    path = write_jsonl(folder / "bad.jsonl", [{"image": "img/red.png", "text": "x"}])
    with pytest.raises(MonoscopeError, match=r"bad\.jsonl: line 1 has no 'caption'"):
        FilePairs(path)


def test_invalid_json_names_the_line(folder: Path) -> None:
    path = folder / "pairs.jsonl"
    path.write_text('{"image": "img/red.png", "caption": "ok"}\n{"image": oops}\n')
    with pytest.raises(MonoscopeError, match="line 2 is not valid JSON") as e:
        list(FilePairs(path))
    assert "\n" not in str(e.value)
    path.write_text('["img/red.png", "caption"]\n')
    with pytest.raises(MonoscopeError, match="line 1 is not a JSON object"):
        FilePairs(path)


def test_captions_do_not_match_images(folder: Path) -> None:
    records = [{"image": f"photos/{i}.jpg", "caption": str(i)} for i in range(80)]
    path = write_jsonl(folder / "pairs.jsonl", records)
    with pytest.raises(MonoscopeError) as e:
        FilePairs(path)
    assert str(e.value) == (
        f"captions file {path.resolve()} does not match the images: none of the first 50 "
        f"image paths exist under {folder.resolve()}"
    )


def test_empty_and_absent_files(folder: Path) -> None:
    (folder / "empty.jsonl").write_text("\n")
    with pytest.raises(MonoscopeError, match="has no records"):
        FilePairs(folder / "empty.jsonl")
    with pytest.raises(MonoscopeError, match="not found"):
        FilePairs(folder / "absent.csv")
    with pytest.raises(MonoscopeError, match="unknown source"):
        open_source(str(folder / "pairs.txt"))
