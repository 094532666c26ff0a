"""Multimodal non-negative contrastive learning (NCL, after Wang et al., ICLR 2024).

Non-negative heads on frozen embeddings, z_V = relu(W x_V + b) and z_T = relu(W' x_T + b')
(one shared head by default, ``shared=False`` for two), trained with the symmetric CLIP InfoNCE
loss on L2-normalised codes of paired data at temperature ``tau``. ``rep_relu=True`` keeps the
ReLU forward but back-propagates a GELU-shaped gradient, so silent units still learn (NCL's
remedy for dead features). There is no decoder: NCL features are analysed in feature space.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .._util import MonoscopeError
from .base import FeatureMap, register
from .protocol import Gather, Trainable, TrainStep, no_gather

Stats = dict[str, torch.Tensor]
_MODALITIES = ("image", "text")


class _RepReLU(torch.autograd.Function):
    """relu(x) forward, GELU'(x) = Phi(x) + x phi(x) backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.relu(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
        pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return g * (cdf + x * pdf)


def rep_relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU with a GELU-shaped gradient."""
    return _RepReLU.apply(x)


def clip_loss(a: torch.Tensor, b: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE of paired rows of ``a`` and ``b`` (L2-normalised here) at temperature
    ``tau``; returns (loss, share of rows whose partner is the a->b argmax)."""
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / tau
    target = torch.arange(a.shape[0], device=a.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    acc = (logits.argmax(1) == target).float().mean()
    return loss, acc


@register
class NCLMap(Trainable, FeatureMap):
    """``ncl``: K non-negative contrastive features; see the module docstring."""

    kind = "ncl"
    has_decoder = False
    data_mode: ClassVar[str] = "paired"  # the contrastive loss needs the pairs

    def __init__(
        self,
        dim: int,
        latents: int = 2048,
        shared: bool = True,
        tau: float = 0.07,
        rep_relu: bool = False,
    ):
        super().__init__(dim)
        if tau <= 0:
            raise ValueError(f"tau must be positive, not {tau}")
        self.latents, self.shared, self.tau, self.rep_relu = latents, shared, tau, rep_relu
        heads = ("image",) if shared else _MODALITIES
        self.weight = torch.nn.ParameterDict(
            {m: torch.nn.Parameter(torch.zeros(latents, dim)) for m in heads}
        )
        self.bias = torch.nn.ParameterDict(
            {m: torch.nn.Parameter(torch.zeros(latents)) for m in heads}
        )

    @property
    def n_features(self) -> int:
        return self.latents

    def _head(self, modality: str) -> str:
        if modality not in _MODALITIES:
            raise MonoscopeError(f"modality must be 'image' or 'text', not {modality!r}")
        return "image" if self.shared else modality

    def pre_acts(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        h = self._head(modality)
        return F.linear(x, self.weight[h], self.bias[h])

    def encode(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        if modality is None and not self.shared:
            raise MonoscopeError("this NCL map has one head per modality: pass the modality")
        return torch.relu(self.pre_acts(x, modality or "image"))

    def encoder_directions(self) -> torch.Tensor:
        """(K, d) unit rows of the (image) head's weight: what each feature detects."""
        return F.normalize(self.weight["image"].detach(), dim=1)

    # --- training --------------------------------------------------------------------------
    @torch.no_grad()
    def init_from_data(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator) -> None:
        """Weights ~ U(-1/sqrt(d), 1/sqrt(d)) (the torch Linear default), biases zero."""
        bound = 1 / math.sqrt(self.dim)
        for h in self.weight:
            w = torch.rand(self.latents, self.dim, generator=generator) * 2 - 1
            self.weight[h].copy_(w * bound)
            self.bias[h].zero_()

    def train_loss(
        self,
        batch: Mapping[str, torch.Tensor],
        dead: torch.Tensor | None = None,
        gather: Gather = no_gather,
    ) -> TrainStep:
        """Symmetric InfoNCE of a paired batch ``{"image": (B, d), "text": (B, d)}``; under
        data parallelism over the pre-activations of the global batch (``gather``), so that
        every pair is contrasted with every other; each process then holds ``world`` times its
        share of the global gradient, which the trainer's gradient mean undoes."""
        act = rep_relu if self.rep_relu else torch.relu
        zi = act(gather(self.pre_acts(batch["image"], "image")))
        zt = act(gather(self.pre_acts(batch["text"], "text")))
        loss, acc = clip_loss(zi, zt, self.tau)
        active_i, active_t = zi > 0, zt > 0
        stats: Stats = {
            "acc": acc,
            "l0": (active_i.sum(1).float().mean() + active_t.sum(1).float().mean()) / 2,
        }
        return TrainStep(loss, stats, active_i.any(0) | active_t.any(0))
