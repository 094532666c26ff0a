"""Pairs from a Hugging Face dataset: ``--data hf:NAME_OR_DIR[:SPLIT]``.

A directory written by ``save_to_disk`` is opened with ``load_from_disk`` (memory-mapped); any
other local directory of data files, or a hub dataset name, with
``load_dataset(..., streaming=True)``, so nothing is converted or downloaded up front. SPLIT
defaults to the only split, else ``train``.

Columns: the image is ``image_column``, else the first ``Image`` feature, else the first of
image/img/jpg/png/webp; the caption is ``caption_column``, else the first of caption/text/txt/
sentence/captions/sentences (a list of captions contributes its first). Image bytes are decoded
only in ``Pair.load_image`` (the column is read with ``Image(decode=False)``), i.e. in the
DataLoader workers. Ids come from an ``id`` or ``key`` column, else the row number; the other
scalar columns are labels (class labels by name). ``image_ref`` is
``hf:NAME_OR_DIR[:SPLIT]#COLUMN[ROW]``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from .._util import MonoscopeError
from . import BadRecord, Pair
from .webdataset import decode_image_bytes, skipped_pair, to_rgb

IMAGE_COLUMNS = ("image", "img", "jpg", "png", "webp")
CAPTION_COLUMNS = ("caption", "text", "txt", "sentence", "captions", "sentences")
ID_COLUMNS = ("id", "key")
BATCH = 256
_REF = re.compile(r"^(hf:.*)#(.*)\[(\d+)\]$")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``hf:NAME_OR_DIR[:SPLIT]`` -> (absolute dir or hub name, split or None)."""
    name, _, split = spec.removeprefix("hf:").partition(":")
    if not name:
        raise MonoscopeError(f"--data {spec}: expected hf:NAME_OR_DIR[:SPLIT]")
    path = Path(name).expanduser()
    return (str(path.resolve()) if path.is_dir() else name), (split or None)


@functools.lru_cache(maxsize=8)
def load_split(name: str, split: str | None) -> tuple[Any, str | None]:
    """Open dataset ``name`` (see module doc) and pick ``split``: (dataset, split name)."""
    try:
        import datasets
    except ImportError:
        raise MonoscopeError(
            "hf: sources need the datasets package (pip install 'monoscope[hf]')"
        ) from None
    path = Path(name)
    try:
        if path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):
            ds = datasets.load_from_disk(name)
        else:
            ds = datasets.load_dataset(name, streaming=True)
    except Exception as e:  # the library raises many kinds; all mean "cannot open it"
        raise MonoscopeError(
            f"--data hf:{name}: cannot open the dataset ({type(e).__name__}: {e})"
        ) from None
    if isinstance(ds, datasets.DatasetDict | datasets.IterableDatasetDict):
        splits = list(ds)
        if split is None:
            split = splits[0] if len(splits) == 1 else "train"
        if split not in ds:
            raise MonoscopeError(
                f"--data hf:{name}: no split {split!r}; splits: {', '.join(splits)} "
                f"(choose one with hf:{name}:SPLIT)"
            )
        return ds[split], split
    if split is not None:
        raise MonoscopeError(f"--data hf:{name}:{split}: this dataset has no splits")
    return ds, None


def load_image_value(value: Any, where: str) -> Image.Image:
    """Decode an image cell: ``{"bytes", "path"}`` (an undecoded ``Image`` feature), bytes,
    a file path or a PIL image. Raises :class:`BadRecord`."""
    from .files import decode_image

    if isinstance(value, dict):
        if value.get("bytes"):
            return decode_image_bytes(value["bytes"], where)
        value = value.get("path")
    if isinstance(value, bytes):
        return decode_image_bytes(value, where)
    if isinstance(value, str) and value:
        return decode_image(value)
    if isinstance(value, Image.Image):
        return to_rgb(value)
    raise BadRecord("missing image", where)


def load_hf_ref(ref: str) -> Image.Image:
    """Load the image of an ``image_ref`` ``hf:NAME[:SPLIT]#COLUMN[ROW]``."""
    match = _REF.match(ref)
    if not match:
        raise BadRecord("missing image", f"{ref}: not an hf: image reference")
    spec, column, row = match[1], match[2], int(match[3])
    ds, _ = load_split(*parse_spec(spec))
    ds = _undecoded(ds, column)
    if _random_access(ds):
        if row >= len(ds):
            raise BadRecord("missing image", f"{ref}: row out of range")
        return load_image_value(ds[row][column], ref)
    first: dict[str, Any] = next(iter(ds.skip(row).take(1)), {})
    value = first.get(column)
    return load_image_value(value, ref)


