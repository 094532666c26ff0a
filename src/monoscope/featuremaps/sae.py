"""Sparse autoencoders (METHOD.md §1): ReLU, TopK, BatchTopK, JumpReLU, Matryoshka.

Every variant computes, for an embedding x in R^d::

    x~ = (x - b_pre) * s                  s: dataset-level scale so that E||x~||^2 = d
    z  = act(x~ @ W_enc + b_enc)          (B, K) non-negative codes
    x^ = (z @ W_dec) / s + b_pre          W_dec: (K, d), unit-norm rows (the feature directions)

``s`` is the buffer ``scale``, estimated once from a training sample and saved with the weights,
so a loaded map computes exactly what the trained one did; it is applied in :meth:`scaled` and
:meth:`decode` only. Training losses live in the scaled space and are divided by d, so the
reconstruction term ``mse = mean ||x~ - z @ W_dec||^2 / d`` is about 1 for a zero code.

Training protocol (:mod:`monoscope.featuremaps.protocol`): ``init_from_data`` sets b_pre
(geometric median), s and the weights; ``train_loss(batch, dead)`` returns the loss, the stats
(``mse``, ``l0``, ...) and which latents fired in the batch; ``constrain_grads`` /
``constrain_params`` keep decoder rows unit norm around each optimiser step; ``finalize`` runs
once after training. ``dead`` is the trainer's mask of latents silent for its dead window; the
TopK family spends it on the AuxK loss. The losses are means over rows, so ``gather`` is unused.

The TopK family can also train on sparse codes (:mod:`monoscope.featuremaps.sparse`): only the
pre-activation GEMM stays dense, the decoder is an ``embedding_bag`` over the selected rows and
the encoder backward gathers and scatters over the selected columns. ``decoder`` chooses
("auto", "dense", "sparse"; see :func:`~monoscope.featuremaps.sparse.use_sparse`); both paths
compute the same loss and gradients to float tolerance and save the same checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F

from .._util import MonoscopeError
from .base import KINDS, FeatureMap, register
from .protocol import Gather, Trainable, TrainStep, no_gather
from .sparse import ActiveSet, decode_active, gather_pre, use_sparse

Batch = Mapping[str, torch.Tensor]
Stats = dict[str, torch.Tensor]


def geometric_median(x: torch.Tensor, iters: int = 16, eps: float = 1e-8) -> torch.Tensor:
    """Weiszfeld iterations from the mean: the point minimising the sum of distances to rows."""
    m = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(eps)
        m = (w[:, None] * x).sum(0) / w.sum()
    return m


def topk_codes(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest pre-activations per row, ReLU them, zeros elsewhere (dense)."""
    return _topk(pre, k)[0]


def _topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """TopK codes and the number of non-zero codes per latent, counted on the (B, k) winners
    rather than on the dense (B, K) codes."""
    vals, idx = pre.topk(min(k, pre.shape[-1]), dim=-1, sorted=False)
    vals = torch.relu(vals)
    z = torch.zeros_like(pre).scatter_(-1, idx, vals)
    return z, _counts(idx.flatten(), vals.flatten(), pre.shape[-1])


def _counts(idx: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.long, device=idx.device).index_add_(0, idx, (vals > 0).long())


