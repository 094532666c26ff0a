"""The feature-map contract, its registry, and safetensors + JSON persistence."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load

from .._util import MonoscopeError, read_json, versions, write_json
from ..integrity import save_safetensors
from ..locks import refuse_if_being_written

FORMAT_VERSION = 1
KINDS: dict[str, type[FeatureMap]] = {}


def register(cls: type[FeatureMap]) -> type[FeatureMap]:
    """Class decorator: make a feature-map kind loadable by its ``kind`` name."""
    KINDS[cls.kind] = cls
    return cls


class FeatureMap(torch.nn.Module):
    """Base class. Subclasses set ``kind``, implement ``encode`` and ``hparams``.

    ``hparams()`` returns the constructor keyword arguments, so ``cls(**hparams)`` rebuilds an
    empty map whose state dict is then loaded from ``model.safetensors``. Kinds that learn from
    data also implement the training protocol (:class:`~.protocol.Trainable`); the others have
    nothing to fit (``trainable`` false) and are saved as built.
    """

    kind: ClassVar[str] = ""
    has_decoder: ClassVar[bool] = False
    trainable: ClassVar[bool] = False

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    @property
    def n_features(self) -> int:
        raise NotImplementedError

    def hparams(self) -> dict[str, Any]:
        """The constructor options that rebuild this map: ``dim`` and the saved fields of the
        kind's config (:data:`monoscope.config.KIND_CONFIGS`), read back from the map."""
        from ..config import KIND_CONFIGS

        if self.kind not in KIND_CONFIGS:
            raise NotImplementedError(f"{type(self).__name__} must define hparams()")
        return {"dim": self.dim, **{n: getattr(self, n) for n in KIND_CONFIGS[self.kind].saved()}}

    def encode(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """(B, d) embeddings of ``modality`` ("image" or "text") -> (B, K) non-negative codes.

        Every map accepts the modality, so ``encode(x, modality)`` works for every kind; maps
        that treat the modalities alike ignore it, and only those that need it (per-modality
        SAEs, centred maps, NCL with one head per modality) refuse ``None``.
        """
        raise NotImplementedError

    def decode(self, z: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """(B, K) codes of ``modality`` -> (B, d) reconstructions (as :meth:`encode`)."""
        raise NotImplementedError(f"feature map '{self.kind}' has no decoder")

    def decoder_directions(self) -> torch.Tensor | None:
        """(K, d) unit directions of the features in embedding space, if the map has them."""
        return None

    def encoder_directions(self) -> torch.Tensor | None:
        """(K, d) encoder directions of the features in embedding space, if the map has them."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into directory ``path`` (atomically)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        weights_sha256 = save_safetensors(path / "model.safetensors", tensors)
        config = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "n_features": self.n_features,
            "hparams": self.hparams(),
            "weights_sha256": weights_sha256,
            "versions": versions(),
            **(extra or {}),
        }
        write_json(path / "config.json", config)
        return path


def load_featuremap(path: str | Path, device: str = "cpu", verify: bool = True) -> FeatureMap:
    """Load a feature map saved with :meth:`FeatureMap.save`; with ``verify``, its weights must
    match the ``weights_sha256`` recorded in config.json, when there is one."""
    from . import center, identity, ncl, sae  # noqa: F401  (register the built-in kinds)

    path = Path(path)
    refuse_if_being_written(path, "feature map")
    if not (path / "config.json").is_file():
        raise MonoscopeError(f"{path}: not a feature map (no config.json)")
    config = read_json(path / "config.json")
    kind = config.get("kind") if isinstance(config, dict) else None
    if kind not in KINDS:
        raise MonoscopeError(f"{path}: unknown feature map kind {kind!r}; known: {sorted(KINDS)}")
    if not isinstance(config.get("hparams"), dict):
        raise MonoscopeError(f"{path}/config.json: no 'hparams' object (damaged?)")
    try:
        fmap = KINDS[kind](**config["hparams"])
    except (TypeError, ValueError) as e:
        raise MonoscopeError(f"{path}/config.json: hparams do not build a {kind} ({e})") from None
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise MonoscopeError(f"{path}: model.safetensors is missing")
    try:  # read once: deserialised, then checked against the recorded digest
        data = weights.read_bytes()
        fmap.load_state_dict(load(data))
    except (SafetensorError, RuntimeError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MonoscopeError(f"{weights}: does not load ({first})") from None
    recorded = config.get("weights_sha256")
    if verify and recorded and hashlib.sha256(data).hexdigest() != recorded:
        raise MonoscopeError(
            f"{weights}: checksum differs from config.json (changed on disk since it was "
            "saved); retrain it (monoscope train ... --overwrite)"
        )
    return fmap.to(device).eval()
