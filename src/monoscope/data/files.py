"""Pairs listed in a JSONL or CSV captions file next to a folder of images.

Each record has ``image`` (a path relative to the captions file) and ``caption``; an optional
``id`` (default: the record's line number in the file, from 1); every other key is a label.
The file is streamed, so a captions file of millions of lines needs little memory.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from .._util import MonoscopeError
from . import BadRecord, Pair
from .pixels import open_image
from .webdataset import skipped_pair, utf8

REQUIRED = ("image", "caption")
PROBE = 50  # image paths checked when the file is opened


def decode_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image as RGB (transparency composited on white).

    Raises :class:`BadRecord` with reason ``missing image`` or ``corrupt image``.
    """
    path = Path(path)
    if not path.is_file():
        raise BadRecord("missing image", str(path))
    return open_image(str(path), str(path))


class FilePairs:
    """A :class:`~monoscope.data.PairSource` over a ``.jsonl`` or ``.csv`` captions file."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise MonoscopeError(f"captions file {path} not found")
        self.format = "csv" if self.path.suffix.lower() == ".csv" else "jsonl"
        self.root = self.path.parent
        self._len: int | None = None
        self._check()

    def _records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(line number, record)`` for every record, validated."""
        if self.format == "csv":
            yield from self._csv_records()
        else:
            yield from self._jsonl_records()

    def _jsonl_records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with open(self.path, encoding="utf-8-sig", errors="surrogateescape") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError) as e:  # bad JSON, huge ints, deep nesting
                    raise MonoscopeError(
                        f"captions file {self.path}: line {n} is not valid JSON "
                        f"({getattr(e, 'msg', e)})"
                    ) from None
                if not isinstance(record, dict):
                    raise MonoscopeError(
                        f"captions file {self.path}: line {n} is not a JSON object"
                    )
                missing = [k for k in REQUIRED if k not in record]
                if missing:
                    raise MonoscopeError(
                        f"captions file {self.path}: line {n} has no {_names(missing)}; "
                        f"each record needs 'image' and 'caption'"
                    )
                yield n, record

    def _csv_records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with open(self.path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            reader = csv.DictReader(f, strict=True)
            start = 2
            try:
                columns = reader.fieldnames or []
                missing = [k for k in REQUIRED if k not in columns]
                if missing:
                    raise MonoscopeError(
                        f"captions file {self.path} has no {_names(missing)} column "
                        f"(columns: {', '.join(columns) or 'none'})"
                    )
                for record in reader:
                    start = reader.line_num + 1  # where the next record starts
                    if None in record or None in record.values():
                        raise MonoscopeError(
                            f"captions file {self.path}: line {reader.line_num} has "
                            f"{'more' if None in record else 'fewer'} fields than the header "
                            "(an unbalanced quote or a stray comma?)"
                        )
                    if record.get("id") == "":  # an empty cell: no id given
                        del record["id"]
                    yield reader.line_num, record
            except csv.Error as e:  # line_num is stale when the error is the end of the file
                line = max(start, reader.line_num) if "end of data" in str(e) else reader.line_num
                raise MonoscopeError(
                    f"captions file {self.path}: line {line}: {e} (an unbalanced quote?)"
                ) from None

    def _pair(self, n: int, record: dict[str, Any]) -> Pair:
        image = self.root / str(record["image"])
        try:
            ref = str(image.resolve())
        except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop: missing image
            ref = str(image)
        labels = {k: v for k, v in record.items() if k not in ("id", *REQUIRED)}
        pid = _pair_id(record, n, self.path)
        caption = record["caption"]
        if caption is not None and not isinstance(caption, str):
            kind = type(caption).__name__
            return skipped_pair(pid, "caption not a string", ref, f"{self.path}: line {n}: {kind}")
        caption = caption or ""
        # Bytes that are not UTF-8 (kept surrogate-escaped) or JSON escapes of lone surrogates
        # cannot be written to pairs.jsonl: skip the record, counted.
        if not utf8(caption):
            return skipped_pair(pid, "undecodable caption", ref, f"{self.path}: line {n}")
        if not utf8([pid, ref, labels]):
            return skipped_pair(pid, "undecodable record", ref, f"{self.path}: line {n}")
        return Pair(
            id=pid,
            caption=caption,
            image_ref=ref,
            labels=labels,
            load_image=functools.partial(decode_image, ref),
        )

    def _check(self) -> None:
        """Fail early when the file is empty or its paths do not point at the images."""
        head = [self._pair(n, r) for n, r in itertools.islice(self._records(), PROBE)]
        if not head:
            raise MonoscopeError(f"captions file {self.path} has no records")
        if not any(Path(p.image_ref).is_file() for p in head):
            raise MonoscopeError(
                f"captions file {self.path} does not match the images: none of the first "
                f"{len(head)} image paths exist under {self.root}"
            )

    def __iter__(self) -> Iterator[Pair]:
        for n, record in self._records():
            yield self._pair(n, record)

    def __len__(self) -> int:
        if self._len is None:  # one pass that also refuses duplicate ids before any embedding
            seen: dict[str, int] = {}
            for n, record in self._records():
                pid = _pair_id(record, n, self.path)
                if pid in seen:
                    raise MonoscopeError(
                        f"captions file {self.path}: id {pid!r} on line {n} is already used on "
                        f"line {seen[pid]}; ids must be unique"
                    )
                seen[pid] = n
            self._len = len(seen)
        return self._len

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return {
            "kind": "files",
            "format": self.format,
            "path": str(self.path),
            "count": len(self),
            "sha256": digest.hexdigest(),
        }


def _pair_id(record: dict[str, Any], n: int, path: Path) -> str:
    """The record's ``id`` as given (a string or an integer), else its line number."""
    if "id" not in record:
        return str(n)
    pid = record["id"]
    if isinstance(pid, bool) or not isinstance(pid, str | int) or pid == "":
        raise MonoscopeError(
            f"captions file {path}: line {n}: id {pid!r} is not a non-empty string or integer"
        )
    return str(pid)


def _names(keys: list[str]) -> str:
    return " or ".join(repr(k) for k in keys)