class SparseAutoencoder(Trainable, FeatureMap):
    """What all SAE variants share: parameters, input scaling, decoding, the training loss
    skeleton (reconstruction + ``penalty`` + ``aux_loss``) and the unit-norm decoder."""

    has_decoder = True
    unit_norm_decoder: ClassVar[bool] = True
    scale: torch.Tensor

    def __init__(self, dim: int, latents: int = 2048):
        super().__init__(dim)
        if latents < 1:
            raise ValueError(f"latents must be positive, not {latents}")
        self.latents = latents
        self.W_enc = torch.nn.Parameter(torch.zeros(dim, latents))
        self.b_enc = torch.nn.Parameter(torch.zeros(latents))
        self.W_dec = torch.nn.Parameter(torch.zeros(latents, dim))
        self.b_pre = torch.nn.Parameter(torch.zeros(dim))
        self.register_buffer("scale", torch.ones(()))

    @property
    def n_features(self) -> int:
        return self.latents

    # --- inference -------------------------------------------------------------------------
    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """x~ = (x - b_pre) * s."""
        return (x - self.b_pre) * self.scale

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_enc, self.scaled(x), self.W_enc)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Inference activation of pre-activations."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        return self.activate(self.pre_acts(x))

    def decode(self, z: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        return (z @ self.W_dec) / self.scale + self.b_pre

    def decoder_directions(self) -> torch.Tensor:
        return F.normalize(self.W_dec.detach(), dim=1)

    # --- training --------------------------------------------------------------------------
    @torch.no_grad()
    def init_from_data(self, batch: Batch, generator: torch.Generator) -> None:
        """b_pre = geometric median of the sample, s so that E||x~||^2 = d, W_enc = W_dec^T."""
        x = batch["x"].float()
        if not bool(torch.isfinite(x).all()):
            raise MonoscopeError("the training embeddings contain NaN or infinite values")
        w = torch.randn(self.latents, self.dim, generator=generator).to(x.device)
        self.W_dec.copy_(F.normalize(w, dim=1))
        self.W_enc.copy_(self.W_dec.T)
        self.b_enc.zero_()
        self.b_pre.copy_(geometric_median(x))
        msq = (x - self.b_pre).pow(2).sum(1).mean()
        if not bool(torch.isfinite(msq)) or float(msq) <= 0:
            raise MonoscopeError("cannot scale the SAE input: the training sample has no spread")
        self.scale.fill_(math.sqrt(self.dim / float(msq)))

    def train_codes(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time codes (default: the inference activation) and the number of non-zero
        codes per latent, (K,)."""
        z = self.activate(pre)
        return z, torch.count_nonzero(z, dim=0)

    def penalty(self, z: torch.Tensor, pre: torch.Tensor) -> torch.Tensor | None:
        """Sparsity penalty added to the loss (None for the TopK family)."""
        return None

    def recon_loss(self, z: torch.Tensor, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction loss, mse of the full reconstruction) in the scaled space."""
        mse = F.mse_loss(z @ self.W_dec, xs)
        return mse, mse

    def aux_loss(
        self, z: torch.Tensor, pre: torch.Tensor, xs: torch.Tensor, dead: torch.Tensor | None
    ) -> torch.Tensor | None:
        return None

    def train_loss(
        self, batch: Batch, dead: torch.Tensor | None = None, gather: Gather = no_gather
    ) -> TrainStep:
        """Loss of one mixed batch ``{"x": (B, d)}``; ``dead``: (K,) bool mask of dead latents."""
        xs = self.scaled(batch["x"])
        pre = torch.addmm(self.b_enc, xs, self.W_enc)
        z, counts = self.train_codes(pre)
        loss, mse = self.recon_loss(z, xs)
        stats: Stats = {"mse": mse.detach()}
        penalty = self.penalty(z, pre)
        if penalty is not None:
            loss = loss + penalty
            stats["penalty"] = penalty.detach()
        aux = self.aux_loss(z, pre, xs, dead)
        if aux is not None:
            loss = loss + aux
            stats["aux"] = aux.detach()
        stats["l0"] = counts.sum() / z.shape[0]
        return TrainStep(loss, stats, counts > 0)

    @torch.no_grad()
    def constrain_grads(self) -> None:
        """Remove the gradient component that would change the decoder rows' norms."""
        if self.unit_norm_decoder and self.W_dec.grad is not None:
            g, w = self.W_dec.grad, self.W_dec
            g.sub_((g * w).sum(1, keepdim=True) * w)

    @torch.no_grad()
    def constrain_params(self) -> None:
        """Renormalise decoder rows to unit norm after a step."""
        if self.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))


