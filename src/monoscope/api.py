"""The public Python API: one function per pipeline stage (the CLI is a thin layer over it).

Example::

    from monoscope import api

    store = api.embed("pocket", "emoji", "runs/x/store")
    fmap = api.train(store, "sae-topk", "runs/x/featuremap", latents=1024, k=16)
    analysis = api.analyze(store, fmap, "runs/x/analysis")
    api.report(analysis, "runs/x/report.html")
"""

from __future__ import annotations

from .analysis.analyze import analyze
from .embed import embed
from .featuremaps import load_featuremap
from .featuremaps.train import train_featuremap as train
from .interop import export_sae, import_sae
from .report import render_report as report
from .store import Store

__all__ = ["Store", "analyze", "embed", "load_featuremap", "report", "train"]
__all__ += ["export_sae", "import_sae"]
