"""Paired datasets behind one protocol.

A source yields :class:`Pair` records in a fixed, deterministic order. Images are decoded
lazily (``Pair.load_image``) so decoding can happen in workers and a resumed run can skip
records without touching their images.

Sources: ``emoji`` (the bundled emoji set), a JSONL or CSV file of pairs (``image`` as a
path relative to the file, ``caption``; any other keys are labels), WebDataset tar shards
(``webdataset.py``) and Hugging Face datasets (``hf:NAME_OR_DIR[:SPLIT]``, ``hfdata.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from .._util import MonoscopeError


@dataclass
class Pair:
    """One image/caption pair. ``load_image`` raises :class:`BadRecord` if the image is unusable."""

    id: str
    caption: str
    image_ref: str
    labels: dict[str, Any] = field(default_factory=dict)
    load_image: Callable[[], Image.Image] | None = None


class BadRecord(Exception):
    """A record to skip; ``reason`` is a short stable phrase counted in the manifest."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class PairSource(Protocol):
    """What ``embed`` needs from a dataset."""

    def __iter__(self) -> Iterator[Pair]: ...

    def __len__(self) -> int: ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description recorded in the store manifest."""
        ...


def open_source(
    spec: str, *, image_column: str | None = None, caption_column: str | None = None
) -> PairSource:
    """Open a pair source: ``emoji``, a ``.jsonl``/``.csv`` file of pairs, tar shards
    (``shards/{00000..00099}.tar``, a glob, a file or a directory of ``.tar``) or
    ``hf:NAME_OR_DIR[:SPLIT]``; the column names apply to ``hf:`` sources only."""
    if spec.startswith("hf:"):
        from .hfdata import HFPairs

        return HFPairs(spec, image_column=image_column, caption_column=caption_column)
    if image_column or caption_column:
        raise MonoscopeError("--image-column and --caption-column apply to hf: sources only")
    if spec == "emoji":
        from .emoji import EmojiPairs

        return EmojiPairs()
    path = Path(spec)
    if path.suffix.lower() in (".jsonl", ".csv"):
        from .files import FilePairs

        return FilePairs(path)
    from .webdataset import TarPairs, is_tar_spec

    if is_tar_spec(spec):
        return TarPairs(spec)
    raise MonoscopeError(
        f"--data {spec}: unknown source; expected 'emoji', a .jsonl/.csv file of pairs, "
        "tar shards (.tar, a {a..b} pattern or a directory of them) or hf:NAME_OR_DIR[:SPLIT]"
    )


def load_image_ref(ref: str) -> Image.Image:
    """Load an image from the ``image_ref`` stored in ``pairs.jsonl`` (for reports)."""
    if ref.startswith("emoji:"):
        from .emoji import load_emoji_image

        return load_emoji_image(ref.removeprefix("emoji:"))
    if ref.startswith("tar:"):
        from .webdataset import load_tar_ref

        return load_tar_ref(ref)
    if ref.startswith("hf:"):
        from .hfdata import load_hf_ref

        return load_hf_ref(ref)
    from .files import decode_image

    return decode_image(Path(ref))
