"""Streaming per-feature statistics: memory is O(K * m), independent of the number of samples."""

from __future__ import annotations

import numpy as np
import torch


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
    ``start`` offset given with each batch.
    """

    def __init__(self, n_features: int, top_m: int = 20):
        self.top_m = top_m
        self.top_val = torch.full((n_features, top_m), -torch.inf)
        self.top_idx = torch.full((n_features, top_m), -1, dtype=torch.int64)

    def update(self, acts: torch.Tensor, start: int) -> None:
        """Add a (B, K) batch of activations whose first row has index ``start``; the batch's
        own top-m is found first, so the merge touches (K, 2m) values."""
        b = acts.shape[0]
        vals, idx = acts.topk(min(self.top_m, b), dim=0)  # (m, K), sorted
        vals = torch.cat([self.top_val, vals.T.float()], dim=1)
        idx = torch.cat([self.top_idx, idx.T + start], dim=1)
        self.top_val, pos = vals.topk(self.top_m, dim=1)
        self.top_idx = idx.gather(1, pos)

    def top(self) -> tuple[np.ndarray, np.ndarray]:
        """(K, m) row indices and values of the largest *positive* activations; -1 pads."""
        positive = self.top_val > 0
        idx = torch.where(positive, self.top_idx, -1)
        val = torch.where(positive, self.top_val, 0.0)
        return idx.numpy(), val.numpy()


class RatioStats:
    """Accumulate sum and count of A^V / (A^V + A^T) over pairs where either is active."""

    def __init__(self, n_features: int):
        self.sum = torch.zeros(n_features, dtype=torch.float64)
        self.count = torch.zeros(n_features, dtype=torch.int64)

    def update(self, acts_img: torch.Tensor, acts_txt: torch.Tensor) -> None:
        total = acts_img + acts_txt
        ratio = acts_img / total.masked_fill(total <= 0, 1.0)  # 0 where neither fires
        self.sum += column_sums(ratio).double()
        self.count += column_counts(total)

    @property
    def mean(self) -> np.ndarray:
        return (self.sum / self.count.clamp(min=1)).numpy()
