"""Hugging Face dual encoders (``CLIPModel``, ``SiglipModel``, ``Siglip2Model``, ...).

Embeddings are the *projected* features (``get_image_features`` / ``get_text_features``), cast
to float32 and not L2-normalised. Text is tokenised the way each family's processor does it:

- CLIP: pad to the longest caption in the batch, truncate to the model's positions, and pass the
  attention mask (CLIP pools at the first end-of-text token).
- SigLIP / SigLIP 2: pad to ``max_length`` (the model's positions, typically 64) and truncate;
  the text tower pools the *last* position, so padding to the trained length is what makes the
  embedding right. No attention mask is passed: the models were trained without one and the
  hub tokenizers do not return one. Lowercasing (and, for SigLIP, punctuation stripping) is done
  by the model's own tokenizer, exactly as its processor does it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .._util import MonoscopeError, resolve_device

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
# Families whose text tower pools the last position and was trained on max_length padding.
_LAST_TOKEN_POOLING = {"siglip", "siglip2"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str:
    """None -> float32; ``"auto"`` stays (the checkpoint's dtype); names like ``"fp16"`` -> dtype.

    None is float32, not the library default, because transformers 4.x loads float32 and 5.x
    the checkpoint's dtype (often float16).
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise MonoscopeError(
            f"dtype {dtype!r}: expected one of auto, {', '.join(sorted(_DTYPES))}"
        ) from None


def projected(out: Any) -> torch.Tensor:
    """The projected embedding from ``get_*_features``: a tensor (transformers 4.x) or the
    ``pooler_output`` of an output object (5.x)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if not isinstance(pooled, torch.Tensor):
        raise MonoscopeError(f"unexpected feature output {type(out).__name__}: no pooler_output")
    return pooled


def probe_dim(encoder: Any, spec: str) -> int:
    """Embedding size of a dual encoder, checked equal for both towers on one tiny input each."""
    t = encoder.encode_texts(["a photo"]).shape[1]
    i = encoder.encode_images([Image.new("RGB", (64, 64), (128, 128, 128))]).shape[1]
    if t != i:
        raise MonoscopeError(
            f"{spec}: not a dual encoder (text embeddings have {t} dims, images {i})"
        )
    return int(t)


def _config_file(spec: str) -> Path:
    """Locate ``config.json`` of a local directory or a hub id (cache or download)."""
    from huggingface_hub import constants
    from transformers.utils.hub import cached_file

    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MonoscopeError(f"{spec}: not a Hugging Face model directory (no config.json)")
        return path / "config.json"
    if path.exists():
        raise MonoscopeError(f"{spec}: is a file; expected a model directory or a hub id")
    if not _HUB_ID.fullmatch(spec):
        raise MonoscopeError(f"{spec}: no such model directory")
    try:
        found = cached_file(spec, "config.json")
        if found is None:
            raise OSError(f"{spec}: no config.json")
        return Path(found)
    except OSError as e:
        if constants.HF_HUB_OFFLINE:
            raise MonoscopeError(
                f"{spec}: no such model or directory; monoscope cannot download weights when "
                "offline (HF_HUB_OFFLINE=1): download it once with network access, or pass a "
                "local directory"
            ) from None
        raise MonoscopeError(f"{spec}: no such model or directory ({first_line(e)})") from None


def _revision(config_path: Path) -> str:
    """The hub commit of a cached snapshot, else a hash of the local config file."""
    from transformers.utils.hub import extract_commit_hash

    commit = extract_commit_hash(str(config_path), None)
    if commit:
        return commit
    return "config-sha256:" + hashlib.sha256(config_path.read_bytes()).hexdigest()[:16]


class HFEncoder:
    """A transformers dual encoder behind the ``DualEncoder`` protocol."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        image_processor: Any,
        spec: str,
        revision: str,
        device: str,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.spec = spec
        self.revision = revision
        self.device = device
        self.model_type: str = model.config.model_type
        self._last_token = self.model_type in _LAST_TOKEN_POOLING
        text_config = getattr(model.config, "text_config", model.config)
        tok_max = int(getattr(tokenizer, "model_max_length", None) or 10**6)
        positions = int(getattr(text_config, "max_position_embeddings", None) or tok_max)
        # SigLIP pads to exactly the trained length; CLIP truncates to what both allow.
        self._max_length = positions if self._last_token else min(positions, int(tok_max))
        self.dim = probe_dim(self, spec)

    @classmethod
    def load(
        cls, spec: str, device: str = "cpu", dtype: torch.dtype | str | None = None
    ) -> HFEncoder:
        """Load a hub id or local directory with its tokenizer and image processor.

        ``dtype``: float32 when None, ``"auto"`` for the checkpoint's, or float16/bfloat16/...;
        outputs are float32 whatever the model runs in.
        """
        import transformers
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        device = resolve_device(device)
        torch_dtype = parse_dtype(dtype)
        config_path = _config_file(spec)
        try:
            config = AutoConfig.from_pretrained(spec)
        except (OSError, ValueError, KeyError) as e:
            raise MonoscopeError(f"{spec}: cannot read its config ({first_line(e)})") from None
        model_cls = MODEL_MAPPING.get(type(config), None)
        if model_cls is None or not all(
            hasattr(model_cls, m) for m in ("get_image_features", "get_text_features")
        ):
            raise MonoscopeError(
                f"{spec}: model type {config.model_type!r} is not a vision-language dual encoder "
                "(expected e.g. CLIPModel or SiglipModel)"
            )
        version = tuple(int(v) for v in transformers.__version__.split(".")[:2])
        dtype_key = "dtype" if version >= (4, 56) else "torch_dtype"
        try:
            model = AutoModel.from_pretrained(spec, **{dtype_key: torch_dtype})
        except (OSError, ValueError) as e:
            raise MonoscopeError(f"{spec}: cannot load its weights ({first_line(e)})") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(spec)
        except (OSError, ValueError, ImportError) as e:
            raise MonoscopeError(f"{spec}: cannot load its tokenizer ({first_line(e)})") from None
        try:
            image_processor = AutoImageProcessor.from_pretrained(spec)
        except (OSError, ValueError, ImportError) as e:
            raise MonoscopeError(
                f"{spec}: cannot load its image processor ({first_line(e)})"
            ) from None
        return cls(
            model.to(device), tokenizer, image_processor, spec, _revision(config_path), device
        )

    def info(self) -> dict[str, Any]:
        """Identity of the model for the store manifest."""
        return {
            "kind": "hf",
            "id": self.spec,
            "revision": self.revision,
            "model_type": self.model_type,
            "dtype": str(self.model.dtype).removeprefix("torch."),
        }

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, dim) float32 projected text embeddings."""
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.dim)
        enc = self.tokenizer(
            texts,
            padding="max_length" if self._last_token else True,
            truncation=True,
            max_length=self._max_length,
            return_tensors="pt",
        )
        keys = ("input_ids",) if self._last_token else ("input_ids", "attention_mask")
        inputs = {k: enc[k].to(self.device) for k in keys if k in enc}
        return projected(self.model.get_text_features(**inputs)).float()

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image] | ImageBatch) -> torch.Tensor:
        """(B, dim) float32 projected image embeddings of RGB images (or of the output of
        :meth:`image_preprocessor` on them)."""
        if not isinstance(images, ImageBatch):
            images = _Preprocess(self.image_processor)(images)
        if images.size == 0:
            return torch.empty(0, self.dim)
        inputs = {k: self._to_model(v) for k, v in images.items()}
        return projected(self.model.get_image_features(**inputs)).float()

    def image_preprocessor(self) -> _Preprocess:
        """A picklable callable: RGB images -> the model inputs ``encode_images`` accepts.
        ``embed`` runs it in its data-loading workers, next to the decoding."""
        return _Preprocess(self.image_processor)

    def image_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 3, H, W) float32 in [0, 1]: the processor's resize and crop, not normalised."""
        batch = self.image_processor(
            images=[_rgb(im) for im in images], do_normalize=False, return_tensors="pt"
        )
        x = batch["pixel_values"]
        if x.ndim != 4 or len(batch) != 1:
            raise MonoscopeError(
                f"{self.spec}: pixel-space encoding needs a fixed-resolution image processor; "
                f"{type(self.image_processor).__name__} is not supported"
            )
        return x.float()

    def encode_image_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable: normalise ``image_tensor`` output as the processor does, then encode.

        Matches ``encode_images`` on the same images up to float rounding.
        """
        x = x.to(self.device, torch.float32)
        ip = self.image_processor
        if getattr(ip, "do_normalize", True):
            mean = torch.tensor(ip.image_mean, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(ip.image_std, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        pixels = x.to(self.model.dtype)
        return projected(self.model.get_image_features(pixel_values=pixels)).float()

    def _to_model(self, v: torch.Tensor) -> torch.Tensor:
        if torch.is_floating_point(v):
            return v.to(self.device, self.model.dtype)
        return v.to(self.device)


class ImageBatch(dict):
    """Model inputs made by an image processor (tensors by name); ``size``: the images."""

    size: int = 0


class _Preprocess:
    def __init__(self, image_processor: Any):
        self.image_processor = image_processor

    def __call__(self, images: Sequence[Image.Image]) -> ImageBatch:
        images = [_rgb(im) for im in images]
        batch = ImageBatch()
        if images:
            batch.update(self.image_processor(images=images, return_tensors="pt"))
        batch.size = len(images)
        return batch


def _rgb(im: Image.Image) -> Image.Image:
    return im if im.mode == "RGB" else im.convert("RGB")


def first_line(e: BaseException, limit: int = 240) -> str:
    """The first line of an exception message, cut to ``limit`` characters (type name if empty)."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
