"""Per-feature activation histograms for the report's feature cards.

Each feature gets ``BINS`` equal-width bins over ``(0, hi]``, shared by its image and caption
histograms so the two can be compared at a glance; only non-zero activations are counted (how
often a feature is zero is its activation frequency). The exact counts come from the analysis
pass (``histograms.safetensors``, :mod:`monoscope.analysis.histograms`): its fine bins over
``(0, 2**e]`` are merged ``g`` at a time, ``g`` the smallest that fits the occupied fine bins
into ``BINS``, so ``hi`` lies within a quarter of the axis above the largest activation. For an
analysis made before those were written, the histograms of the top-m values it kept stand in
(and say so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..artefacts import Histograms as Exact

BINS = 12


@dataclass(frozen=True)
class Histograms:
    image: np.ndarray  # (K, bins) counts of non-zero image activations
    text: np.ndarray  # (K, bins) counts of non-zero caption activations
    hi: np.ndarray  # (K,) upper edge of the last bin
    source: str  # "store" (exact) or "top" (top-m values only)
    n_pairs: int  # pairs counted (store) or values kept per feature (top)


def upper_edges(top: dict[str, np.ndarray]) -> np.ndarray:
    """Each feature's largest activation in either modality (0 if it never fires)."""
    hi = np.zeros(top["image_val"].shape[0], np.float64)
    for m in ("image", "text"):
        if top[f"{m}_val"].shape[1]:
            hi = np.maximum(hi, np.nan_to_num(np.asarray(top[f"{m}_val"][:, 0], np.float64)))
    return hi


def _bin(values: np.ndarray, hi: np.ndarray, bins: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.floor(values / hi * bins)
    return np.clip(np.nan_to_num(b), 0, bins - 1).astype(np.int64)


def from_top(top: dict[str, np.ndarray], bins: int = BINS) -> Histograms:
    """Histograms of the top-m values the analysis kept (a stand-in for the exact ones)."""
    hi = upper_edges(top)
    out = {}
    k = len(hi)
    for m in ("image", "text"):
        idx = np.asarray(top[f"{m}_idx"])
        val = np.asarray(top[f"{m}_val"], np.float64)
        keep = (idx >= 0) & (val > 0)
        rows = np.nonzero(keep)[0]
        b = _bin(val[keep], hi[rows], bins)
        out[m] = np.bincount(rows * bins + b, minlength=k * bins).reshape(k, bins)
    return Histograms(out["image"], out["text"], hi, "top", int(top["image_idx"].shape[1]))


def from_exact(exact: Exact, bins: int = BINS) -> Histograms:
    """The analysis pass's fine histograms merged into ``bins`` bins per feature (exactly:
    each display bin is ``g`` whole fine bins)."""
    k, fine = exact.image.shape
    both = exact.image + exact.text
    used = np.where(both.any(1), fine - np.argmax(both[:, ::-1] > 0, axis=1), 1)  # (K,)
    group = -(-used // bins)  # fine bins per display bin
    target = np.minimum(np.arange(fine)[None, :] // group[:, None], bins - 1)  # (K, fine)
    flat = (np.arange(k)[:, None] * bins + target).ravel()
    merged = [
        np.bincount(flat, weights=c.ravel(), minlength=k * bins).reshape(k, bins).astype(np.int64)
        for c in (exact.image, exact.text)
    ]
    hi = exact.edge * group * bins / fine
    return Histograms(merged[0], merged[1], hi, "store", exact.n_pairs)


def activation_histograms(
    exact: Exact | None, top: dict[str, np.ndarray], bins: int = BINS
) -> Histograms:
    """The exact histograms when the analysis has them, else the top-m stand-in."""
    return from_exact(exact, bins) if exact is not None else from_top(top, bins)
