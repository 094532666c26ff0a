"""open_clip dual encoders (optional extra: ``pip install 'monoscope[openclip]'``).

Spec: ``NAME[/PRETRAINED]``, e.g. ``ViT-B-32/laion2b_s34b_b79k``; PRETRAINED is a tag or a
checkpoint path (random weights when omitted). ``hf-hub:ORG/REPO`` and ``local-dir:PATH`` names
carry their weights and are taken whole. Embeddings are ``encode_image``/``encode_text``
outputs (after the projection), float32, not normalised. Text goes through the model's own
``open_clip.get_tokenizer`` (which lowercases/canonicalises for SigLIP models as trained).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .._util import MonoscopeError, resolve_device
from .hf import first_line, parse_dtype, probe_dim

_PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_WHOLE_NAME_PREFIXES = ("hf-hub:", "local-dir:")


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError:
        raise MonoscopeError(
            "open_clip is not installed: pip install 'monoscope[openclip]'"
        ) from None
    return open_clip


def _hub_snapshot(repo_id: str) -> str | None:
    """The commit of the cached snapshot an ``hf-hub:`` model was loaded from, if cached."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, "open_clip_config.json")
    return Path(path).parent.name if isinstance(path, str) else None


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"NAME/PRETRAINED"`` -> (NAME, PRETRAINED or None)."""
    if spec.startswith(_WHOLE_NAME_PREFIXES):
        return spec, None
    name, _, pretrained = spec.partition("/")
    if not name:
        raise MonoscopeError(f"open_clip:{spec}: expected NAME[/PRETRAINED]")
    return name, pretrained or None


class OpenClipEncoder:
    """An open_clip model behind the ``DualEncoder`` protocol."""

    def __init__(
        self, model: Any, preprocess: Any, tokenizer: Any, spec: str, precision: str, device: str
    ) -> None:
        open_clip = _import_open_clip()
        from torchvision.transforms import Compose, Normalize

        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.spec = spec
        self.name, self.pretrained = split_spec(spec)
        self.precision = precision
        self.device = device
        self._input_dtype = open_clip.get_input_dtype(precision) or torch.float32
        steps = list(preprocess.transforms)
        norms = [t for t in steps if isinstance(t, Normalize)]
        if len(norms) != 1:
            raise MonoscopeError(f"open_clip:{spec}: expected one Normalize step in its transform")
        # The same resize/crop/to-tensor steps, without the final normalisation.
        self._to_unit = Compose([t for t in steps if not isinstance(t, Normalize)])
        self._mean = torch.tensor(norms[0].mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(norms[0].std, dtype=torch.float32).view(1, -1, 1, 1)
        self.dim = probe_dim(self, f"open_clip:{spec}")

    @classmethod
    def load(
        cls, spec: str, device: str = "cpu", dtype: torch.dtype | str | None = None
    ) -> OpenClipEncoder:
        """Create the model, its eval transform and tokenizer; ``dtype`` float32 by default."""
        open_clip = _import_open_clip()
        device = resolve_device(device)
        parsed = parse_dtype(dtype)  # "auto": as open_clip loads
        precision = _PRECISION.get(parsed, "fp32") if isinstance(parsed, torch.dtype) else "fp32"
        name, pretrained = split_spec(spec)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, precision=precision, device=device
            )
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as e:  # open_clip raises RuntimeError, AssertionError, hub errors...
            hint = ""
            if name.startswith("hf-hub:") or open_clip.get_pretrained_cfg(name, pretrained or ""):
                hint = "; monoscope cannot download weights when offline"
            raise MonoscopeError(f"open_clip:{spec}: cannot load ({first_line(e)}){hint}") from None
        return cls(model, preprocess, tokenizer, spec, precision, device)

    def info(self) -> dict[str, Any]:
        """Identity of the model for the store manifest."""
        open_clip = _import_open_clip()
        revision = self.pretrained
        if self.pretrained:
            cfg = open_clip.get_pretrained_cfg(self.name, self.pretrained) or {}
            revision = cfg.get("hf_hub") or cfg.get("url") or self.pretrained
        elif self.name.startswith("hf-hub:"):
            revision = _hub_snapshot(self.name.removeprefix("hf-hub:"))
        return {
            "kind": "open_clip",
            "id": self.spec,
            "revision": revision,
            "model_name": self.name,
            "pretrained": self.pretrained,
            "dtype": {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[self.precision],
            "open_clip_version": open_clip.__version__,
        }

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, dim) float32 projected text embeddings."""
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.dim)
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens).float()

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, dim) float32 projected image embeddings of RGB images."""
        images = list(images)
        if not images:
            return torch.empty(0, self.dim)
        x = torch.stack([self.preprocess(im) for im in images])
        return self.model.encode_image(x.to(self.device, self._input_dtype)).float()

    def image_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 3, H, W) float32 in [0, 1]: the model's resize and crop, not normalised."""
        return torch.stack([self._to_unit(im) for im in images]).float()

    def encode_image_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable: normalise ``image_tensor`` output, then encode (float32 out)."""
        x = (x.to(self.device) - self._mean.to(self.device)) / self._std.to(self.device)
        return self.model.encode_image(x.to(self._input_dtype)).float()
