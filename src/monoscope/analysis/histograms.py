"""Exact per-feature activation histograms, accumulated in the analysis pass.

Each feature gets ``FINE_BINS`` equal-width bins over ``(0, 2**e]``, where ``2**e`` is the
smallest power of two at or above its largest activation in either modality (so its image and
caption histograms share one axis). The largest activation is not known until the pass ends:
when a batch raises a feature's ``e`` by ``s``, every ``2**s`` adjacent bins merge into one
(old bin ``i`` becomes bin ``i >> s``), which is exact because each old bin lies inside one new
bin. Bins are left-open, ``(i w, (i + 1) w]`` with ``w = 2**e / FINE_BINS`` a power of two, so
``ceil(v / w) - 1`` is computed without rounding. Only non-zero activations are counted (how
often a feature is zero is its activation frequency). Memory: O(K * FINE_BINS).

Written as ``histograms.safetensors`` (docs/formats.md); read with
:meth:`monoscope.artefacts.Analysis.histograms`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..artefacts import FINE_BINS, HISTOGRAMS_VERSION
from ..integrity import write_bytes_hashed
from .sparse import SparseCodes

UNSEEN = -1000  # the exponent of a feature that has not fired yet (below any float32's)

Codes = torch.Tensor | SparseCodes


def _nonzeros(codes: Codes) -> tuple[torch.Tensor, torch.Tensor]:
    """(feature index, value) of every positive activation of dense (B, K) codes or of
    :class:`SparseCodes`."""
    if isinstance(codes, SparseCodes):
        keep = codes.vals > 0
        return codes.cols[keep], codes.vals[keep].float()
    mask = codes > 0
    return torch.nonzero(mask, as_tuple=True)[1], codes[mask].float()


class HistogramAccumulator:
    """Streaming exact histograms of K features' non-zero image and caption activations."""

    def __init__(self, n_features: int, bins: int = FINE_BINS) -> None:
        self.k, self.bins, self.n = n_features, bins, 0
        self.exponent = torch.full((n_features,), UNSEEN, dtype=torch.int64)
        self.counts = torch.zeros((2, n_features, bins), dtype=torch.int64)

    def update(self, image: Codes, text: Codes) -> None:
        """Count one batch of paired codes (dense (B, K) tensors or :class:`SparseCodes`)."""
        parts = [_nonzeros(image), _nonzeros(text)]
        self.n += image.shape[0]
        cols = torch.cat([c for c, _ in parts])
        if not cols.numel():
            return
        top = torch.zeros(self.k).scatter_reduce_(0, cols, torch.cat([v for _, v in parts]), "amax")
        mant, exp = torch.frexp(top)  # top = mant * 2**exp, mant in [0.5, 1)
        needed = torch.where(top > 0, exp.long() - (mant == 0.5).long(), UNSEEN)
        self._grow(torch.maximum(self.exponent, needed))
        width = self.exponent - int(np.log2(self.bins))  # log2 of each feature's bin width
        for m, (c, v) in enumerate(parts):
            scaled = v * torch.exp2(-width[c].float())  # exact: a power-of-two scale
            b = torch.ceil(scaled).long().sub_(1).clamp_(0, self.bins - 1)
            flat = torch.bincount(c * self.bins + b, minlength=self.k * self.bins)
            self.counts[m] += flat.view(self.k, self.bins)

    def _grow(self, exponent: torch.Tensor) -> None:
        """Raise the upper edges to ``2**exponent``, merging bins exactly."""
        grown = torch.nonzero(exponent > self.exponent).squeeze(1)
        if grown.numel():
            shift = (exponent[grown] - self.exponent[grown]).clamp_(max=62)
            target = torch.arange(self.bins).unsqueeze(0) >> shift.unsqueeze(1)  # (G, bins)
            old = self.counts[:, grown]
            merged = torch.zeros_like(old).scatter_add_(2, target.expand_as(old), old)
            self.counts[:, grown] = merged
            self.exponent = exponent

    def save(self, path: Path) -> Path:
        """Write ``histograms.safetensors`` atomically."""
        from safetensors.numpy import save

        tensors = {
            "image": self.counts[0].numpy(),
            "text": self.counts[1].numpy(),
            "exponent": self.exponent.numpy(),
        }
        meta = {"format_version": str(HISTOGRAMS_VERSION), "n_pairs": str(self.n)}
        write_bytes_hashed(path, save(tensors, metadata=meta))
        return path
