"""``monoscope demo``: the whole pipeline on the embedded default (emoji pairs + pocket model).

Stages, each written under ``out``: ``store/``, ``featuremap/`` (TopK SAE), ``analysis/`` (with
word drivers), ``ablation/``, ``baselines/{identity,ncl}/`` (feature maps and analyses for the
comparison), ``compare/``, with ``studies=True`` ``studies/{gender,adversarial,steer}/``, and
``report.html``. ``baselines/sae-topk-centred/`` is the same SAE trained with ``center="mean"``
and ``baselines/identity-centred/`` the raw dimensions analysed with it (compare puts each
beside its plain counterpart), and the analysis gets vocabulary names. ``timings.json`` holds
the wall time of every stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypedDict

from ._util import resolve_device, write_json
from .config import DemoConfig

SAE_BATCH_SIZE = 512  # the demo SAE's size, k and epochs are DemoConfig's defaults
NCL_OPTS = {"latents": 512, "epochs": 30, "batch_size": 256}


class _Run(TypedDict):
    """The options every long stage takes."""

    seed: int
    device: str
    progress: bool


class _Common(_Run):
    overwrite: bool


def run_demo(
    out: str | Path = "runs/demo",
    *,
    latents: int = DemoConfig.latents,
    k: int = DemoConfig.k,
    epochs: int = DemoConfig.epochs,
    studies: bool = False,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> list[Path]:
    """Run every stage; returns the main paths (store, feature map, analysis, report)."""
    from .analysis.ablation import ablate
    from .analysis.analyze import analyze
    from .analysis.compare import compare
    from .analysis.vocabulary import vocabulary_names
    from .analysis.words import word_drivers
    from .data import emoji
    from .embed import embed, skipped_line
    from .encoders import load_encoder
    from .featuremaps import load_featuremap
    from .featuremaps.train import train_featuremap
    from .report import render_report
    from .store import Store

    out = Path(out)
    device = resolve_device(device)
    timings: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], Path]) -> Path:
        t0 = time.perf_counter()
        path = fn()
        timings[name] = round(time.perf_counter() - t0, 2)
        log(f"{name:>12}: {path}  ({timings[name]:.1f} s)")
        return path

    run: _Run = {"seed": seed, "device": device, "progress": progress}
    common: _Common = {**run, "overwrite": True}
    store = stage(
        "store",
        lambda: embed(
            "pocket", "emoji", out / "store", overwrite=True, device=device, progress=progress
        ),
    )

    if line := skipped_line(store):
        log(line)

    def train(method: str, where: Path, **kw: Any) -> Path:
        return train_featuremap(store, method, where, checkpoint_every=0, **kw, **common)

    sae_opts = {"latents": latents, "k": k, "epochs": epochs, "batch_size": SAE_BATCH_SIZE}
    fmap = stage("featuremap", lambda: train("sae-topk", out / "featuremap", **sae_opts))
    analysis = stage("analysis", lambda: analyze(store, fmap, out / "analysis", **common))
    encoder = load_encoder("pocket", device=device)
    stage(
        "words",
        lambda: word_drivers(
            Store(store), load_featuremap(fmap, device), analysis, encoder, device=device
        ),
    )
    stage(  # vocabulary names are computed on the CPU
        "vocabulary",
        lambda: vocabulary_names(Store(store), load_featuremap(fmap), analysis, encoder),
    )
    ablation = stage(
        "ablation",
        lambda: ablate(
            store,
            fmap,
            out / "ablation",
            analysis=analysis,
            model=encoder,
            label_keys=emoji.CLASS_LABELS,
            templates=emoji.CLASS_TEMPLATES,
            **common,
        ),
    )
    baselines = {"sae-topk": analysis}
    for name, opts in (("identity", {}), ("ncl", NCL_OPTS)):
        where = out / "baselines" / name
        bmap = stage(f"{name} map", partial(train, name, where / "featuremap", **opts))
        baselines[name] = stage(
            f"{name} analysis", partial(analyze, store, bmap, where / "analysis", **common)
        )
    baselines["identity centred"] = stage(
        "identity centred analysis",
        lambda: analyze(
            store,
            out / "baselines" / "identity" / "featuremap",
            out / "baselines" / "identity-centred" / "analysis",
            center="mean",
            **common,
        ),
    )
    centred = out / "baselines" / "sae-topk-centred"
    cmap = stage(
        "centred map",
        lambda: train("sae-topk", centred / "featuremap", center="mean", **sae_opts),
    )
    baselines["sae-topk centred"] = stage(
        "centred analysis", lambda: analyze(store, cmap, centred / "analysis", **common)
    )
    comparison = stage(
        "compare",
        lambda: compare(
            list(baselines.values()), out / "compare", names=list(baselines), overwrite=True
        ),
    )
    study_dirs: list[Path] = []
    if studies:
        from .studies import adversarial_study, gender_study, steer_study

        # the emoji labels' settings; the defaults are generic
        runs: tuple[tuple[str, Callable[..., Path], Mapping[str, Any]], ...] = (
            ("gender", gender_study, emoji.GENDER),
            ("adversarial", adversarial_study, emoji.ADVERSARIAL),
            ("steer", steer_study, {}),
        )
        for name, study, study_opts in runs:
            where = out / "studies" / name
            stage(
                name,
                partial(study, store, fmap, analysis, where, model=encoder, **study_opts, **run),
            )
            study_dirs.append(where)
    report = stage(
        "report",
        lambda: render_report(
            analysis, out / "report.html", ablation=ablation, compare=comparison, studies=study_dirs
        ),
    )
    write_json(out / "timings.json", timings)
    return [store, fmap, analysis, ablation, comparison, *study_dirs, report]
