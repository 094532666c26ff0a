"""Decoding images safely and faithfully: a pixel limit checked before any pixel is decoded
(a decompression bomb becomes a counted skip, not gigabytes of memory), and conversion of
16-bit and floating-point images to 8-bit RGB by their value range (``Image.convert("RGB")``
clips 16-bit values to white and truncates floats in [0, 1] to black)."""

from __future__ import annotations

import warnings
from typing import IO, Any

import numpy as np
from PIL import Image

from . import BadRecord

DEFAULT_MAX_PIXELS = 64_000_000
MAX_PIXELS = DEFAULT_MAX_PIXELS


def set_max_pixels(limit: int) -> None:
    """Images of more than ``limit`` pixels are skipped as ``image too large``."""
    global MAX_PIXELS
    MAX_PIXELS = int(limit)
    Image.MAX_IMAGE_PIXELS = 2 * int(limit)  # Pillow's own guard stays above ours


def open_image(fp: str | IO[bytes], where: str) -> Image.Image:
    """Open, size-check, fully decode and convert an image to RGB.

    Raises :class:`BadRecord` ``image too large`` or ``corrupt image`` naming ``where``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise BadRecord("image too large", f"{where}: {w}x{h} > {MAX_PIXELS} pixels")
                im.load()
                return to_rgb(im)
    except Image.DecompressionBombError as e:
        raise BadRecord("image too large", f"{where}: {e}") from None
    except (OSError, SyntaxError, ValueError, RuntimeError) as e:  # RuntimeError: symlink loop
        raise BadRecord("corrupt image", f"{where}: {e}") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as 8-bit RGB: transparency composited on white, 16-bit and 32-bit integer images
    scaled from their range, float images from [0, 1] (or clipped to [0, 255] when larger)."""
    if im.mode.startswith("I") or im.mode == "F":
        im = Image.fromarray(_to_uint8(np.asarray(im), im.mode), "L")
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        out = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out.alpha_composite(rgba)
        return out.convert("RGB")
    return im.convert("RGB")


def _to_uint8(a: Any, mode: str) -> np.ndarray:
    x = np.nan_to_num(np.asarray(a, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "F":
        scale = 255.0 if x.size and x.max() <= 1.0 else 1.0
    elif mode.startswith("I;16") or (x.size and x.max() > 255):
        scale = 255.0 / 65535.0
    else:
        scale = 1.0
    return np.clip(np.rint(x * scale), 0, 255).astype(np.uint8)
