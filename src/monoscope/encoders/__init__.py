"""Dual encoders behind one protocol.

``load_encoder(spec)`` understands:

- ``pocket``: the built-in offline model (bundled weights),
- ``open_clip:NAME[/PRETRAINED]``: an open_clip model (optional extra),
- anything else: a Hugging Face ``CLIPModel``/``SiglipModel`` hub id or local directory.

Every encoder returns float32 embeddings in the shared space (after the projection heads),
*not* L2-normalised; normalisation is the store's job and is recorded in its manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from PIL import Image


class DualEncoder(Protocol):
    dim: int

    def info(self) -> dict[str, Any]:
        """``{"kind": ..., "id": ..., "revision": ...}`` for the manifest."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, dim) float32 embeddings of RGB images."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, dim) float32 embeddings of captions."""
        ...

    def image_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] after the model's resize/crop, before normalisation."""
        ...

    def encode_image_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable image embeddings of ``image_tensor`` pixels (normalises inside);
        ``encode_image_tensor(image_tensor(ims))`` matches ``encode_images(ims)``."""
        ...


def load_encoder(spec: str, device: str = "cpu", dtype: str | None = None) -> DualEncoder:
    """Load a dual encoder by spec (see module docstring) onto ``device``.

    ``dtype`` (HF and open_clip only): None for float32, ``auto`` for the checkpoint's, or
    ``fp16``/``bf16``/...; embeddings are returned as float32 whatever the compute dtype.
    """
    if spec == "pocket":
        from .pocket import PocketEncoder

        return PocketEncoder.load(device=device)
    if spec.startswith("open_clip:"):
        from .openclip import OpenClipEncoder

        return OpenClipEncoder.load(spec.removeprefix("open_clip:"), device=device, dtype=dtype)
    from .hf import HFEncoder

    return HFEncoder.load(spec, device=device, dtype=dtype)


def encoder_spec(info: dict[str, Any]) -> str:
    """The ``load_encoder`` spec that reloads the encoder described by a manifest's ``model``."""
    kind, ident = info.get("kind"), info.get("id")
    if kind == "pocket":
        return "pocket"
    if kind == "open_clip":
        return f"open_clip:{ident}"
    if kind == "hf" and ident:
        return str(ident)
    raise ValueError(f"cannot reload an encoder of kind {kind!r}; pass --model explicitly")
