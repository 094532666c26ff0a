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


def load_encoder(spec: str, device: str = "cpu") -> DualEncoder:
    """Load a dual encoder by spec (see module docstring) onto ``device``."""
    if spec == "pocket":
        from .pocket import PocketEncoder

        return PocketEncoder.load(device=device)
    if spec.startswith("open_clip:"):
        from .openclip import OpenClipEncoder

        return OpenClipEncoder.load(spec.removeprefix("open_clip:"), device=device)
    from .hf import HFEncoder

    return HFEncoder.load(spec, device=device)


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
