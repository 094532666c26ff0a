"""Sparse feature codes in the analysis pass.

A TopK-family SAE gives each sample k of K non-zero codes, so the (B, K) code matrix of a batch
is almost all zeros. :class:`SparseCodes` keeps only its positive entries, and the analysis
accumulators (moments, top-m, MS, ratios, sign-flip test) read them in O(B * k) or
O(B * k * d) per batch instead of O(B * K) or O(B * K * d). They compute the same sums as on
the dense matrix (tests/test_analysis_sparse.py). Maps whose codes are dense (raw dimensions,
NCL, ReLU and JumpReLU SAEs) keep the dense path: :func:`sparse_encoder` returns None for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from ..featuremaps import FeatureMap
from ..featuremaps.center import CenteredMap
from ..featuremaps.sae import BatchTopKSAE, TopKSAE, _TopKFamily
from .screen import ScreenedPreActs, screen_pays
from .threads import one_thread

_LOW31 = 0x7FFFFFFF
GEMM_ROWS = 1024  # rows per pre-activation block of the TopK encoder (a 32 MB block at 8,192)


@dataclass(frozen=True)
class SparseCodes:
    """The positive entries of a (B, K) batch of non-negative codes, in row-major order (by
    row, then by latent): ``rows``, ``cols`` (n,) int64 and ``vals`` (n,) float32."""

    rows: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor
    shape: tuple[int, int]

    @classmethod
    def from_topk(cls, idx: torch.Tensor, vals: torch.Tensor, n_features: int) -> SparseCodes:
        """From each row's selected latents ``idx`` (B, k) and their codes ``vals`` (B, k)."""
        idx, order = idx.sort(dim=1)
        vals = vals.gather(1, order).flatten()
        b, k = idx.shape
        rows = torch.arange(b, device=idx.device).repeat_interleave(k)
        keep = vals != 0  # NaN is kept, so the finiteness check sees it
        return cls(rows[keep], idx.flatten()[keep], vals[keep], (b, n_features))

    @classmethod
    def from_dense(cls, acts: torch.Tensor) -> SparseCodes:
        """From a dense (B, K) code matrix."""
        rows, cols = acts.nonzero(as_tuple=True)
        return cls(rows, cols, acts[rows, cols], (acts.shape[0], acts.shape[1]))

    @property
    def n_features(self) -> int:
        return self.shape[1]

    def dense(self) -> torch.Tensor:
        """The (B, K) code matrix."""
        out = torch.zeros(self.shape, dtype=self.vals.dtype, device=self.vals.device)
        return out.index_put_((self.rows, self.cols), self.vals)

    def is_finite(self) -> bool:
        return bool(torch.isfinite(self.vals).all())

    @cached_property
    def counts(self) -> torch.Tensor:
        """(K,) int64 number of rows on which each latent fires."""
        return torch.bincount(self.cols, minlength=self.n_features)

    @cached_property
    def sums(self) -> torch.Tensor:
        """(K,) float64 column sums."""
        return self._column_add(self.vals.double())

    @cached_property
    def squares(self) -> torch.Tensor:
        """(K,) float64 column sums of squares."""
        v = self.vals.double()
        return self._column_add(v * v)

    @cached_property
    def maxima(self) -> torch.Tensor:
        """(K,) float32 column maxima (0 where a latent never fires)."""
        out = torch.zeros(self.n_features, dtype=self.vals.dtype, device=self.vals.device)
        return out.scatter_reduce_(0, self.cols, self.vals, "amax")

    @cached_property
    def minima(self) -> torch.Tensor:
        """(K,) float32 column minima over all B rows (0 unless a latent fires on every row)."""
        inf = torch.full((self.n_features,), torch.inf, device=self.vals.device)
        low = inf.scatter_reduce_(0, self.cols, self.vals, "amin")
        return torch.where(self.counts == self.shape[0], low, 0.0)

    @cached_property
    def by_latent(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(order, offsets): ``order`` sorts the entries by latent, largest code first (ties in
        row order); ``offsets`` (K,) is the first position of each latent in that order."""
        # positive float32 codes order like their bit patterns (below 2^31)
        bits = self.vals.view(torch.int32).long()
        order = _stable_argsort(self.cols * (_LOW31 + 1) + (_LOW31 - bits))
        return order, torch.cumsum(self.counts, 0) - self.counts

    def weighted_rows(self, x: torch.Tensor) -> torch.Tensor:
        """(K, D) = codes.T @ x for (B, D) ``x``, as one ``embedding_bag`` over the entries."""
        order, offsets = self.by_latent
        return F.embedding_bag(
            self.rows[order], x, offsets, mode="sum", per_sample_weights=self.vals[order].to(x)
        )

    def _column_add(self, values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.n_features, dtype=values.dtype, device=values.device)
        return out.index_add_(0, self.cols, values)


def matches(a: SparseCodes, b: SparseCodes) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (i, j) of the entries of ``a`` and ``b`` at the same (row, latent): the pairs
    on which a latent fires in both modalities."""
    key_a = a.rows * a.n_features + a.cols  # increasing: entries are in row-major order
    key_b = b.rows * b.n_features + b.cols
    if key_a.numel() == 0 or key_b.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=key_a.device)
        return empty, empty
    pos = torch.searchsorted(key_a, key_b).clamp(max=key_a.numel() - 1)
    hit = key_a[pos] == key_b
    return pos[hit], hit.nonzero().flatten()