def _undecoded(ds: Any, column: str) -> Any:
    """``ds`` with an ``Image`` column read as ``{"bytes", "path"}`` (decoded later)."""
    import datasets

    feature = (ds.features or {}).get(column)
    if isinstance(feature, datasets.Image) and feature.decode:
        return ds.cast_column(column, datasets.Image(decode=False))
    return ds


class HFPairs:
    """A :class:`~monoscope.data.PairSource` over one split of a Hugging Face dataset."""

    def __init__(
        self, spec: str, image_column: str | None = None, caption_column: str | None = None
    ):
        import datasets

        self.name, split = parse_spec(spec)
        ds, self.split = load_split(self.name, split)
        features = ds.features or {}  # None for a stream whose schema is only seen by reading
        columns = list(features) or list(next(iter(ds.take(1)), {}))
        if image_column is None:
            found = [c for c, f in features.items() if isinstance(f, datasets.Image)]
            image_column = _pick(found + [c for c in IMAGE_COLUMNS if c in columns])
        if caption_column is None:
            caption_column = _pick([c for c in CAPTION_COLUMNS if c in columns])
        for flag, col in (("--image-column", image_column), ("--caption-column", caption_column)):
            if col is None or col not in columns:
                what = f"no column {col!r}" if col else "cannot tell which column to use"
                raise MonoscopeError(
                    f"--data {spec}: {what}; pass {flag} (columns: {', '.join(columns)})"
                )
        assert image_column is not None and caption_column is not None  # checked just above
        self.image_column: str = image_column
        self.caption_column: str = caption_column
        self.id_column = _pick([c for c in ID_COLUMNS if c in columns])
        self.classes = {c: f for c, f in features.items() if isinstance(f, datasets.ClassLabel)}
        self.ds = _undecoded(ds, image_column)
        self.fingerprint = getattr(ds, "_fingerprint", None)
        self.ref = f"hf:{self.name}" + (f":{self.split}" if self.split else "")

    def __len__(self) -> int:
        if not _random_access(self.ds):
            raise TypeError("a streaming dataset has no known length")
        return len(self.ds)

    def describe(self) -> dict[str, Any]:
        out = {
            "kind": "hf",
            "name": self.name,
            "split": self.split,
            "image_column": self.image_column,
            "caption_column": self.caption_column,
            "fingerprint": self.fingerprint,
        }
        if _random_access(self.ds):
            out["count"] = len(self.ds)
        return out

    def __iter__(self) -> Iterator[Pair]:
        # ``iter(batch_size)``, unlike ``__iter__``, does not split a streaming dataset between
        # DataLoader workers: every worker must see every record (embed picks its chunks).
        row = 0
        for batch in self.ds.iter(batch_size=BATCH):
            columns = list(batch)
            for values in zip(*batch.values(), strict=True):
                yield self._pair(row, dict(zip(columns, values, strict=True)))
                row += 1

    def _pair(self, row: int, record: dict[str, Any]) -> Pair:
        ref = f"{self.ref}#{self.image_column}[{row}]"
        pid = str(record[self.id_column]) if self.id_column else str(row)
        caption = record[self.caption_column]
        if isinstance(caption, list | tuple):
            caption = caption[0] if caption else ""
        if isinstance(caption, bytes):
            try:
                caption = caption.decode("utf-8")
            except UnicodeDecodeError:
                return skipped_pair(pid, "undecodable caption", ref, f"{ref}: caption")
        if caption is not None and not isinstance(caption, str):
            return skipped_pair(pid, "caption not a string", ref, f"{ref}: caption")
        labels = {}
        for col, value in record.items():
            if col in (self.image_column, self.caption_column, self.id_column):
                continue
            if col in self.classes and isinstance(value, int) and value >= 0:
                value = self.classes[col].int2str(value)
            if value is None or isinstance(value, str | int | float | bool):
                labels[col] = value
        return Pair(
            id=pid,
            caption="" if caption is None else str(caption),
            image_ref=ref,
            labels=labels,
            load_image=functools.partial(load_image_value, record[self.image_column], ref),
        )


def _random_access(ds: Any) -> bool:
    """Whether ``ds`` is a map-style (indexable, sized) dataset rather than a streaming one."""
    import datasets

    return isinstance(ds, datasets.Dataset)


def _pick(candidates: list[str]) -> str | None:
    return candidates[0] if candidates else None
