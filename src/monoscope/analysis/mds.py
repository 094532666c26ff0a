"""Modality Dominance Score (MDS) and the threshold rules that group features (METHOD.md §2).

Thresholds are always in MDS units and inside [0, 1]. The default rule, ``evidence``
(:mod:`monoscope.analysis.evidence`), decides each feature from its own interval; the rules
here (``std``, ``fixed``, ``quantile``) group point estimates and are kept for reproduction and
comparison.
"""

from __future__ import annotations

import typing
import warnings
from dataclasses import dataclass

import numpy as np

from ..config import Definition

DEFINITIONS: tuple[str, ...] = typing.get_args(Definition)
RULES = ("std", "fixed", "quantile")
GROUPS = ("ImgD", "TextD", "CrossD")


def alive_mask(mu_img: np.ndarray, mu_txt: np.ndarray) -> np.ndarray:
    """A feature is alive if its mean activation is positive in some modality."""
    return (mu_img > 0) | (mu_txt > 0)


def modality_dominance(
    mu_img: np.ndarray,
    mu_txt: np.ndarray,
    definition: str = "ratio-of-means",
    mean_ratio: np.ndarray | None = None,
) -> np.ndarray:
    """MDS per feature; NaN for dead features.

    - ``ratio-of-means``: mu_img / (mu_img + mu_txt), in [0, 1] (1 = image only).
    - ``mean-of-ratios``: the mean of A^V / (A^V + A^T) over pairs where the feature fires in
      either modality (pass it as ``mean_ratio``), in [0, 1].
    - ``signed``: (mu_img - mu_txt) / (mu_img + mu_txt), in [-1, 1].
    """
    alive = alive_mask(mu_img, mu_txt)
    total = np.where(alive, mu_img + mu_txt, 1.0)
    if definition == "ratio-of-means":
        mds = mu_img / total
    elif definition == "signed":
        mds = (mu_img - mu_txt) / total
    elif definition == "mean-of-ratios":
        if mean_ratio is None:
            raise ValueError("mean-of-ratios needs the per-feature mean ratio")
        mds = np.asarray(mean_ratio, dtype=np.float64)
    else:
        raise ValueError(f"unknown MDS definition {definition!r}; expected one of {DEFINITIONS}")
    return np.where(alive, mds, np.nan)


def unit_scale(mds: np.ndarray, definition: str) -> np.ndarray:
    """MDS on the [0, 1] scale the thresholds use (``signed`` s maps to (s + 1) / 2)."""
    return (mds + 1) / 2 if definition == "signed" else mds


def check_thresholds(low: float, high: float) -> None:
    """Thresholds must satisfy 0 <= low < high <= 1."""
    if not (np.isfinite(low) and np.isfinite(high) and 0 <= low < high <= 1):
        raise ValueError(
            f"thresholds must satisfy 0 <= low < high <= 1 (got low {low}, high {high})"
        )


def is_bimodal(mds: np.ndarray, edge: float = 0.05, share: float = 0.25) -> bool:
    """Whether at least ``share`` of the alive MDS values lie within ``edge`` of 0 and at least
    ``share`` within ``edge`` of 1 (the pile-up a modality gap produces), or one pile alone
    holds at least ``2 * share``."""
    v = mds[np.isfinite(mds)]
    if v.size == 0:
        return False
    lo, hi = float((v <= edge).mean()), float((v >= 1 - edge).mean())
    return (lo >= share and hi >= share) or max(lo, hi) >= 2 * share


@dataclass(frozen=True)
class Grouping:
    """Feature groups and the thresholds that produced them (``low`` < CrossD < ``high``)."""

    groups: np.ndarray  # (K,) str: ImgD / TextD / CrossD / undetermined / rare / dead
    rule: str
    low: float
    high: float
    warnings: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        return {g: int((self.groups == g).sum()) for g in GROUPS}


def group_features(
    mds: np.ndarray,
    rule: str = "std",
    *,
    low: float = 0.25,
    high: float = 0.75,
    quantile: float = 0.2,
    warn: bool = True,
) -> Grouping:
    """Sort alive features (finite MDS in [0, 1]) into ImgD (MDS > high), TextD (MDS < low),
    else CrossD, by point estimate.

    - ``std``: high = mean + std, low = mean - std of MDS over alive features (population std),
      clipped to [0, 1] — the paper's rule, relative to the data: it labels features even where
      none is modality-specific, and it breaks when MDS piles up at 0 and 1 (a modality gap);
      a warning says so when the MDS distribution is bimodal or a threshold had to be clipped.
    - ``fixed``: the given ``low``/``high`` (0 <= low < high <= 1).
    - ``quantile``: the ``quantile`` and ``1 - quantile`` quantiles of alive MDS (0 < quantile
      < 0.5), inclusive (features tied at a quantile belong to the tail).
    """
    alive = np.isfinite(mds)
    values = mds[alive]
    if values.size == 0:
        raise ValueError("no alive features to group")
    notes: list[str] = []
    if rule == "std":
        mu, sigma = float(values.mean()), float(values.std())
        low, high = mu - sigma, mu + sigma
        if low < 0 or high > 1:
            notes.append(
                f"the std rule's thresholds (mean {mu:.3f} -+ std {sigma:.3f}) left [0, 1] and "
                "were clipped to it"
            )
        low, high = min(max(low, 0.0), 1.0), min(max(high, 0.0), 1.0)
        if is_bimodal(values):
            notes.append(
                "MDS piles up at 0 and 1 (a modality gap): mean +- std does not separate "
                "groups here; the evidence rule does"
            )
    elif rule == "quantile":
        if not 0 < quantile < 0.5:
            raise ValueError(f"quantile must lie in (0, 0.5) (got {quantile})")
        low, high = (float(q) for q in np.quantile(values, [quantile, 1 - quantile]))
    elif rule == "fixed":
        check_thresholds(low, high)
    else:
        raise ValueError(f"unknown grouping rule {rule!r}; expected one of {RULES}")
    groups = np.full(mds.shape, "dead", dtype=object)
    groups[alive] = "CrossD"
    if rule == "quantile":  # inclusive, so that ties at an extreme (MDS exactly 1) all count
        groups[alive & (mds >= high)] = "ImgD"
        groups[alive & (mds <= low)] = "TextD"
    else:
        groups[alive & (mds > high)] = "ImgD"
        groups[alive & (mds < low)] = "TextD"
    if warn:
        for note in notes:
            warnings.warn(note, stacklevel=2)
    return Grouping(groups.astype(str), rule, float(low), float(high), tuple(notes))
