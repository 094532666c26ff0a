"""The bundled emoji dataset: 3,773 Noto Color Emoji renders (64x64 RGB) with CLDR captions.

Package data made by ``scripts/render_emoji.py``: ``assets/emoji_pairs.jsonl`` (id, emoji,
caption, labels) and ``assets/emoji_images.npz`` (per-image 256-colour palettes). Labels:
``gender`` (woman/man/mixed/neutral), ``skin_tone`` (none/light/medium-light/medium/medium-dark/
dark/mixed), CLDR ``group`` and ``subgroup``, and ``base`` (the gender- and tone-free key that
ties role variants together, e.g. every firefighter has base "firefighter").
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from . import BadRecord, Pair

IMAGE_SIZE = 64

# Settings that suit these labels; the stages' own defaults are generic, so the demo passes
# these explicitly: the zero-shot classes and prompts of ablate and the adversarial study, and
# the gender study's labels and prompts.
CLASS_LABELS = ("subgroup", "group")
CLASS_TEMPLATES = ("{}", "an image of {}", "a picture showing {}")
ADVERSARIAL = {"label_key": "subgroup", "templates": CLASS_TEMPLATES}
GENDER = {
    "templates": ("a photo of a {}", "an emoji of a {}", "a picture of a {}"),
    "label_key": "gender",
    "pair_keys": ("base", "skin_tone"),
    "role_key": "base",
}


def _asset(name: str) -> Any:
    return importlib.resources.files("monoscope") / "assets" / name


@functools.cache
def emoji_pairs() -> tuple[dict[str, Any], ...]:
    """All pair records (``id``, ``emoji``, ``caption``, ``labels``) in dataset order."""
    text = _asset("emoji_pairs.jsonl").read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines())


@functools.cache
def _images() -> np.ndarray:
    with _asset("emoji_images.npz").open("rb") as f, np.load(f) as z:
        index, palette = z["index"], z["palette"]
    images = palette[np.arange(len(index))[:, None, None], index]
    images.flags.writeable = False
    return images


@functools.cache
def _row_of() -> dict[str, int]:
    return {r["id"]: i for i, r in enumerate(emoji_pairs())}


def emoji_array() -> tuple[np.ndarray, list[dict[str, Any]]]:
    """All images as a read-only uint8 (N, 64, 64, 3) array and the pair records, row-aligned."""
    return _images(), list(emoji_pairs())


def load_emoji_image(key: str) -> Image.Image:
    """The 64x64 RGB image of the pair with id ``key`` (e.g. ``"1f469-200d-1f692"``)."""
    row = _row_of().get(key)
    if row is None:
        raise BadRecord("unknown emoji", key)
    return Image.fromarray(_images()[row])


class EmojiPairs:
    """The bundled emoji pairs as a :class:`~monoscope.data.PairSource`."""

    def __len__(self) -> int:
        return len(emoji_pairs())

    def __iter__(self) -> Iterator[Pair]:
        for r in emoji_pairs():
            key = r["id"]
            yield Pair(
                id=key,
                caption=r["caption"],
                image_ref=f"emoji:{key}",
                labels=dict(r["labels"]),
                load_image=functools.partial(load_emoji_image, key),
            )

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "emoji",
            "count": len(self),
            "image_size": IMAGE_SIZE,
            "font": "Noto Color Emoji (Debian fonts-noto-color-emoji)",
            "selection": "fully-qualified, Emoji <= 15.1",
            "captions": "CLDR short names",
        }
