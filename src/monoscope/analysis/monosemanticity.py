"""Monosemanticity metrics (METHOD.md §3): EmbSim of top-m sets and its lift over random sets,
the MonoSemanticity score (MS) in its exact O(N*K*d) form, WinRate between feature maps, and
the cross-modal activation correlation.

All per-feature statistics are streamed: the accumulators here take activation batches with
the matching evaluator embeddings and keep O(K * d) state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .sparse import SparseCodes
from .stats import column_counts, column_sums


def unit_rows(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def embsim(
    top_embeddings: np.ndarray, valid: np.ndarray | None = None, ms: Sequence[int] | None = None
) -> np.ndarray:
    """Mean pairwise cosine of each feature's top-m evaluator embeddings.

    ``top_embeddings`` is (K, m, d), sorted by activation; ``valid`` (K, m) marks real entries
    (a feature with fewer than 2 valid entries gets NaN). With unit rows u_i, the cosines of
    n rows sum to ||sum_i u_i||^2 - n over their n (n - 1) ordered pairs, so the sums of the
    first m unit rows, one batched (len(ms), m) x (m, d) product per feature, give the EmbSim of
    every prefix length m in ``ms`` (then the result is (len(ms), K)) in O(K * m * d).
    """
    x = torch.as_tensor(top_embeddings, dtype=torch.float32)
    k, m_max = x.shape[:2]
    v = torch.ones(k, m_max) if valid is None else torch.as_tensor(valid, dtype=torch.float32)
    lengths = [m_max] if ms is None else list(ms)
    w = v / x.norm(dim=2).clamp(min=1e-12)  # (K, m): valid rows scaled to unit length
    prefix = torch.arange(m_max)[None, :] < torch.tensor(lengths)[:, None]  # (len(ms), m)
    totals = torch.bmm(w[:, None, :] * prefix, x).double()  # (K, len(ms), d)
    n = (v[:, None, :] * prefix).sum(2).double()  # (K, len(ms))
    sims = ((totals * totals).sum(2) - n) / (n * (n - 1)).clamp(min=1)
    out = torch.where(n >= 2, sims, torch.nan).T.numpy()
    return out if ms is not None else out[0]


def random_sets(n: int, m: int, samples: int, seed: int = 0) -> np.ndarray:
    """(samples, m) row indices: uniformly random m-subsets of range(n), without replacement."""
    if n < m:
        raise ValueError(f"cannot draw sets of {m} from {n} samples")
    rng = np.random.default_rng(seed)
    if samples * n <= 5_000_000:
        return np.argsort(rng.random((samples, n)), axis=1)[:, :m]
    idx = rng.integers(0, n, (samples, m))
    while (dup := (np.diff(np.sort(idx, axis=1), axis=1) == 0).any(1)).any():
        idx[dup] = rng.integers(0, n, (int(dup.sum()), m))  # rejection: rare when n >> m
    return idx


def random_embsim(
    gather: Callable[[np.ndarray], np.ndarray], n: int, m: int, samples: int = 1000, seed: int = 0
) -> np.ndarray:
    """EmbSim of ``samples`` random m-sets (the null distribution); ``gather(idx)`` returns the
    evaluator embeddings of row indices ``idx`` (e.g. ``partial(store.rows, "image")``)."""
    return embsim(gather(random_sets(n, m, samples, seed)))


def mean_pairwise_cosine(embeddings: np.ndarray) -> float:
    """The expected EmbSim of a random m-set, for any m: the mean cosine over distinct pairs."""
    e = unit_rows(embeddings).double()
    n = e.shape[0]
    s = e.sum(0)
    return float(((s @ s) - (e**2).sum()) / (n * (n - 1)))


class MSAccumulator:
    """Stream the MonoSemanticity score (Pach et al. 2025) of every feature at once.

    With activations a_n min-max scaled to [0, 1] per feature and unit evaluator embeddings
    e_n, MS_k = sum_{i != j} a_i a_j <e_i, e_j> / sum_{i != j} a_i a_j
              = (||sum_n a_n e_n||^2 - sum_n a_n^2) / ((sum_n a_n)^2 - sum_n a_n^2).
    Scaling is affine, so the sums of raw activations (A^T E, sum a, sum a^2, sum e, min, max)
    are all that is kept, in float64. MS is a weighted mean of cosines, so it lies in [-1, 1];
    it is NaN for a feature whose scaled activations are nonzero on fewer than two samples or
    whose pair weight sum_{i != j} a_i a_j is below ``rel_tol`` of (sum_n a_n)^2 (one sample
    carries almost all the weight, and the difference of sums is rounding).
    """

    rel_tol = 1e-3

    def __init__(self, n_features: int, dim: int):
        self.n = 0
        self.ae = torch.zeros(n_features, dim, dtype=torch.float64)
        self.e = torch.zeros(dim, dtype=torch.float64)
        self.a = torch.zeros(n_features, dtype=torch.float64)
        self.a2 = torch.zeros(n_features, dtype=torch.float64)
        self.fired = torch.zeros(n_features, dtype=torch.int64)
        self.lo = torch.full((n_features,), torch.inf, dtype=torch.float64)
        self.hi = torch.full((n_features,), -torch.inf, dtype=torch.float64)

    def update(
        self, acts: torch.Tensor | SparseCodes, embeddings: np.ndarray | torch.Tensor
    ) -> None:
        """Add a (B, K) batch of activations (dense or sparse) and their (B, d) embeddings;
        A^T E costs O(B * K * d) dense, O(B * k * d) sparse (an ``embedding_bag``)."""
        e = unit_rows(embeddings)
        self.n += acts.shape[0]
        self.e += e.sum(0).double()
        if isinstance(acts, SparseCodes):
            self.ae += acts.weighted_rows(e).double()
            self.a += acts.sums
            self.a2 += acts.squares
            self.fired += acts.counts
            lo, hi = acts.minima, acts.maxima
        else:
            a = acts.float()
            self.ae += (a.T @ e).double()
            self.a += column_sums(a).double()
            self.a2 += column_sums(a * a).double()
            self.fired += column_counts(a)
            lo, hi = a.amin(0), a.amax(0)
        self.lo = torch.minimum(self.lo, lo.double())
        self.hi = torch.maximum(self.hi, hi.double())

    def scores(self) -> np.ndarray:
        """(K,) MS per feature in [-1, 1]; NaN where it is not defined (see the class)."""
        rng = (self.hi - self.lo).clamp(min=1e-30)
        lo = self.lo
        s_ae = (self.ae - lo[:, None] * self.e[None, :]) / rng[:, None]
        s_a = (self.a - self.n * lo) / rng
        s_a2 = (self.a2 - 2 * lo * self.a + self.n * lo**2) / rng**2
        num = (s_ae**2).sum(1) - s_a2
        den = s_a**2 - s_a2
        # samples with a scaled activation > 0: those above the minimum
        above = torch.where(lo > 0, torch.full_like(self.fired, self.n), self.fired)
        ok = (self.hi > self.lo) & (above >= 2) & (den > self.rel_tol * s_a**2)
        ms = (num / den.clamp(min=1e-300)).clamp(-1.0, 1.0)
        return torch.where(ok, ms, torch.nan).numpy()


def ms_oracle(acts: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """O(N^2 K) reference implementation of MS, for tests (defined where
    :class:`MSAccumulator` says it is)."""
    e = unit_rows(embeddings).double().numpy()
    sim = e @ e.T
    out = np.full(acts.shape[1], np.nan)
    for k in range(acts.shape[1]):
        a = acts[:, k].astype(np.float64)
        if a.max() == a.min():
            continue
        a = (a - a.min()) / (a.max() - a.min())
        w = np.outer(a, a)
        np.fill_diagonal(w, 0)
        if (a > 0).sum() >= 2 and w.sum() > MSAccumulator.rel_tol * a.sum() ** 2:
            out[k] = (w * sim).sum() / w.sum()
    return out


def win_rate(a: np.ndarray, b: np.ndarray) -> float:
    """P(random a > random b), ties counting 1/2: the Mann-Whitney AUC, via average ranks."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return float("nan")
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="stable")
    ranks = np.empty(both.size)
    sorted_vals = both[order]
    # average ranks of tied values
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_vals)) + 1]
    ends = np.r_[starts[1:], both.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[: a.size].sum() - a.size * (a.size + 1) / 2
    return float(u / (a.size * b.size))


class BootstrapMeans:
    """Means with 95% percentile-bootstrap CIs over the (finite) values, ``replicates``
    resamples drawn from ``seed``. The resample counts of each sample size are kept (up to
    ``budget`` bytes), so the many metrics of one group of features cost a matrix-vector product
    each; every call with n values uses the resamples a fresh call would draw."""

    def __init__(self, replicates: int = 1000, seed: int = 0, budget: int = 1 << 28):
        self.replicates, self.seed, self.budget = replicates, seed, budget
        self._counts: dict[int, np.ndarray] = {}

    def __call__(self, values: np.ndarray) -> dict[str, Any]:
        v = np.asarray(values, np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return {"mean": None, "ci": None, "n": 0}
        means = self._resample_counts(v.size) @ v / v.size
        lo, hi = np.percentile(means, [2.5, 97.5])
        return {"mean": float(v.mean()), "ci": [float(lo), float(hi)], "n": int(v.size)}

    def _resample_counts(self, n: int) -> np.ndarray:
        """(replicates, n) float64: how often each value is drawn in each resample."""
        counts = self._counts.get(n)
        if counts is None:
            r = self.replicates
            idx = np.random.default_rng(self.seed).integers(0, n, (r, n))
            idx += n * np.arange(r)[:, None]
            counts = np.bincount(idx.ravel(), minlength=r * n).reshape(r, n).astype(np.float64)
            if counts.nbytes + sum(c.nbytes for c in self._counts.values()) <= self.budget:
                self._counts[n] = counts
        return counts


def mean_ci(values: np.ndarray, replicates: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean with a 95% percentile-bootstrap CI over the (finite) values."""
    return BootstrapMeans(replicates, seed)(values)
