"""The ``test`` grouping rule: a paired sign-flip permutation test accumulated with one matrix
product per batch (O(N * K * P) flops, O(K * P) memory whatever N is), and Benjamini-Hochberg
FDR control (METHOD.md §2). Per-feature intervals are in :mod:`monoscope.analysis.evidence`.
"""

from __future__ import annotations

import numpy as np
import torch

from .mds import Grouping
from .sparse import SparseCodes


class SignFlipTest:
    """Paired sign-flip permutation test of mean_n(A^V[n,k] - A^T[n,k]) = 0, per feature.

    Each permutation p draws a random sign per pair; its statistic for every feature is
    accumulated as ``signs @ (A^V - A^T)``, one matmul per batch.
    """

    def __init__(self, n_features: int, permutations: int = 1000, seed: int = 0):
        self.permutations = permutations
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.observed = torch.zeros(n_features, dtype=torch.float64)
        self.null = torch.zeros(permutations, n_features, dtype=torch.float64)

    def update(
        self, acts_img: torch.Tensor | SparseCodes, acts_txt: torch.Tensor | SparseCodes
    ) -> None:
        """Add a (B, K) batch of paired activations (dense, or both sparse: the product then
        runs over the entries that fire, O(B * k * P))."""
        b = acts_img.shape[0]
        signs = torch.randint(0, 2, (self.permutations, b), generator=self.gen) * 2 - 1
        if isinstance(acts_img, SparseCodes) and isinstance(acts_txt, SparseCodes):
            self.observed += acts_img.sums - acts_txt.sums
            s = signs.T.float().contiguous()
            self.null += (acts_img.weighted_rows(s) - acts_txt.weighted_rows(s)).T.double()
            return
        assert isinstance(acts_img, torch.Tensor) and isinstance(acts_txt, torch.Tensor)
        d = (acts_img - acts_txt).float()
        self.observed += d.sum(0, dtype=torch.float64)
        self.null += (signs.float() @ d).double()

    def p_values(self) -> np.ndarray:
        """Two-sided permutation p-values, (1 + #{|T_p| >= |T_obs|}) / (P + 1)."""
        extreme = (self.null.abs() >= self.observed.abs() * (1 - 1e-12)).sum(0)
        return ((1 + extreme.double()) / (self.permutations + 1)).numpy()


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values); NaN entries stay NaN and are not counted."""
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return q
    order = np.argsort(p[ok])
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    out = np.empty(m)
    out[order] = adjusted
    q[ok] = out
    return q


def group_by_test(
    mds: np.ndarray, q_values: np.ndarray, fdr: float = 0.05, min_effect: float = 0.1
) -> Grouping:
    """The ``test`` rule: ImgD / TextD where the paired difference is significant at FDR
    ``fdr`` and MDS (on the [0, 1] scale) is at least ``min_effect`` away from balance."""
    if not 0 < min_effect < 0.5:
        raise ValueError(f"min_effect must lie in (0, 0.5) (got {min_effect})")
    alive = np.isfinite(mds)
    sig = alive & (q_values <= fdr)
    groups = np.full(mds.shape, "dead", dtype=object)
    groups[alive] = "CrossD"
    groups[sig & (mds >= 0.5 + min_effect)] = "ImgD"
    groups[sig & (mds <= 0.5 - min_effect)] = "TextD"
    return Grouping(groups.astype(str), "test", 0.5 - min_effect, 0.5 + min_effect)
