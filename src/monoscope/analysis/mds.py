"""Modality Dominance Score (MDS) and the ImgD / TextD / CrossD grouping (METHOD.md §2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFINITIONS = ("ratio-of-means", "mean-of-ratios", "signed")
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


@dataclass(frozen=True)
class Grouping:
    """Feature groups and the thresholds that produced them (``low`` < CrossD < ``high``)."""

    groups: np.ndarray  # (K,) str: ImgD / TextD / CrossD / dead
    rule: str
    low: float
    high: float

    def counts(self) -> dict[str, int]:
        return {g: int((self.groups == g).sum()) for g in GROUPS}


def group_features(
    mds: np.ndarray,
    rule: str = "std",
    *,
    low: float = 0.25,
    high: float = 0.75,
    quantile: float = 0.2,
) -> Grouping:
    """Sort alive features (finite MDS) into ImgD (MDS > high), TextD (MDS < low), else CrossD.

    - ``std`` (default): high = mean + std, low = mean - std of MDS over alive features
      (population std).
    - ``fixed``: the given ``low``/``high``.
    - ``quantile``: the ``quantile`` and ``1 - quantile`` quantiles of alive MDS, inclusive
      (features tied at a quantile belong to the tail).
    """
    alive = np.isfinite(mds)
    values = mds[alive]
    if values.size == 0:
        raise ValueError("no alive features to group")
    if rule == "std":
        mu, sigma = float(values.mean()), float(values.std())
        low, high = mu - sigma, mu + sigma
    elif rule == "quantile":
        low, high = (float(q) for q in np.quantile(values, [quantile, 1 - quantile]))
    elif rule != "fixed":
        raise ValueError(f"unknown grouping rule {rule!r}; expected one of {RULES}")
    groups = np.full(mds.shape, "dead", dtype=object)
    groups[alive] = "CrossD"
    if rule == "quantile":  # inclusive, so that ties at an extreme (MDS exactly 1) all count
        groups[alive & (mds >= high)] = "ImgD"
        groups[alive & (mds <= low)] = "TextD"
    else:
        groups[alive & (mds > high)] = "ImgD"
        groups[alive & (mds < low)] = "TextD"
    return Grouping(groups.astype(str), rule, float(low), float(high))
