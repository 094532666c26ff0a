"""The modality gap of a store's embeddings (Liang et al. 2022, "Mind the Gap"), streamed.

On L2-normalised embeddings x_i (image) and y_i (text) of N pairs:

- ``centroid_distance`` = ||mean_i x_i - mean_i y_i|| (0: the modalities share a centre;
  about 0.8 for CLIP ViT-B/32 on COCO);
- ``matched_cosine`` = mean_i x_i . y_i, the cosine of an image with its own caption;
- ``unmatched_cosine`` = mean_{i != j} x_i . y_j = (S_x . S_y - sum_i x_i . y_i) / (N (N - 1)),
  with S the sums of the embeddings, so no N x N matrix is formed;
- ``matched_minus_unmatched``: how much closer a pair is than two random items.

One pass keeps the sums (O(d) memory); the Poisson bootstrap keeps them per replicate
(O(R d)): replicate r weighs pair i by w_ri ~ Poisson(1), and its unmatched mean is
sum_{i != j} w_ri w_rj x_i . y_j / (W_r^2 - sum_i w_ri^2). Intervals are 95% percentile
intervals over the replicates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._util import MonoscopeError

STATISTICS = ("centroid_distance", "matched_cosine", "unmatched_cosine", "matched_minus_unmatched")


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class GapAccumulator:
    """Streaming sums for the modality gap and its Poisson bootstrap (``replicates`` >= 0)."""

    def __init__(self, dim: int, replicates: int = 200, seed: int = 0):
        self.replicates = replicates
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        r = replicates + 1  # row 0: the point estimate (all weights 1)
        self.sum_x = np.zeros((r, dim))
        self.sum_y = np.zeros((r, dim))
        self.sum_w = np.zeros(r)  # sum_i w_i
        self.sum_w2 = np.zeros(r)  # sum_i w_i^2
        self.matched = np.zeros(r)  # sum_i w_i x_i . y_i
        self.matched_w2 = np.zeros(r)  # sum_i w_i^2 x_i . y_i

    def update(self, x_img: np.ndarray, x_txt: np.ndarray) -> None:
        """Add a batch of paired (B, d) embeddings (any norm; normalised here)."""
        x, y = _unit(x_img), _unit(x_txt)
        m = np.einsum("ij,ij->i", x, y)
        w = np.ones((self.replicates + 1, len(x)))
        w[1:] = self.rng.poisson(1.0, (self.replicates, len(x)))
        # one (R + 1, B) x (B, 2d + 2) product: torch's float64 GEMM is several times faster
        # here than numpy's (benchmarks/README.md)
        d = x.shape[1]
        z = np.concatenate([x, y, m[:, None], np.ones((len(x), 1))], axis=1)
        s = (torch.from_numpy(w) @ torch.from_numpy(z)).numpy()
        self.sum_x += s[:, :d]
        self.sum_y += s[:, d : 2 * d]
        self.matched += s[:, 2 * d]
        self.sum_w += s[:, 2 * d + 1]
        w2 = w * w
        self.sum_w2 += w2.sum(1)
        self.matched_w2 += w2 @ m

    def _statistics(self) -> dict[str, np.ndarray]:
        """Every statistic per row (row 0 the point estimate, then the replicates)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            w = self.sum_w[:, None]
            dist = np.linalg.norm(self.sum_x / w - self.sum_y / w, axis=1)
            matched = self.matched / self.sum_w
            off = self.sum_w**2 - self.sum_w2
            cross = np.einsum("rj,rj->r", self.sum_x, self.sum_y) - self.matched_w2
            unmatched = np.where(off > 0, cross / np.where(off > 0, off, 1), np.nan)
        return {
            "centroid_distance": dist,
            "matched_cosine": matched,
            "unmatched_cosine": unmatched,
            "matched_minus_unmatched": matched - unmatched,
        }

    def result(self) -> dict[str, Any]:
        """``{statistic: {"value", "ci"}, "n_pairs", "bootstrap": {...}}`` (JSON-ready)."""
        n = int(self.sum_w[0])
        if n < 2:
            raise MonoscopeError(f"the modality gap needs at least 2 pairs, not {n}")
        out: dict[str, Any] = {"n_pairs": n, "embeddings": "L2-normalised"}
        for name, values in self._statistics().items():
            entry: dict[str, Any] = {"value": float(values[0]), "ci": None}
            reps = values[1:][np.isfinite(values[1:])]
            if reps.size:
                entry["ci"] = [float(v) for v in np.percentile(reps, [2.5, 97.5])]
            out[name] = entry
        out["bootstrap"] = {
            "replicates": self.replicates,
            "kind": "poisson",
            "level": 0.95,
            "seed": self.seed,
        }
        return out


def modality_gap(
    store: Any, replicates: int = 200, seed: int = 0, batch_size: int = 8192
) -> dict[str, Any]:
    """The modality gap of a :class:`~monoscope.store.Store` in one pass over its shards."""
    acc = GapAccumulator(store.dim, replicates, seed)
    for shard in store.shards():
        for lo in range(0, len(shard.image), batch_size):
            acc.update(shard.image[lo : lo + batch_size], shard.text[lo : lo + batch_size])
    return acc.result()


def describe_gap(gap: dict[str, Any]) -> str:
    """One line: the centroid distance and the matched/unmatched cosines with their CIs."""

    def fmt(name: str) -> str:
        e = gap[name]
        ci = e.get("ci")
        return f"{e['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    return (
        f"modality gap: centroid distance {fmt('centroid_distance')}, "
        f"matched cosine {fmt('matched_cosine')}, unmatched cosine {fmt('unmatched_cosine')} "
        f"({gap['n_pairs']} pairs, 95% bootstrap intervals)"
    )
