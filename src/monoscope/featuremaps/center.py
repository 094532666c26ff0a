"""Centring: remove the modality gap before a feature map sees the embeddings.

A :class:`CenteredMap` wraps any feature map. Every embedding of modality m is replaced by
``x - mean_m`` (the mean of that modality's embeddings in the store the means came from) and,
in mode ``gap``, also projected off the gap direction ``u = unit(mean_image - mean_text)``
(``x - (x . u) u``), before the inner map encodes it; decoding adds ``mean_m`` back. The means
and the direction are buffers of the map, saved in ``model.safetensors``; the mode and the
inner map are in ``config.json`` (kind ``centered``), so :func:`load_featuremap` rebuilds the
same transform and every stage that encodes through the map (analyze, ablate, studies)
applies it without being told.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from .._util import MonoscopeError
from .base import KINDS, FeatureMap, register
from .protocol import Batch, Gather, Trainable, TrainStep, no_gather

MODES = ("mean", "gap")


def modality_means(store: Any, batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(d,) float64 means of a store's image and text embeddings, in one pass over its shards."""
    if store.count == 0:
        raise MonoscopeError(f"{store.path}: the store is empty: no means to centre on")
    sums = {m: np.zeros(store.dim) for m in ("image", "text")}
    for shard in store.shards():
        for m in sums:
            arr = getattr(shard, m)
            for lo in range(0, len(arr), batch_size):
                sums[m] += np.asarray(arr[lo : lo + batch_size], np.float64).sum(0)
    return sums["image"] / store.count, sums["text"] / store.count


