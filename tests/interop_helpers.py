"""Shared pieces of the interop tests: random inputs, comparisons, tolerances."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

from monoscope.featuremaps import load_featuremap
from monoscope.interop import import_sae

# Imported maps compute the source's own formula; where a bias is folded (b_dec into b_enc,
# decoder norms into the encoder) float32 rounding differs: the bound is relative to the
# largest reference value (or 1).
TOL = 1e-5


def randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Random weights in every floating parameter (so that biases are non-zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point():
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


def inputs(d: int, n: int = 256, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def imported(fmt: str, src: Path, tmp: Path):
    out = import_sae(fmt, src, tmp / f"fm-{fmt}", overwrite=True)
    return load_featuremap(out)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).abs().max())


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """max |a - b| <= TOL * max(1, max |b|)."""
    return max_diff(a, b) <= TOL * max(1.0, float(b.detach().abs().max()))


def require(module: str) -> ModuleType:
    """``pytest.importorskip``, except that with MONOSCOPE_REQUIRE_EXTRAS=1 (the environment
    ``make test-openclip`` builds for these libraries) a missing module fails the test."""
    if os.environ.get("MONOSCOPE_REQUIRE_EXTRAS") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)
