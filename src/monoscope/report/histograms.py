"""Per-feature activation histograms for the report's feature cards.

Each feature gets ``bins`` equal-width bins over ``(0, hi]`` where ``hi`` is its largest
activation in either modality (the first column of the analysis' top-m values), so its image
and caption histograms share one axis and can be compared at a glance. Only non-zero
activations are counted; how often a feature is zero is its activation frequency.

The exact histograms need one pass of (a sample of) the store through the feature map; cost
grows with the number of non-zero activations. Without the store or the feature map, the
histograms of the top-m values kept by the analysis stand in (and say so).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

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


def from_store(
    summary: dict[str, Any],
    top: dict[str, np.ndarray],
    bins: int = BINS,
    max_pairs: int = 200_000,
    batch_size: int = 4096,
) -> Histograms | None:
    """Exact histograms over the store (or an even sample of its shards, about ``max_pairs``
    pairs), or None when the store or feature map named in ``summary`` cannot be used."""
    store_path, fmap_path = summary.get("store"), summary.get("featuremap")
    if not store_path or not fmap_path:
        return None
    if not (Path(store_path) / "manifest.json").is_file():
        return None
    if not (Path(fmap_path) / "config.json").is_file():
        return None
    try:
        import torch

        from ..featuremaps import load_featuremap
        from ..store import Store

        store = Store(store_path)
        fmap = load_featuremap(fmap_path)
    except Exception as e:  # the report must render without them
        log.warning("activation histograms from the top-m values only: %s", e)
        return None
    hi = upper_edges(top)
    k = len(hi)
    if fmap.n_features != k or store.dim != fmap.dim:
        log.warning("feature map and analysis disagree; histograms from the top-m values only")
        return None
    step = max(1, math.ceil(store.count / max_pairs)) if store.count else 1
    hi_t = torch.from_numpy(np.where(hi > 0, hi, 1.0)).float()
    counts = {m: torch.zeros(k * bins, dtype=torch.int64) for m in ("image", "text")}
    seen = 0
    with torch.inference_mode():
        for i in range(0, store.n_shards, step):
            shard = store.shard(i)
            for m in ("image", "text"):
                arr = getattr(shard, m)
                for lo in range(0, len(arr), batch_size):
                    x = torch.from_numpy(np.array(arr[lo : lo + batch_size], dtype=np.float32))
                    a = fmap.encode_modality(x, m).float()
                    rows, cols = torch.nonzero(a > 0, as_tuple=True)
                    b = (a[rows, cols] / hi_t[cols] * bins).long().clamp_(0, bins - 1)
                    counts[m] += torch.bincount(cols * bins + b, minlength=k * bins)
            seen += len(shard.image)
    return Histograms(
        counts["image"].reshape(k, bins).numpy(),
        counts["text"].reshape(k, bins).numpy(),
        hi,
        "store",
        seen,
    )


def activation_histograms(
    summary: dict[str, Any], top: dict[str, np.ndarray], exact: bool = True, bins: int = BINS
) -> Histograms:
    """Exact histograms when ``exact`` and the store and feature map are usable; else top-m."""
    hist = from_store(summary, top, bins) if exact else None
    return hist if hist is not None else from_top(top, bins)