@register
class CenteredMap(Trainable, FeatureMap):
    """An inner feature map applied to modality-centred embeddings (see the module docstring).

    ``encode``/``decode`` without a modality raise: centring needs each embedding's modality.
    """

    kind = "centered"
    MODALITIES: ClassVar[tuple[str, str]] = ("image", "text")
    mean_image: torch.Tensor
    mean_text: torch.Tensor
    gap_direction: torch.Tensor

    def __init__(self, dim: int, inner: dict[str, Any], mode: str = "mean"):
        super().__init__(dim)
        if mode not in MODES:
            raise ValueError(f"centring mode must be one of {MODES}, not {mode!r}")
        if inner.get("kind") not in KINDS or inner["kind"] == self.kind:
            raise ValueError(f"cannot centre a feature map of kind {inner.get('kind')!r}")
        self.mode = mode
        self.inner = KINDS[inner["kind"]](**inner["hparams"])
        self.register_buffer("mean_image", torch.zeros(dim))
        self.register_buffer("mean_text", torch.zeros(dim))
        self.register_buffer("gap_direction", torch.zeros(dim))

    @classmethod
    def wrap(
        cls, inner: FeatureMap, mean_image: np.ndarray, mean_text: np.ndarray, mode: str = "mean"
    ) -> CenteredMap:
        """Centre ``inner``'s inputs on the given modality means."""
        out = cls(inner.dim, {"kind": inner.kind, "hparams": inner.hparams()}, mode)
        out.inner = inner
        gap = np.asarray(mean_image, np.float64) - np.asarray(mean_text, np.float64)
        norm = float(np.linalg.norm(gap))
        if mode == "gap" and norm < 1e-12:
            raise MonoscopeError("the modality means coincide: there is no gap direction to remove")
        with torch.no_grad():
            out.mean_image.copy_(torch.as_tensor(mean_image, dtype=torch.float32))
            out.mean_text.copy_(torch.as_tensor(mean_text, dtype=torch.float32))
            out.gap_direction.copy_(torch.as_tensor(gap / max(norm, 1e-12), dtype=torch.float32))
        return out

    @classmethod
    def from_store(cls, inner: FeatureMap, store: Any, mode: str = "mean") -> CenteredMap:
        """Centre ``inner``'s inputs on the modality means of ``store``."""
        return cls.wrap(inner, *modality_means(store), mode)

    # --- the contract, delegated -----------------------------------------------------------
    @property
    def has_decoder(self) -> bool:  # type: ignore[override]
        return self.inner.has_decoder

    @property
    def trainable(self) -> bool:  # type: ignore[override]
        return self.inner.trainable

    @property
    def data_mode(self) -> str:  # type: ignore[override]
        return self.inner.data_mode if isinstance(self.inner, Trainable) else "mixed"

    @property
    def n_features(self) -> int:
        return self.inner.n_features

    def hparams(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "inner": {"kind": self.inner.kind, "hparams": self.inner.hparams()},
            "mode": self.mode,
        }

    def describe(self) -> dict[str, Any]:
        """What the transform does, for configs and summaries."""
        return {
            "mode": self.mode,
            "removes": "modality means" + (" and the gap direction" if self.mode == "gap" else ""),
            "inner_kind": self.inner.kind,
            "gap_norm": float((self.mean_image - self.mean_text).norm()),
        }

    def transform(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Centred (and in mode ``gap`` gap-projected) embeddings of ``modality``."""
        if modality not in self.MODALITIES:
            raise MonoscopeError(f"modality must be 'image' or 'text', not {modality!r}")
        mean = self.mean_image if modality == "image" else self.mean_text
        x = x - mean.to(x.dtype)
        return self._project(x)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode != "gap":
            return x
        u = self.gap_direction.to(x.dtype)
        return x - (x @ u)[:, None] * u

    def encode(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        modality = self._need(modality)
        return self.inner.encode(self.transform(x, modality), modality)

    def decode(self, z: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        modality = self._need(modality)
        self.transform(z.new_zeros(1, self.dim), modality)  # validates the modality
        mean = self.mean_image if modality == "image" else self.mean_text
        return self.inner.decode(z, modality) + mean.to(z.dtype)

    @staticmethod
    def _need(modality: str | None) -> str:
        if modality is None:
            raise MonoscopeError("a centred feature map needs the modality of its inputs")
        return modality

    def decoder_directions(self) -> torch.Tensor | None:
        return self.inner.decoder_directions()

    def encoder_directions(self) -> torch.Tensor | None:
        return self.inner.encoder_directions()

    # --- training: the inner map trains on centred batches ---------------------------------
    def _batch(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = dict(batch)
        if "x" in batch:  # mixed: rows flagged by is_image
            x = batch["x"]
            mean = torch.where(
                batch["is_image"][:, None], self.mean_image.to(x.dtype), self.mean_text.to(x.dtype)
            )
            out["x"] = self._project(x - mean)
        for m in self.MODALITIES:  # paired
            if m in batch:
                out[m] = self.transform(batch[m], m)
        return out

    def _trained(self) -> Trainable:
        if not isinstance(self.inner, Trainable):
            raise MonoscopeError(f"feature map '{self.inner.kind}' has nothing to train")
        return self.inner

    def init_from_data(self, batch: Batch, generator: torch.Generator) -> None:
        self._trained().init_from_data(self._batch(batch), generator)

    def train_loss(
        self,
        batch: Batch,
        dead: torch.Tensor | None = None,
        gather: Gather = no_gather,
    ) -> TrainStep:
        return self._trained().train_loss(self._batch(batch), dead, gather)

    def constrain_grads(self) -> None:
        self._trained().constrain_grads()

    def constrain_params(self) -> None:
        self._trained().constrain_params()

    def finalize(self) -> None:
        self._trained().finalize()


def center_featuremap(fmap: FeatureMap, store: Any, mode: str | None) -> FeatureMap:
    """``fmap`` centred on ``store``'s modality means (``mode`` None: ``fmap`` unchanged)."""
    if mode is None:
        return fmap
    if mode not in MODES:
        raise MonoscopeError(f"--center must be one of {', '.join(MODES)}, not {mode!r}")
    if isinstance(fmap, CenteredMap):
        raise MonoscopeError(
            "the feature map already centres its inputs (trained with --center); drop --center"
        )
    if store.dim != fmap.dim:
        raise MonoscopeError(
            f"the store has dimension {store.dim} but the feature map expects {fmap.dim}"
        )
    return CenteredMap.from_store(fmap, store, mode)
