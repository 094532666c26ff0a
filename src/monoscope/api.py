"""The public Python API: one function per pipeline stage (the CLI is a thin layer over it).

Example::

    from monoscope import api

    store = api.embed("pocket", "emoji", "runs/x/store")
    fmap = api.train(store, "sae-topk", "runs/x/featuremap", latents=1024, k=16)
    analysis = api.analyze(store, fmap, "runs/x/analysis")
    api.report(analysis, "runs/x/report.html")
"""

from __future__ import annotations

from .analysis.agreement import agreement as agree
from .analysis.analyze import analyze
from .analysis.gap import modality_gap
from .analysis.vocabulary import vocabulary_names
from .embed import embed
from .featuremaps import load_featuremap
from .featuremaps.train import train_featuremap as train
from .interop import export_sae, import_sae
from .report import render_report as report
from .store import Store

__all__ = [
    "Store",
    "agree",
    "analyze",
    "embed",
    "export_sae",
    "import_sae",
    "load_featuremap",
    "modality_gap",
    "report",
    "train",
    "vocabulary_names",
]