def _stable_argsort(keys: torch.Tensor) -> torch.Tensor:
    with one_thread():
        return torch.sort(keys, stable=True).indices


Encoder = Callable[[torch.Tensor, str], SparseCodes]


def sparse_encoder(fmap: FeatureMap) -> Encoder | None:
    """``encode(x, modality) -> SparseCodes`` with the same codes as
    ``fmap.encode``, for maps whose codes are sparse (the TopK family, also when
    centred); None for the others."""
    inner = fmap.inner if isinstance(fmap, CenteredMap) else fmap
    if not isinstance(inner, _TopKFamily):
        return None

    def prepare(x: torch.Tensor, modality: str) -> torch.Tensor:
        return fmap.transform(x, modality) if isinstance(fmap, CenteredMap) else x

    screen = None
    if screen_pays(inner.W_enc.device, inner.n_features):
        screen = ScreenedPreActs(inner.W_enc.detach(), inner.b_enc.detach())
        screen = screen if screen.finite else None

    if isinstance(inner, TopKSAE):  # the k largest pre-activations of each row, ReLU'd

        def encode(x: torch.Tensor, modality: str) -> SparseCodes:
            with one_thread():  # elementwise: the same values on any number of threads
                xs = inner.scaled(prepare(x, modality))
            k = min(inner.k, inner.n_features)
            top = screen.topk if screen and bool(torch.isfinite(xs).all()) else _dense_topk(inner)
            chunks = [top(xs[lo : lo + GEMM_ROWS], k) for lo in range(0, len(xs), GEMM_ROWS)]
            idx = torch.cat([i for i, _ in chunks])
            vals = torch.cat([v for _, v in chunks])
            with one_thread():
                return SparseCodes.from_topk(idx, torch.relu(vals), inner.n_features)

        return encode

    if not isinstance(inner, BatchTopKSAE):
        raise TypeError(f"no sparse encoder for {type(inner).__name__}")
    threshold = float(inner.threshold.clamp_min(0))  # z = pre * (pre > threshold)

    def encode_thresholded(x: torch.Tensor, modality: str) -> SparseCodes:
        xs = prepare(x, modality)
        if screen is None or not bool(torch.isfinite(xs).all()):
            codes = inner.encode(xs)
            with one_thread():
                return SparseCodes.from_dense(codes)
        xs = inner.scaled(xs)
        starts = range(0, len(xs), GEMM_ROWS)
        parts = [screen.above(xs[lo : lo + GEMM_ROWS], threshold) for lo in starts]
        return SparseCodes(
            torch.cat([rows + lo for (rows, _, _), lo in zip(parts, starts, strict=True)]),
            torch.cat([cols for _, cols, _ in parts]),
            torch.cat([vals for _, _, vals in parts]),
            (len(xs), inner.n_features),
        )

    return encode_thresholded


def _dense_topk(inner: TopKSAE) -> Callable[[torch.Tensor, int], tuple[torch.Tensor, ...]]:
    """The float32 encoder's top-k, by row blocks that stay in cache."""

    def top(xs: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
        r = torch.addmm(inner.b_enc, xs, inner.W_enc).topk(k, dim=-1, sorted=False)
        return r.indices, r.values

    return top
