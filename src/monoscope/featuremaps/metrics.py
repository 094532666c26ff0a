"""Quality metrics of a feature map on a store (one definition each; docs/featuremaps.md).

- **FVU** (fraction of variance unexplained) of a set of embeddings X with reconstructions X^:
  ``sum_n ||x_n - x^_n||^2 / sum_n ||x_n - mean(X)||^2``, on the unscaled inputs, about the mean
  of the evaluated set (per modality: that modality's mean; overall: the mean of both together).
- **cosine**: mean over samples of cos(x_n, x^_n).
- **L0**: mean number of non-zero codes per sample.
- **never_active_fraction**: share of features with no non-zero code on the evaluated samples.
- **retrieval recall@1** (image->text and text->image) over paired rows, by cosine similarity,
  in feature space (codes) and in the original embedding space; a query counts as correct only
  if its partner scores strictly higher than every other candidate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..store import MODALITIES, Store
from .base import FeatureMap


def fvu(x: np.ndarray | torch.Tensor, x_hat: np.ndarray | torch.Tensor) -> float:
    """Fraction of variance unexplained: sum ||x - x^||^2 / sum ||x - mean(x)||^2 (rows)."""
    x = np.asarray(x, dtype=np.float64)
    x_hat = np.asarray(x_hat, dtype=np.float64)
    return float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


class _Sums:
    """Streaming sums for FVU, cosine and L0 of one group of samples (float64)."""

    def __init__(self, dim: int, n_features: int):
        self.n = 0
        self.sum_x = np.zeros(dim)
        self.sum_sq = 0.0
        self.err = 0.0
        self.cos = 0.0
        self.l0 = 0.0
        self.fired = np.zeros(n_features, dtype=bool)

    def add(self, x: torch.Tensor, z: torch.Tensor, x_hat: torch.Tensor | None) -> None:
        x64 = x.double()
        self.n += x.shape[0]
        self.sum_x += x64.sum(0).cpu().numpy()
        self.sum_sq += float(x64.pow(2).sum())
        active = z > 0
        self.l0 += float(active.sum())
        self.fired |= active.any(0).cpu().numpy()
        if x_hat is not None:
            self.err += float((x64 - x_hat.double()).pow(2).sum())
            self.cos += float(F.cosine_similarity(x, x_hat, dim=1).double().sum())

    def merged(self, other: _Sums) -> _Sums:
        out = _Sums(len(self.sum_x), len(self.fired))
        for name in ("n", "sum_x", "sum_sq", "err", "cos", "l0"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.fired = self.fired | other.fired
        return out

    def result(self, recon: bool) -> dict[str, float]:
        n = max(self.n, 1)
        out = {"n": self.n, "l0": self.l0 / n}
        if recon:
            mean = self.sum_x / n
            variance = self.sum_sq - n * float(mean @ mean)
            out["fvu"] = self.err / variance if variance > 0 else float("nan")
            out["mse"] = self.err / (n * len(self.sum_x))
            out["cosine"] = self.cos / n
        return out


def retrieval_ranks(
    a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a->b, b->a) rank of each query's own pair among all candidates by cosine similarity:
    the number of *other* candidates scored at least as high (so a tie is a miss, and rank 0
    means the pair is strictly first). Rows of ``a`` and ``b`` are paired; computed in chunks of
    queries, so memory is O(chunk * N)."""
    a = F.normalize(torch.as_tensor(a, dtype=torch.float32), dim=1)
    b = F.normalize(torch.as_tensor(b, dtype=torch.float32), dim=1)
    ranks = []
    for q, c in ((a, b), (b, a)):
        out = torch.empty(q.shape[0], dtype=torch.int64)
        for lo in range(0, q.shape[0], chunk):
            sims = q[lo : lo + chunk] @ c.T
            rows = torch.arange(sims.shape[0])
            own = sims[rows, rows + lo].clone()
            sims[rows, rows + lo] = -torch.inf
            out[lo : lo + chunk] = (sims >= own[:, None]).sum(1)
        ranks.append(out)
    return ranks[0], ranks[1]


def recall_at_1(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """(a->b, b->a) recall@1 of paired rows by cosine similarity; ties count as misses."""
    i2t, t2i = retrieval_ranks(a, b)
    n = max(len(i2t), 1)
    return float((i2t == 0).sum()) / n, float((t2i == 0).sum()) / n


@torch.no_grad()
def evaluate_featuremap(
    fmap: FeatureMap,
    store: Store,
    *,
    batch_size: int = 4096,
    retrieval_pairs: int = 2000,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Reconstruction metrics per modality and overall (maps with a decoder), L0, never-active
    fraction, and retrieval recall@1 on up to ``retrieval_pairs`` pairs (a seeded sample)."""
    fmap = fmap.to(device).eval()
    recon = fmap.has_decoder
    sums = {m: _Sums(store.dim, fmap.n_features) for m in MODALITIES}
    n = store.count
    keep = np.sort(np.random.default_rng(seed).permutation(n)[: min(n, retrieval_pairs)])
    picked: dict[str, dict[str, list[np.ndarray]]] = {
        space: {m: [] for m in MODALITIES} for space in ("feature", "original")
    }
    for shard in store.shards():
        rows = keep[(keep >= shard.start) & (keep < shard.start + len(shard.image))] - shard.start
        for m in MODALITIES:
            arr = getattr(shard, m)
            for lo in range(0, len(arr), batch_size):
                x = torch.from_numpy(np.array(arr[lo : lo + batch_size], dtype=np.float32))
                x = x.to(device)
                z = fmap.encode(x, m)
                x_hat = fmap.decode(z, m) if recon else None
                sums[m].add(x, z, x_hat)
                sel = rows[(rows >= lo) & (rows < lo + batch_size)] - lo
                picked["feature"][m].append(z[sel].cpu().numpy())
                picked["original"][m].append(x[sel].cpu().numpy())
    result: dict[str, Any] = {m: sums[m].result(recon) for m in MODALITIES}
    both = sums["image"].merged(sums["text"])
    result["overall"] = both.result(recon)
    result["never_active_fraction"] = float(1 - both.fired.mean())
    retrieval: dict[str, Any] = {"pairs": len(keep)}
    for space, arrays in picked.items():
        i2t, t2i = recall_at_1(np.concatenate(arrays["image"]), np.concatenate(arrays["text"]))
        retrieval[space] = {"i2t_r1": i2t, "t2i_r1": t2i}
    result["retrieval"] = retrieval
    return result
