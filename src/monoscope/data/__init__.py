"""Paired datasets behind one protocol.

A source yields :class:`Pair` records in a fixed, deterministic order. Images are decoded
lazily (``Pair.load_image``) so decoding can happen in workers and a resumed run can skip
records without touching their images.

Sources: ``emoji`` (the bundled emoji set) and a JSONL or CSV file of pairs (``image`` as a
path relative to the file, ``caption``; any other keys are labels).
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


def open_source(spec: str) -> PairSource:
    """Open a pair source: ``emoji`` or a path to a ``.jsonl``/``.csv`` file of pairs."""
    if spec == "emoji":
        from .emoji import EmojiPairs

        return EmojiPairs()
    path = Path(spec)
    if path.suffix.lower() in (".jsonl", ".csv"):
        from .files import FilePairs

        return FilePairs(path)
    raise MonoscopeError(
        f"--data {spec}: unknown source; expected 'emoji' or a .jsonl/.csv file of pairs"
    )


def load_image_ref(ref: str) -> Image.Image:
    """Load an image from the ``image_ref`` stored in ``pairs.jsonl`` (for reports)."""
    if ref.startswith("emoji:"):
        from .emoji import load_emoji_image

        return load_emoji_image(ref.removeprefix("emoji:"))
    from .files import decode_image

    return decode_image(Path(ref))