@register
class ReLUSAE(SparseAutoencoder):
    """``sae-relu``: z = relu(pre); loss = mse + l1 * sum_k z_k ||W_dec[k]|| / d.

    The decoder is unconstrained during training (the penalty weights each code by its decoder
    norm, so shrinking codes cannot be undone by growing the decoder); :meth:`finalize` folds the
    norms into the encoder, which leaves x^ unchanged and makes decoder rows unit norm. With the
    1/d normalisation, ``l1`` has the units of Anthropic's lambda for inputs with E||x||^2 = d.
    """

    kind = "sae-relu"
    unit_norm_decoder = False

    def __init__(self, dim: int, latents: int = 2048, l1: float = 5.0):
        super().__init__(dim, latents)
        self.l1 = l1

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def penalty(self, z: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        return self.l1 * (z @ self.W_dec.norm(dim=1)).mean() / self.dim

    @torch.no_grad()
    def finalize(self) -> None:
        norms = self.W_dec.norm(dim=1).clamp_min(1e-12)
        self.W_dec.div_(norms[:, None])
        self.W_enc.mul_(norms[None, :])
        self.b_enc.mul_(norms)


class _TopKFamily(SparseAutoencoder):
    """AuxK (Gao et al. 2024): the ``aux_k`` largest pre-activations of dead latents reconstruct
    the detached residual; loss += aux_coef * ||e - e^||^2 / ||e||^2.

    ``decoder``: the training kernels, "dense" (scatter the codes into a (B, K) matrix and
    multiply), "sparse" (gather over the selected latents only) or "auto" (by
    :func:`~monoscope.featuremaps.sparse.use_sparse`). It is not a hyperparameter: both compute
    the same loss and gradients, so it is not saved.
    """

    DECODERS: ClassVar[tuple[str, ...]] = ("auto", "dense", "sparse")

    def __init__(
        self,
        dim: int,
        latents: int = 2048,
        k: int = 32,
        aux_k: int | None = None,
        aux_coef: float = 1 / 32,
        decoder: str = "auto",
    ):
        super().__init__(dim, latents)
        if not 1 <= k <= latents:
            raise ValueError(f"k must be in [1, latents={latents}], not {k}")
        if decoder not in self.DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(self.DECODERS)}, not {decoder!r}")
        self.k = k
        self.aux_k = aux_k if aux_k is not None else min(latents, max(2 * k, dim // 2))
        self.aux_coef = aux_coef
        self.decoder = decoder

    def sparse_training(self, device: torch.device) -> bool:
        """Whether :meth:`train_loss` takes the sparse path on ``device``."""
        if self.decoder != "auto":
            return self.decoder == "sparse"
        return use_sparse(device.type, self.latents, self.k)

    def aux_loss(
        self, z: torch.Tensor, pre: torch.Tensor, xs: torch.Tensor, dead: torch.Tensor | None
    ) -> torch.Tensor | None:
        if dead is None or self.aux_coef == 0:
            return None
        n_dead = int(dead.sum())
        if n_dead == 0:
            return None
        e = (xs - z @ self.W_dec).detach()
        z_aux = topk_codes(pre.masked_fill(~dead, -torch.inf), min(self.aux_k, n_dead))
        err = F.mse_loss(z_aux @ self.W_dec, e) / e.pow(2).mean().clamp_min(1e-12)
        return self.aux_coef * err

    # --- sparse training path --------------------------------------------------------------
    def select(self, pre: torch.Tensor) -> ActiveSet:
        """The latents that training codes may keep, from detached pre-activations."""
        raise NotImplementedError

    def note_selected(self, vals: torch.Tensor) -> None:
        """Hook for the selected code values (BatchTopK updates its threshold)."""

    def sparse_recon_loss(
        self, active: ActiveSet, vals: torch.Tensor, xs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`recon_loss` on sparse codes, plus the full reconstruction."""
        recon = decode_active(active, vals, self.W_dec)
        mse = F.mse_loss(recon, xs)
        return mse, mse, recon

    def train_loss(
        self, batch: Batch, dead: torch.Tensor | None = None, gather: Gather = no_gather
    ) -> TrainStep:
        xs = self.scaled(batch["x"])
        if not self.sparse_training(xs.device):
            return super().train_loss(batch, dead)
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, xs, self.W_enc)
        active = self.select(pre)
        vals = torch.relu(gather_pre(pre, active, xs, self.W_enc, self.b_enc))
        self.note_selected(vals.detach())
        loss, mse, recon = self.sparse_recon_loss(active, vals, xs)
        stats: Stats = {"mse": mse.detach()}
        if dead is not None and self.aux_coef != 0 and (n_dead := int(dead.sum())) > 0:
            e = (xs - recon).detach()
            masked = pre.masked_fill(~dead, -torch.inf)
            aux_active = ActiveSet.topk(masked, min(self.aux_k, n_dead))
            aux_vals = torch.relu(gather_pre(pre, aux_active, xs, self.W_enc, self.b_enc))
            e_hat = decode_active(aux_active, aux_vals, self.W_dec)
            aux = self.aux_coef * F.mse_loss(e_hat, e) / e.pow(2).mean().clamp_min(1e-12)
            loss = loss + aux
            stats["aux"] = aux.detach()
        counts = _counts(active.cols, vals.detach(), self.latents)
        stats["l0"] = counts.sum() / xs.shape[0]
        return TrainStep(loss, stats, counts > 0)


@register
class TopKSAE(_TopKFamily):
    """``sae-topk``: keep the k largest pre-activations of each sample, then ReLU; loss = mse
    (+ AuxK on dead latents)."""

    kind = "sae-topk"

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return topk_codes(pre, self.k)

    def train_codes(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _topk(pre, self.k)

    def select(self, pre: torch.Tensor) -> ActiveSet:
        return ActiveSet.topk(pre, self.k)


@register
class BatchTopKSAE(_TopKFamily):
    """``sae-batchtopk`` (Bussmann et al. 2024): in training keep the k*B largest positive
    pre-activations of the whole batch; track a global threshold (an exponential moving average,
    ``threshold_momentum``, of the smallest kept activation); at inference z = pre * (pre > theta).
    """

    kind = "sae-batchtopk"
    synced_buffers: ClassVar[tuple[str, ...]] = ("threshold",)
    threshold: torch.Tensor

    def __init__(
        self,
        dim: int,
        latents: int = 2048,
        k: int = 32,
        aux_k: int | None = None,
        aux_coef: float = 1 / 32,
        threshold_momentum: float = 0.99,
        decoder: str = "auto",
    ):
        super().__init__(dim, latents, k, aux_k, aux_coef, decoder)
        self.threshold_momentum = threshold_momentum
        self.register_buffer("threshold", torch.full((), -1.0))  # < 0: not estimated yet

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.where(pre > self.threshold.clamp_min(0), pre, 0.0)

    def train_codes(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = torch.relu(pre).flatten()
        vals, idx = flat.topk(min(self.k * pre.shape[0], flat.numel()), sorted=False)
        z = torch.zeros_like(flat).scatter_(0, idx, vals).view_as(pre)
        counts = _counts(idx % pre.shape[1], vals, pre.shape[1])
        self.note_selected(vals.detach())
        return z, counts

    def select(self, pre: torch.Tensor) -> ActiveSet:
        return ActiveSet.batch_topk(pre, self.k)

    @torch.no_grad()
    def note_selected(self, vals: torch.Tensor) -> None:
        """Move the threshold towards the smallest kept (positive) activation."""
        kept = vals[vals > 0]
        if kept.numel():
            low = kept.min()
            if self.threshold < 0:
                self.threshold.copy_(low)
            else:
                self.threshold.lerp_(low, 1 - self.threshold_momentum)


@register
class MatryoshkaSAE(BatchTopKSAE):
    """``sae-matryoshka`` (Bussmann et al. 2025): BatchTopK codes; every nested prefix
    ``z[:, :m]`` (m in ``prefixes``, the last being all latents) reconstructs x~ on its own; the
    loss is the sum of the prefix mses (+ AuxK). Default prefixes: K/8, K/4, K/2, K."""

    kind = "sae-matryoshka"

    def __init__(
        self,
        dim: int,
        latents: int = 2048,
        k: int = 32,
        aux_k: int | None = None,
        aux_coef: float = 1 / 32,
        threshold_momentum: float = 0.99,
        prefixes: list[int] | None = None,
        decoder: str = "auto",
    ):
        super().__init__(dim, latents, k, aux_k, aux_coef, threshold_momentum, decoder)
        if prefixes is None:
            prefixes = [m for m in (latents // 8, latents // 4, latents // 2) if m > 0]
        prefixes = sorted({int(m) for m in prefixes} | {latents})
        if prefixes[0] < 1 or prefixes[-1] > latents:
            raise ValueError(f"prefixes must lie in [1, {latents}], got {prefixes}")
        self.prefixes = prefixes

    def recon_loss(self, z: torch.Tensor, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recon = torch.zeros_like(xs)
        loss = xs.new_zeros(())
        start = 0
        for stop in self.prefixes:  # partial reconstructions: one matmul over all latents in total
            recon = recon + z[:, start:stop] @ self.W_dec[start:stop]
            mse = F.mse_loss(recon, xs)
            loss = loss + mse
            start = stop
        return loss, mse

    def sparse_recon_loss(
        self, active: ActiveSet, vals: torch.Tensor, xs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        recon = torch.zeros_like(xs)
        loss = xs.new_zeros(())
        start = 0
        for stop in self.prefixes:  # each block decodes only its own selected latents
            keep = (active.cols >= start) & (active.cols < stop)
            block = active.subset(keep)
            recon = recon + decode_active(block, vals[keep], self.W_dec)
            mse = F.mse_loss(recon, xs)
            loss = loss + mse
            start = stop
        return loss, mse, recon


class _JumpReLU(torch.autograd.Function):
    """z = pre * H(pre - theta); d/d theta via the rectangle-kernel pseudo-derivative
    -(theta / eps) K((pre - theta) / eps); d/d pre = H(pre - theta)."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return torch.where(pre > theta, pre, 0.0)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        pre, theta = ctx.saved_tensors
        near = ((pre - theta).abs() < ctx.eps / 2).to(g.dtype)
        grad_theta = -(theta / ctx.eps) * (near * g).sum(0)
        return torch.where(pre > theta, g, 0.0), grad_theta, None


class _Step(torch.autograd.Function):
    """H(pre - theta) with d/d theta = -(1 / eps) K((pre - theta) / eps), no gradient to pre."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        pre, theta = ctx.saved_tensors
        near = ((pre - theta).abs() < ctx.eps / 2).to(g.dtype)
        return None, -(near * g).sum(0) / ctx.eps, None


@register
class JumpReLUSAE(SparseAutoencoder):
    """``sae-jumprelu`` (Rajamanoharan et al. 2024): z = pre * H(pre - theta_k) with learned
    per-feature thresholds theta = exp(log_threshold); loss = mse + l0 * ||z||_0 / d, trained
    with straight-through estimators (rectangle kernel of width ``bandwidth``)."""

    kind = "sae-jumprelu"

    def __init__(
        self,
        dim: int,
        latents: int = 2048,
        l0: float = 1.0,
        bandwidth: float = 0.1,
        init_threshold: float = 0.5,
    ):
        super().__init__(dim, latents)
        self.l0 = l0
        self.bandwidth = bandwidth
        self.init_threshold = init_threshold
        self.log_threshold = torch.nn.Parameter(torch.full((latents,), math.log(init_threshold)))

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.where(pre > self.log_threshold.exp(), pre, 0.0)

    def train_codes(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = _JumpReLU.apply(pre, self.log_threshold.exp(), self.bandwidth)
        return z, torch.count_nonzero(z, dim=0)

    def penalty(self, z: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        step = _Step.apply(pre, self.log_threshold.exp(), self.bandwidth)
        return self.l0 * step.sum(1).mean() / self.dim

    @torch.no_grad()
    def init_from_data(self, batch: Batch, generator: torch.Generator) -> None:
        super().init_from_data(batch, generator)
        self.log_threshold.fill_(math.log(self.init_threshold))


@register
class PerModalityMap(Trainable, FeatureMap):
    """``--per-modality`` ("late fusion"): one sub-map per modality, features concatenated.

    Features ``0..K_img-1`` belong to the image map, ``K_img..`` to the text map. Embeddings must
    say which modality they are: ``encode(x, "image")`` returns the image map's codes
    followed by zeros for the text features (and vice versa), ``decode(z, m)`` decodes
    with modality m's map from its block of z; without a modality they raise. Sub-maps are any
    registered kinds, rebuilt from ``{"kind": ..., "hparams": ...}`` specs.
    """

    kind = "per-modality"
    has_decoder = True
    MODALITIES: ClassVar[tuple[str, str]] = ("image", "text")

    def __init__(self, dim: int, image: dict[str, Any], text: dict[str, Any]):
        super().__init__(dim)
        self.specs = {"image": image, "text": text}
        self.maps = torch.nn.ModuleDict(
            {m: KINDS[spec["kind"]](**spec["hparams"]) for m, spec in self.specs.items()}
        )

    @classmethod
    def from_maps(cls, image: FeatureMap, text: FeatureMap) -> PerModalityMap:
        specs = {
            m: {"kind": f.kind, "hparams": f.hparams()}
            for m, f in (("image", image), ("text", text))
        }
        out = cls(image.dim, **specs)
        out.maps["image"], out.maps["text"] = image, text
        return out

    @property
    def _maps(self) -> dict[str, FeatureMap]:
        """The sub-maps by modality (a ``ModuleDict`` holds them typed as plain modules)."""
        return {m: cast(FeatureMap, f) for m, f in self.maps.items()}

    def _trained(self) -> dict[str, Trainable]:
        """The sub-maps by modality, each of which must implement the training protocol."""
        out: dict[str, Trainable] = {}
        for m, f in self._maps.items():
            if not isinstance(f, Trainable):
                raise MonoscopeError(f"the {m} feature map '{f.kind}' has nothing to train")
            out[m] = f
        return out

    @property
    def n_features(self) -> int:
        return sum(m.n_features for m in self._maps.values())

    @property
    def trainable(self) -> bool:  # type: ignore[override]
        return all(m.trainable for m in self._maps.values())

    @property
    def _offsets(self) -> dict[str, int]:
        return {"image": 0, "text": self._maps["image"].n_features}

    def hparams(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            **{m: {"kind": f.kind, "hparams": f.hparams()} for m, f in self._maps.items()},
        }

    def _check(self, modality: str | None) -> str:
        if modality is None:
            raise MonoscopeError("a per-modality feature map needs the modality of its inputs")
        if modality not in self.MODALITIES:
            raise MonoscopeError(f"modality must be 'image' or 'text', not {modality!r}")
        return modality

    def encode(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        modality = self._check(modality)
        codes = self._maps[modality].encode(x, modality)
        out = codes.new_zeros(*codes.shape[:-1], self.n_features)
        start = self._offsets[modality]
        out[..., start : start + codes.shape[-1]] = codes
        return out

    def decode(self, z: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        modality = self._check(modality)
        start = self._offsets[modality]
        sub = self._maps[modality]
        return sub.decode(z[..., start : start + sub.n_features], modality)

    def decoder_directions(self) -> torch.Tensor | None:
        dirs = [f.decoder_directions() for f in self._maps.values()]
        parts = [d for d in dirs if d is not None]
        return torch.cat(parts) if len(parts) == len(dirs) else None

    # --- training: each mixed batch is split by modality ----------------------------------
    def init_from_data(self, batch: Batch, generator: torch.Generator) -> None:
        for m, sub in self._trained().items():
            sub.init_from_data(_rows(batch, m), generator)

    def train_loss(
        self, batch: Batch, dead: torch.Tensor | None = None, gather: Gather = no_gather
    ) -> TrainStep:
        n = batch["x"].shape[0]
        loss = batch["x"].new_zeros(())
        stats: Stats = {}
        fired = []
        for m, sub in self._trained().items():
            part = _rows(batch, m)
            start, size = self._offsets[m], self._maps[m].n_features
            sub_dead = None if dead is None else dead[start : start + size]
            if part["x"].shape[0] == 0:
                fired.append(torch.zeros(size, dtype=torch.bool, device=loss.device))
                continue
            w = part["x"].shape[0] / n
            sub_loss, sub_stats, sub_fired = sub.train_loss(part, sub_dead, gather)
            loss = loss + w * sub_loss
            fired.append(sub_fired)
            for key, value in sub_stats.items():
                stats[key] = stats.get(key, 0.0) + w * value
        return TrainStep(loss, stats, torch.cat(fired))

    def constrain_grads(self) -> None:
        for sub in self._trained().values():
            sub.constrain_grads()

    def constrain_params(self) -> None:
        for sub in self._trained().values():
            sub.constrain_params()

    def finalize(self) -> None:
        for sub in self._trained().values():
            sub.finalize()


def _rows(batch: Batch, modality: str) -> dict[str, torch.Tensor]:
    keep = batch["is_image"] if modality == "image" else ~batch["is_image"]
    return {"x": batch["x"][keep], "is_image": batch["is_image"][keep]}


SAE_KINDS = ("sae-relu", "sae-topk", "sae-batchtopk", "sae-jumprelu", "sae-matryoshka")
