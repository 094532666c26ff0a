"""Sparse kernels for training the TopK family of SAEs on (B, K) codes with few non-zeros.

With k of K latents active per sample, five of a dense training step's six GEMMs multiply a
code matrix that is almost all zeros. Here only the pre-activation GEMM ``x~ W_enc + b_enc``
stays dense (TopK needs every pre-activation); then, for the n selected (row, latent) entries:

- decoder (:class:`_Decode`): ``x^[b] = sum_j v_j W_dec[c_j]``, an ``F.embedding_bag`` over
  the rows of W_dec; backward: the code gradient is one dot product per entry (torch's own
  per-sample-weight kernel), the decoder gradient an ``embedding_bag`` over the output
  gradients of each latent's entries, so only the selected rows get gradient.
- encoder backward (:class:`_GatherPre`): the gradient of the gathered pre-activations goes to
  b_enc by ``index_add``, to W_enc by an ``embedding_bag`` over the inputs of each latent's
  entries and to x~ by an ``embedding_bag`` over the columns of W_enc.

All of it is O(n d) instead of the O(B K d) of the dense path. Both backward passes share one
ordering of the entries by latent (:meth:`ActiveSet.by_latent`), sorted on one CPU thread:
torch's parallel sort of ~10^5 keys takes ~1 ms alone but can take hundreds of ms when the
cores are oversubscribed, and the single-threaded one does not (benchmarks/README.md).

:func:`use_sparse` is the rule the ``auto`` setting follows (docs/featuremaps.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F

# Latents per active latent (K / k) from which the sparse kernels beat the dense ones: CPU
# measured by `benchmarks/sae_throughput.py --crossover`; CUDA not measured yet (a conservative
# guess; `benchmarks/gpu.py` times both paths). See docs/featuremaps.md.
SPARSE_FROM_RATIO = {"cpu": 8, "cuda": 32}


def use_sparse(device_type: str, latents: int, k: int) -> bool:
    """Whether training on ``device_type`` with k of ``latents`` active should go sparse."""
    ratio = SPARSE_FROM_RATIO.get(device_type)
    return ratio is not None and latents >= ratio * k


@dataclass(frozen=True)
class ActiveSet:
    """The selected entries of a (B, K) code matrix, ordered by row: ``rows``/``cols`` (n,)
    and ``offsets`` (B,), the index of each row's first entry (``F.embedding_bag`` bags)."""

    rows: torch.Tensor
    cols: torch.Tensor
    offsets: torch.Tensor
    latents: int

    @classmethod
    def topk(cls, pre: torch.Tensor, k: int) -> ActiveSet:
        """The k largest pre-activations of each row."""
        b, n_lat = pre.shape
        idx = pre.topk(k, dim=-1, sorted=False).indices
        rows = torch.arange(b, device=pre.device).repeat_interleave(k)
        offsets = torch.arange(0, b * k, k, device=pre.device)
        return cls(rows, idx.flatten(), offsets, n_lat)

    @classmethod
    def batch_topk(cls, pre: torch.Tensor, k: int) -> ActiveSet:
        """The k * B largest ReLU'd pre-activations of the whole batch (BatchTopK)."""
        b, n_lat = pre.shape
        flat = torch.relu(pre).flatten()
        idx = flat.topk(min(k * b, flat.numel()), sorted=False).indices.sort().values
        return cls._from_rows(idx // n_lat, idx % n_lat, b, n_lat)

    @classmethod
    def _from_rows(cls, rows: torch.Tensor, cols: torch.Tensor, b: int, latents: int) -> ActiveSet:
        counts = torch.bincount(rows, minlength=b)
        return cls(rows, cols, torch.cumsum(counts, 0) - counts, latents)

    @cached_property
    def by_latent(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(order, offsets): the entries ``order`` sorted by latent, ``offsets`` (K,) the first
        position of each latent in that order."""
        if self.cols.device.type == "cpu" and (threads := torch.get_num_threads()) > 1:
            torch.set_num_threads(1)
            try:
                order = torch.argsort(self.cols)
            finally:
                torch.set_num_threads(threads)
        else:
            order = torch.argsort(self.cols)
        counts = torch.bincount(self.cols, minlength=self.latents)
        return order, torch.cumsum(counts, 0) - counts

    def subset(self, keep: torch.Tensor) -> ActiveSet:
        """The entries where the (n,) mask ``keep`` is true (order kept)."""
        return self._from_rows(self.rows[keep], self.cols[keep], len(self.offsets), self.latents)


def decode_active(active: ActiveSet, vals: torch.Tensor, w_dec: torch.Tensor) -> torch.Tensor:
    """(B, d) = codes @ W_dec for the codes ``vals`` (n,) at ``active``."""
    return F.embedding_bag(active.cols, w_dec, active.offsets, mode="sum", per_sample_weights=vals)


def gather_pre(
    pre: torch.Tensor,
    active: ActiveSet,
    xs: torch.Tensor,
    w_enc: torch.Tensor,
    b_enc: torch.Tensor,
) -> torch.Tensor:
    """(n,) entries of ``pre = xs @ w_enc + b_enc`` (computed without gradient) at ``active``,
    differentiable with respect to xs, w_enc and b_enc."""
    return _GatherPre.apply(pre, active, xs, w_enc, b_enc)


class _GatherPre(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        pre: torch.Tensor,
        active: ActiveSet,
        xs: torch.Tensor,
        w_enc: torch.Tensor,
        b_enc: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(xs, w_enc)
        ctx.active = active
        return pre.flatten()[active.rows * pre.shape[1] + active.cols]

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[None, None, Any, Any, Any]:
        xs, w_enc = ctx.saved_tensors
        a: ActiveSet = ctx.active
        g = g.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[2]:
            grad_x = F.embedding_bag(
                a.cols, w_enc.t().contiguous(), a.offsets, mode="sum", per_sample_weights=g
            )
        if ctx.needs_input_grad[3]:
            order, offsets = a.by_latent
            grad_w = F.embedding_bag(
                a.rows[order], xs.detach(), offsets, mode="sum", per_sample_weights=g[order]
            ).t()
        if ctx.needs_input_grad[4]:
            grad_b = torch.zeros(a.latents, dtype=g.dtype, device=g.device).index_add_(0, a.cols, g)
        return None, None, grad_x, grad_w, grad_b
