"""Streaming per-feature statistics: memory is O(K * m), independent of the number of samples."""

from __future__ import annotations

import numpy as np
import torch

from .sparse import SparseCodes, matches


def column_sums(x: torch.Tensor) -> torch.Tensor:
    """(K,) float32 sums over the rows of a (B, K) batch, as one matrix-vector product (a
    reduction over dim 0 is several times slower on CPU)."""
    return (torch.ones(1, x.shape[0], dtype=x.dtype, device=x.device) @ x)[0]


def column_counts(x: torch.Tensor) -> torch.Tensor:
    """(K,) int64 number of positive entries per column of a non-negative batch (exact below
    2^24 rows)."""
    return column_sums(torch.sign(x)).round().long()


class FeatureStats:
    """Accumulate the top-m samples of each feature in one modality.

    Feed activation batches (B, K) in row order with :meth:`update`; rows are numbered by the
    ``start`` offset given with each batch. Equal activations are listed in row order (and at
    the cut the earlier rows are kept, except for ties inside one dense batch, where torch's
    topk decides which rows make the cut).
    """

    def __init__(self, n_features: int, top_m: int = 20):
        self.top_m = top_m
        self.top_val = torch.full((n_features, top_m), -torch.inf)
        self.top_idx = torch.full((n_features, top_m), -1, dtype=torch.int64)

    def update(self, acts: torch.Tensor | SparseCodes, start: int) -> None:
        """Add a (B, K) batch of activations whose first row has index ``start``; the batch's
        own top-m is found first (from sparse codes: among the entries that fire only), so the
        merge touches (K, 2m) values."""
        if isinstance(acts, SparseCodes):
            vals, idx = _sparse_top(acts, self.top_m)  # ties in row order already
        else:
            vals, idx = acts.topk(min(self.top_m, acts.shape[0]), dim=0)  # (m, K), sorted
            idx, by_row = idx.T.sort(dim=1)
            vals = vals.T.float().gather(1, by_row)
            vals, pos = vals.sort(dim=1, descending=True, stable=True)
            idx = idx.gather(1, pos)
        # both lists are sorted with ties in row order and every earlier row precedes every
        # new one, so a stable sort keeps ties in row order
        vals = torch.cat([self.top_val, vals], dim=1)
        idx = torch.cat([self.top_idx, idx + start], dim=1)
        vals, pos = vals.sort(dim=1, descending=True, stable=True)
        self.top_val, self.top_idx = vals[:, : self.top_m], idx.gather(1, pos[:, : self.top_m])

    def top(self) -> tuple[np.ndarray, np.ndarray]:
        """(K, m) row indices and values of the largest *positive* activations; -1 pads."""
        positive = self.top_val > 0
        idx = torch.where(positive, self.top_idx, -1)
        val = torch.where(positive, self.top_val, 0.0)
        return idx.numpy(), val.numpy()


def _sparse_top(acts: SparseCodes, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, m) values and batch rows of each feature's m largest entries, sorted (-inf / -1
    pad where a feature fires on fewer rows)."""
    order, offsets = acts.by_latent
    cols = acts.cols[order]
    rank = torch.arange(len(cols)) - offsets[cols]
    keep = rank < m
    cols, rank, order = cols[keep], rank[keep], order[keep]
    vals = torch.full((acts.n_features, m), -torch.inf)
    idx = torch.full((acts.n_features, m), -1, dtype=torch.int64)
    vals[cols, rank] = acts.vals[order]
    idx[cols, rank] = acts.rows[order]
    return vals, idx


class RatioStats:
    """Accumulate sum and count of A^V / (A^V + A^T) over pairs where either is active."""

    def __init__(self, n_features: int):
        self.sum = torch.zeros(n_features, dtype=torch.float64)
        self.count = torch.zeros(n_features, dtype=torch.int64)

    def update(
        self, acts_img: torch.Tensor | SparseCodes, acts_txt: torch.Tensor | SparseCodes
    ) -> None:
        if isinstance(acts_img, SparseCodes) and isinstance(acts_txt, SparseCodes):
            # 1 where only the image fires, a / (a + b) where both do, 0 where only the text
            a, b = acts_img, acts_txt
            i, j = matches(a, b)
            both = a.cols[i]
            ratio = a.vals[i].double() / (a.vals[i].double() + b.vals[j])
            self.sum += a.counts - torch.bincount(both, minlength=a.n_features)
            self.sum.index_add_(0, both, ratio)
            self.count += a.counts + b.counts - torch.bincount(both, minlength=a.n_features)
            return
        assert isinstance(acts_img, torch.Tensor) and isinstance(acts_txt, torch.Tensor)
        total = acts_img + acts_txt
        ratio = acts_img / total.masked_fill(total <= 0, 1.0)  # 0 where neither fires
        self.sum += column_sums(ratio).double()
        self.count += column_counts(total)

    @property
    def mean(self) -> np.ndarray:
        return (self.sum / self.count.clamp(min=1)).numpy()
