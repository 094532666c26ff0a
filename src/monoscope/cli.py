"""Command-line interface: one subcommand per pipeline stage, each a thin layer over ``api``.

The options of every subcommand are generated from its config (:mod:`monoscope.config`) by
:mod:`monoscope.cli_config`; a runner turns the parsed config into the stage call.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import config as C
from ._util import MonoscopeError, read_json
from .cli_config import add_kind_options, command, config_of, group, kind_config_of
from .locks import output_lock
from .studies.cli import add_parsers as add_study_parsers

# Formats of `import-sae`/`export-sae` and the trainer's methods live in monoscope.config so
# that `--help` does not import torch (tests keep them equal to the modules that implement them).
METHODS = C.METHODS
SAE_IMPORT_FORMATS = typing.get_args(C.SaeImportFormat)
SAE_EXPORT_FORMATS = typing.get_args(C.SaeExportFormat)


def _run_embed(c: C.EmbedConfig, a: argparse.Namespace) -> list[Path]:
    from .data import open_source
    from .embed import embed, skipped_line

    source = open_source(c.data, image_column=c.image_column, caption_column=c.caption_column)
    out = [embed(c.model, source, c.out, **c.keywords("model", "data", "out", *_COLUMNS))]
    if os.environ.get("RANK", "0") != "0":
        return out
    if line := skipped_line(out[0]):
        print(line, file=sys.stderr)
    return out


_COLUMNS = ("image_column", "caption_column")


def _run_train(c: C.TrainConfig, a: argparse.Namespace) -> list[Path]:
    from .featuremaps.train import train_featuremap

    kind = kind_config_of(a, c.method)
    return [train_featuremap(c.store, c.method, c.out, **c.keywords(*_PATHS), **kind.keywords())]


_PATHS = ("store", "method", "out")


def _run_analyze(c: C.AnalyzeCommand, a: argparse.Namespace) -> list[Path]:
    from .analysis.analyze import analyze

    fields = c.keywords("store", "featuremap", "out", "words", "model", "vocab")
    out = analyze(c.store, c.featuremap, c.out, **fields)
    for note in read_json(out / "summary.json").get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    written = [out / "features.csv", out / "summary.json", out / "top"]
    if c.words:
        written.append(_words(c, out))
    if c.vocab is not None:
        written.append(_vocab(c, out))
    return written


def _vocab(c: C.AnalyzeCommand, analysis: Path) -> Path:
    from ._util import resolve_device
    from .analysis.vocabulary import vocabulary_names
    from .encoders import encoder_spec, load_encoder
    from .featuremaps import load_featuremap
    from .featuremaps.center import center_featuremap
    from .store import Store

    device = resolve_device(c.device)
    store = Store(c.store)
    try:
        spec = c.model or encoder_spec(store.manifest["model"])
    except ValueError as e:
        raise MonoscopeError(str(e)) from None
    encoder = load_encoder(spec, device=device)
    fmap = center_featuremap(load_featuremap(c.featuremap), store, c.center)
    return vocabulary_names(store, fmap, analysis, encoder, c.vocab or None)


def _words(c: C.AnalyzeCommand, analysis: Path) -> Path:
    from ._util import resolve_device
    from .analysis.words import word_drivers
    from .encoders import encoder_spec, load_encoder
    from .featuremaps import load_featuremap
    from .featuremaps.center import center_featuremap
    from .store import Store

    device = resolve_device(c.device)
    store = Store(c.store)
    encoder = load_encoder(c.model or encoder_spec(store.manifest["model"]), device=device)
    fmap = center_featuremap(load_featuremap(c.featuremap, device), store, c.center)
    return word_drivers(store, fmap, analysis, encoder, device=device)


def _run_ablate(c: C.AblateConfig, a: argparse.Namespace) -> list[Path]:
    from .analysis.ablation import ablate

    out = ablate(c.store, c.featuremap, c.out, **c.keywords("store", "featuremap", "out"))
    left = read_json(out / "ablation.json").get("left_out") or {}
    if any(left.values()):
        print(
            "removed only features with a confident verdict; left in: "
            + ", ".join(f"{n:,} {v}" for v, n in left.items())
        )
    return [out / "ablation.json"]


def _run_compare(c: C.CompareConfig, a: argparse.Namespace) -> list[Path]:
    from .analysis.centring import describe_effect
    from .analysis.compare import compare

    out = compare(c.analyses, c.out, c.names, overwrite=c.overwrite)
    for effect in read_json(out / "compare.json").get("centring") or []:
        print("\n".join(describe_effect(effect)))
    return [out / "compare.json", out / "mds.png"]


def _run_agree(c: C.AgreeConfig, a: argparse.Namespace) -> list[Path]:
    from .analysis.agreement import agreement, describe_agreement

    out = agreement(c.analysis, c.ratings, c.out, bootstrap=c.bootstrap, seed=c.seed)
    print("\n".join(describe_agreement(read_json(out))))
    return [out]


def _run_planted(c: C.PlantedConfig, a: argparse.Namespace) -> list[Path]:
    from .analysis.planted import format_table, run_planted_benchmark

    report = run_planted_benchmark(c.out, **c.keywords("out"))
    print(format_table(report))
    return [c.out / "planted.json"]


def _run_report(c: C.ReportConfig, a: argparse.Namespace) -> list[Path]:
    from .report import open_in_browser, render_report

    out = render_report(c.analysis, c.out, **c.keywords("analysis", "out", "open"))
    if c.open and not open_in_browser(out):
        print(
            f"monoscope: no browser to open it in; open {out.resolve()} yourself", file=sys.stderr
        )
    return [out]


def _run_pocket_train(c: C.PocketTrainConfig, a: argparse.Namespace) -> list[Path]:
    from .encoders.pocket_train import train_pocket

    train_pocket(c.out, **c.keywords("out"))
    return [c.out]


def _run_demo(c: C.DemoConfig, a: argparse.Namespace) -> list[Path]:
    from .demo import run_demo

    return run_demo(c.out, **c.keywords("out"))


def _run_doctor(c: C.DoctorConfig, a: argparse.Namespace) -> list[Path]:
    from .doctor import detect, diagnose
    from .integrity import verify

    problems = diagnose(c.path)
    if c.verify and not problems:
        problems = verify(c.path)
    print("\n".join(problems) or "ok")
    if problems:
        raise SystemExit(1)
    if detect(c.path) == "store":
        from .analysis.gap import describe_gap, modality_gap
        from .store import Store

        print(describe_gap(modality_gap(Store(c.path))))
    return []


def _run_import_sae(c: C.ImportSaeConfig, a: argparse.Namespace) -> list[Path]:
    from .interop import import_sae

    return [import_sae(c.format, c.src, c.out, **c.keywords("format", "src", "out"))]


def _run_export_sae(c: C.ExportSaeConfig, a: argparse.Namespace) -> list[Path]:
    from .interop import export_sae

    return [export_sae(c.format, c.featuremap, c.out)]


def _output_of(command: str, out: Path | None) -> tuple[Path | None, bool]:
    """(output to lock, whether it is a file). Data-parallel ranks other than 0 share rank 0's
    directory and do not lock it."""
    if out is None or os.environ.get("RANK", "0") != "0":
        return None, False
    return out, command == "report"


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="monoscope",
        description="Which features of a vision-language model belong to vision, language or both.",
    )
    parser.add_argument("--version", action="version", version=f"monoscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    command(sub, "demo", "the whole pipeline on the embedded default", C.DemoConfig, _run_demo)
    command(sub, "embed", "embed a paired dataset into a store", C.EmbedConfig, _run_embed)
    train = command(sub, "train", "train a feature map on a store", C.TrainConfig, _run_train)
    add_kind_options(train)
    command(
        sub,
        "analyze",
        "score MDS, group features, find top samples",
        C.AnalyzeCommand,
        _run_analyze,
    )
    command(
        sub, "compare", "compare analyses of models or feature maps", C.CompareConfig, _run_compare
    )
    command(
        sub, "ablate", "remove feature groups; zero-shot and retrieval", C.AblateConfig, _run_ablate
    )
    command(sub, "report", "render the self-contained HTML report", C.ReportConfig, _run_report)
    command(
        sub,
        "agree",
        "agreement of blind ratings with each other and with the verdict",
        C.AgreeConfig,
        _run_agree,
    )
    command(
        group(sub, "bench", "benchmarks with known answers", "bench_cmd"),
        "planted",
        "train each method on planted ground truth and score every rule",
        C.PlantedConfig,
        _run_planted,
    )
    command(
        group(sub, "pocket", "the built-in pocket model", "pocket_cmd"),
        "train",
        "retrain the pocket model on the emoji pairs",
        C.PocketTrainConfig,
        _run_pocket_train,
    )
    command(sub, "doctor", "validate a store, feature map or analysis", C.DoctorConfig, _run_doctor)
    command(
        sub,
        "import-sae",
        "read an SAE trained with another library as a feature map",
        C.ImportSaeConfig,
        _run_import_sae,
    )
    command(
        sub,
        "export-sae",
        "write a feature map in another library's layout",
        C.ExportSaeConfig,
        _run_export_sae,
    )
    add_study_parsers(sub)
    return parser


def _show_warning(message: Warning | str, *_: Any, **__: Any) -> None:
    print(f"monoscope: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = None
    try:
        config = config_of(args, args.config)
        out = getattr(config, "out", None)
        if getattr(config, "progress", True) is False:
            from .quiet import silence_library_progress

            silence_library_progress()
        with output_lock(*_output_of(args.command, out)), warnings.catch_warnings():
            warnings.showwarning = _show_warning
            paths = args.run(config, args)
    except MonoscopeError as e:
        print(f"monoscope: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permission denied, ...: one line, not a traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"monoscope: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        from .interrupted import kept_lines

        print("monoscope: interrupted", file=sys.stderr)
        for line in kept_lines(args.command, out):
            print(f"monoscope: {line}", file=sys.stderr)
        return 130
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
