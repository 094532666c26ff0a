"""Uncertainty for MDS and groups: a streaming Poisson bootstrap over pairs, and a paired
sign-flip permutation test with Benjamini-Hochberg FDR control (METHOD.md §2).

Both are accumulated with matrix products over each batch of pairs, so a pass over the store
costs O(N * K * B) flops in dense matmuls and O(K * B) memory, whatever N is.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch

from .mds import GROUPS, Grouping, group_features, modality_dominance


class PoissonBootstrap:
    """Per-replicate weighted sums of image and text activations (Poisson(1) pair weights)."""

    def __init__(self, n_features: int, replicates: int, seed: int = 0):
        self.replicates = replicates
        self.gen = torch.Generator().manual_seed(seed)
        self.sum_img = torch.zeros(replicates, n_features, dtype=torch.float64)
        self.sum_txt = torch.zeros(replicates, n_features, dtype=torch.float64)
        self.weight = torch.zeros(replicates, dtype=torch.float64)

    def update(self, acts_img: torch.Tensor, acts_txt: torch.Tensor) -> None:
        w = torch.poisson(torch.ones(self.replicates, acts_img.shape[0]), generator=self.gen)
        self.sum_img += (w @ acts_img.float()).double()
        self.sum_txt += (w @ acts_txt.float()).double()
        self.weight += w.sum(1, dtype=torch.float64)

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """(B, K) replicate means of image and text activations."""
        n = self.weight.clamp(min=1)[:, None]
        return (self.sum_img / n).numpy(), (self.sum_txt / n).numpy()


@dataclass(frozen=True)
class BootstrapResult:
    mds_low: np.ndarray  # (K,) 2.5% percentile of replicate MDS
    mds_high: np.ndarray  # (K,) 97.5% percentile
    stability: np.ndarray  # (K,) share of replicates in which the feature keeps its group
    group_ci: dict[str, tuple[float, float]]  # 95% CI of each group's size
    replicates: int


def summarise_bootstrap(
    boot: PoissonBootstrap,
    point: Grouping,
    point_mds: np.ndarray,
    definition: str = "ratio-of-means",
    **rule_options: float,
) -> BootstrapResult:
    """CIs of MDS and group sizes, and group stability, re-applying the grouping rule of
    ``point`` to every replicate (so the thresholds vary with the data, as they would). For
    the ``test`` rule, replicates re-apply its effect-size thresholds without re-testing.
    An alive feature silent in a replicate keeps its point MDS (``point_mds``) there. MDS CIs
    are percentile intervals; group-size CIs are normal intervals (:func:`normal_ci`).

    The mean-of-ratios definition is bootstrapped through its ratio-of-means counterpart; its
    CIs are therefore approximate.
    """
    mu_img, mu_txt = boot.means()
    boot_def = "ratio-of-means" if definition == "mean-of-ratios" else definition
    alive = point.groups != "dead"
    mds = np.stack(
        [modality_dominance(i, t, boot_def) for i, t in zip(mu_img, mu_txt, strict=True)]
    )
    with warnings.catch_warnings():  # a feature silent in every replicate keeps a NaN CI
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(np.where(alive, mds, np.nan), [2.5, 97.5], axis=0)
    kept = np.zeros(len(point.groups))
    used = 0
    sizes = {g: [] for g in GROUPS}
    rule = "fixed" if point.rule == "test" else point.rule
    for row in mds:
        defined = alive & np.isfinite(row)
        if not defined.any():
            continue
        # A rare feature may not fire at all in a replicate, which then says nothing about it:
        # it keeps its point MDS for the group sizes, but does not count as stable.
        filled = np.where(alive & ~defined, point_mds, row)
        rep = group_features(filled, rule, **_rule_kwargs(point, rule_options))
        kept += (rep.groups == point.groups) & defined
        used += 1
        for g, c in rep.counts().items():
            sizes[g].append(c)
    counts = point.counts()
    group_ci = {g: normal_ci(np.array(v), counts[g]) for g, v in sizes.items()}
    return BootstrapResult(low, high, kept / max(used, 1), group_ci, used)


def normal_ci(replicates: np.ndarray, point: float, level: float = 0.95) -> tuple[float, float]:
    """The normal bootstrap interval, point +- z * (standard deviation of the replicates).

    Used for group sizes: a count above a threshold is median-biased under resampling when the
    MDS density near the threshold is asymmetric (more features just below it than above), so
    percentile intervals of the replicate counts can miss the point estimate altogether, and
    bias-corrected ones degenerate when almost every replicate lies on one side.
    """
    z = NormalDist().inv_cdf(0.5 + level / 2)
    half = z * float(np.std(replicates, ddof=1)) if len(replicates) > 1 else 0.0
    return (point - half, point + half)


def _rule_kwargs(point: Grouping, options: dict[str, float]) -> dict[str, float]:
    if point.rule in ("fixed", "test"):
        return {"low": point.low, "high": point.high}
    return {k: v for k, v in options.items() if k == "quantile"}


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

    def update(self, acts_img: torch.Tensor, acts_txt: torch.Tensor) -> None:
        d = (acts_img - acts_txt).float()
        signs = torch.randint(0, 2, (self.permutations, d.shape[0]), generator=self.gen) * 2 - 1
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
    mds: np.ndarray,
    q_values: np.ndarray,
    fdr: float = 0.05,
    min_effect: float = 0.1,
    signed: bool = False,
) -> Grouping:
    """The ``test`` rule: ImgD / TextD where the paired difference is significant at FDR
    ``fdr`` and MDS is at least ``min_effect`` away from balance (0.5, or 0 when ``signed``)."""
    centre = 0.0 if signed else 0.5
    alive = np.isfinite(mds)
    sig = alive & (q_values <= fdr)
    groups = np.full(mds.shape, "dead", dtype=object)
    groups[alive] = "CrossD"
    groups[sig & (mds >= centre + min_effect)] = "ImgD"
    groups[sig & (mds <= centre - min_effect)] = "TextD"
    return Grouping(groups.astype(str), "test", centre - min_effect, centre + min_effect)
