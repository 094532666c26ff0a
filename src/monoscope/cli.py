"""Command-line interface: one subcommand per pipeline stage, each a thin layer over ``api``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import cli_types as T
from ._util import MonoscopeError, read_json
from .demo import SAE as DEMO_SAE
from .locks import output_lock
from .studies.cli import add_parsers as add_study_parsers

# The trainer's methods, listed here so that `--help` does not import torch (a test keeps
# the two lists equal).
METHODS = (
    "identity",
    "sae-relu",
    "sae-topk",
    "sae-batchtopk",
    "sae-jumprelu",
    "sae-matryoshka",
    "ncl",
)


def _common(p: argparse.ArgumentParser, seed: bool = True) -> None:
    p.add_argument("--device", default="auto", type=T.device, help="cpu, cuda[:N], mps or auto")
    if seed:
        p.add_argument("--seed", type=T.seed, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_embed(sub: Any) -> None:
    p = sub.add_parser("embed", help="embed a paired dataset into a store", **_fmt)
    p.add_argument(
        "--model",
        required=True,
        help="pocket | HF hub id or local dir | open_clip:NAME[/PRETRAINED]",
    )
    p.add_argument(
        "--data",
        required=True,
        help="emoji | a .jsonl/.csv file of pairs | tar shards ('shards/{00000..00099}.tar', "
        "a glob or a directory) | hf:NAME_OR_DIR[:SPLIT]",
    )
    p.add_argument("--image-column", help="hf: image column (default: auto-detected)")
    p.add_argument("--caption-column", help="hf: caption column (default: auto-detected)")
    p.add_argument("--out", required=True, type=Path, help="store directory")
    p.add_argument("--batch-size", type=T.positive, default=64)
    p.add_argument(
        "--shard-size",
        type=T.positive,
        default=4096,
        help="source records per shard (the unit of resume and of data parallelism)",
    )
    p.add_argument(
        "--workers",
        type=T.non_negative,
        default=0,
        help="DataLoader processes decoding images beside the model",
    )
    p.add_argument(
        "--dtype",
        default=None,
        type=T.dtype,
        help="model compute dtype: auto (checkpoint's), fp32, fp16, bf16 "
        "(default: fp32); stored embeddings are always float32",
    )
    p.add_argument("--no-normalize", action="store_true", help="store raw, not L2-normalised")
    p.add_argument(
        "--max-pixels",
        type=T.positive,
        default=DEFAULT_MAX_PIXELS,
        help="larger images are skipped (counted) without being decoded",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    _common(p, seed=False)
    p.set_defaults(run=_run_embed)


def _run_embed(a: argparse.Namespace) -> list[Path]:
    from .data import open_source
    from .embed import embed, skipped_line

    out = [
        embed(
            a.model,
            open_source(a.data, image_column=a.image_column, caption_column=a.caption_column),
            a.out,
            batch_size=a.batch_size,
            shard_size=a.shard_size,
            workers=a.workers,
            device=a.device,
            dtype=a.dtype,
            normalize=not a.no_normalize,
            resume=a.resume,
            overwrite=a.overwrite,
            progress=not a.quiet,
            max_pixels=a.max_pixels,
        )
    ]
    if os.environ.get("RANK", "0") != "0":
        return out
    if line := skipped_line(out[0]):
        print(line, file=sys.stderr)
    return out


def _center_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--center",
        nargs="?",
        const="mean",
        choices=("mean", "gap"),
        help="centre each modality on its own mean before the feature map (--center gap: "
        "also remove the gap direction); default: off",
    )


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a feature map on a store", **_fmt)
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--out", required=True, type=Path, help="feature-map directory")
    p.add_argument("--latents", type=T.positive, default=2048, help="number of features K")
    p.add_argument("--k", type=T.positive, default=32, help="active latents (TopK family)")
    p.add_argument("--l1", type=T.positive_float, default=None, help="sparsity penalty (sae-relu)")
    p.add_argument("--batch-size", type=T.positive, default=1024)
    p.add_argument(
        "--lr", type=T.positive_float, default=None, help="learning rate (method default)"
    )
    p.add_argument("--epochs", type=T.positive_float, default=None)
    p.add_argument("--steps", type=T.positive, default=None)
    p.add_argument("--per-modality", action="store_true", help="one SAE per modality")
    _center_option(p)
    p.add_argument("--checkpoint-every", type=T.non_negative, default=1000, help="steps (0: none)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing feature map")
    _common(p)
    p.set_defaults(run=_run_train)


def _run_train(a: argparse.Namespace) -> list[Path]:
    from .featuremaps.train import train_featuremap

    opts = {k: v for k, v in (("l1", a.l1), ("lr", a.lr)) if v is not None}
    return [
        train_featuremap(
            a.store,
            a.method,
            a.out,
            latents=a.latents,
            k=a.k,
            batch_size=a.batch_size,
            epochs=a.epochs,
            steps=a.steps,
            seed=a.seed,
            device=a.device,
            resume=a.resume,
            overwrite=a.overwrite,
            checkpoint_every=a.checkpoint_every,
            per_modality=a.per_modality,
            progress=not a.quiet,
            center=a.center,
            **opts,
        )
    ]


def _add_analyze(sub: Any) -> None:
    p = sub.add_parser("analyze", help="score MDS, group features, find top samples", **_fmt)
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("--featuremap", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="analysis directory")
    p.add_argument("--top-m", type=T.positive, default=20, help="top samples kept per feature")
    p.add_argument(
        "--mds", default="ratio-of-means", choices=("ratio-of-means", "mean-of-ratios", "signed")
    )
    p.add_argument(
        "--rule",
        default="evidence",
        choices=("evidence", "std", "fixed", "quantile", "test"),
        help="verdict rule: evidence (each feature's own interval vs --low/--high, with FDR "
        "control; undetermined and rare features get no group), std (the paper's mean ± std), "
        "fixed thresholds, quantiles, or a sign-flip test",
    )
    p.add_argument(
        "--low", type=T.unit_interval, default=0.25, help="TextD below this MDS (evidence, fixed)"
    )
    p.add_argument(
        "--high", type=T.unit_interval, default=0.75, help="ImgD above this MDS (evidence, fixed)"
    )
    p.add_argument(
        "--quantile", type=T.open_half, default=0.2, help="tail share, in (0, 0.5) (quantile)"
    )
    p.add_argument(
        "--fdr", type=T.open_unit, default=0.05, help="false-claim rate, in (0, 1) (evidence, test)"
    )
    p.add_argument(
        "--min-firings",
        type=T.positive,
        default=40,
        help="pairs a feature must fire on to get a verdict; fewer: rare (evidence)",
    )
    p.add_argument(
        "--pseudo-firings",
        type=T.non_negative_float,
        default=0.5,
        help="pseudo-pairs per modality added to each feature's interval (evidence intervals)",
    )
    p.add_argument(
        "--min-effect",
        type=T.open_half,
        default=0.1,
        help="least |MDS - 0.5| for ImgD/TextD, in (0, 0.5) (test)",
    )
    p.add_argument("--permutations", type=T.positive, default=1000, help="sign flips (test)")
    p.add_argument("--batch-size", type=T.positive, default=4096)
    p.add_argument(
        "--force",
        action="store_true",
        help="analyse with a feature map trained on another model's embeddings",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing analysis")
    p.add_argument(
        "--words",
        action="store_true",
        help="word-occlusion analysis of text-side features (loads the encoder)",
    )
    p.add_argument("--model", help="encoder for --words/--vocab (default: the store's model)")
    p.add_argument(
        "--vocab",
        nargs="?",
        const="",
        metavar="TERMS_FILE",
        help="also name every feature by the nearest text of a vocabulary (default: words and "
        "phrases of the captions; or a file, one term per line); loads the encoder",
    )
    _center_option(p)
    _common(p)
    p.set_defaults(run=_run_analyze)


def _run_analyze(a: argparse.Namespace) -> list[Path]:
    from .analysis.analyze import analyze

    out = analyze(
        a.store,
        a.featuremap,
        a.out,
        top_m=a.top_m,
        definition=a.mds,
        rule=a.rule,
        low=a.low,
        high=a.high,
        quantile=a.quantile,
        fdr=a.fdr,
        min_firings=a.min_firings,
        pseudo_firings=a.pseudo_firings,
        min_effect=a.min_effect,
        permutations=a.permutations,
        batch_size=a.batch_size,
        device=a.device,
        seed=a.seed,
        progress=not a.quiet,
        center=a.center,
        force=a.force,
        overwrite=a.overwrite,
    )
    from ._util import read_json

    for note in read_json(out / "summary.json").get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    written = [out / "features.csv", out / "summary.json", out / "top"]
    if a.words:
        written.append(_words(a.store, a.featuremap, out, a.model, a.device, a.center))
    if a.vocab is not None:
        written.append(_vocab(a, out))
    return written


def _vocab(a: argparse.Namespace, analysis: Path) -> Path:
    from ._util import resolve_device
    from .analysis.vocabulary import vocabulary_names
    from .encoders import encoder_spec, load_encoder
    from .featuremaps import load_featuremap
    from .featuremaps.center import center_featuremap
    from .store import Store

    device = resolve_device(a.device)
    store = Store(a.store)
    try:
        spec = a.model or encoder_spec(store.manifest["model"])
    except ValueError as e:
        raise MonoscopeError(str(e)) from None
    encoder = load_encoder(spec, device=device)
    fmap = center_featuremap(load_featuremap(a.featuremap), store, a.center)
    return vocabulary_names(store, fmap, analysis, encoder, a.vocab or None)


def _words(
    store_path: Path,
    fmap_path: Path,
    analysis: Path,
    model: str | None,
    device: str,
    center: str | None = None,
) -> Path:
    from ._util import resolve_device
    from .analysis.words import word_drivers
    from .encoders import encoder_spec, load_encoder
    from .featuremaps import load_featuremap
    from .featuremaps.center import center_featuremap
    from .store import Store

    device = resolve_device(device)
    store = Store(store_path)
    encoder = load_encoder(model or encoder_spec(store.manifest["model"]), device=device)
    fmap = center_featuremap(load_featuremap(fmap_path, device), store, center)
    return word_drivers(store, fmap, analysis, encoder, device=device)


def _add_ablate(sub: Any) -> None:
    p = sub.add_parser("ablate", help="remove feature groups; zero-shot and retrieval", **_fmt)
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("--featuremap", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="directory for ablation.json")
    p.add_argument("--analysis", type=Path, help="groups from this analysis (default: computed)")
    p.add_argument("--model", help="encoder for class prompts (default: the store's model)")
    p.add_argument(
        "--labels",
        nargs="+",
        help="label keys used as zero-shot classes (default: every label that can serve)",
    )
    p.add_argument(
        "--template",
        action="append",
        dest="templates",
        type=T.template,
        help="class prompt template with {} (repeatable; default: built-in set)",
    )
    p.add_argument("--control-seeds", type=T.positive, default=5, help="random same-size controls")
    p.add_argument("--max-pairs", type=T.integer(2), default=4000, help="pairs evaluated")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="allow a non-empty --out of another kind (replaces only own files)",
    )
    _common(p)
    p.set_defaults(run=_run_ablate)


def _run_ablate(a: argparse.Namespace) -> list[Path]:
    from .analysis.ablation import TEMPLATES, ablate

    out = ablate(
        a.store,
        a.featuremap,
        a.out,
        analysis=a.analysis,
        model=a.model,
        label_keys=a.labels,
        templates=a.templates or TEMPLATES,
        control_seeds=a.control_seeds,
        max_pairs=a.max_pairs,
        device=a.device,
        seed=a.seed,
        progress=not a.quiet,
        overwrite=a.overwrite,
    )
    left = read_json(out / "ablation.json").get("left_out") or {}
    if any(left.values()):
        print(
            "removed only features with a confident verdict; left in: "
            + ", ".join(f"{n:,} {v}" for v, n in left.items())
        )
    return [out / "ablation.json"]


def _add_compare(sub: Any) -> None:
    p = sub.add_parser("compare", help="compare analyses of models or feature maps", **_fmt)
    p.add_argument("analyses", nargs="+", type=Path, help="analysis directories")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--names", nargs="+", help="display names, one per analysis")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="allow a non-empty --out of another kind (replaces only own files)",
    )
    p.set_defaults(run=_run_compare)


def _run_compare(a: argparse.Namespace) -> list[Path]:
    from ._util import read_json
    from .analysis.centring import describe_effect
    from .analysis.compare import compare

    out = compare(a.analyses, a.out, a.names, overwrite=a.overwrite)
    for effect in read_json(out / "compare.json").get("centring") or []:
        print("\n".join(describe_effect(effect)))
    return [out / "compare.json", out / "mds.png"]


def _add_agree(sub: Any) -> None:
    p = sub.add_parser(
        "agree", help="agreement of blind ratings with each other and with the verdict", **_fmt
    )
    p.add_argument("--analysis", required=True, type=Path, help="the rated analysis")
    p.add_argument("ratings", nargs="+", type=Path, help="ratings files exported by the report")
    p.add_argument("--out", required=True, type=Path, help="directory for agree.json")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for CIs")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(run=_run_agree)


def _run_agree(a: argparse.Namespace) -> list[Path]:
    from ._util import read_json
    from .analysis.agreement import agreement, describe_agreement

    out = agreement(a.analysis, a.ratings, a.out, bootstrap=a.bootstrap, seed=a.seed)
    print("\n".join(describe_agreement(read_json(out))))
    return [out]


def _add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmarks with known answers", **_fmt)
    bsub = p.add_subparsers(dest="bench_cmd", required=True)
    b = bsub.add_parser(
        "planted", help="train each method on planted ground truth and score every rule", **_fmt
    )
    b.add_argument("--out", required=True, type=Path, help="benchmark directory")
    b.add_argument(
        "--profile",
        default="clip",
        choices=("easy", "clip", "null"),
        help="easy: MDS exactly 0, 1/2, 1; clip: CLIP-like geometry, continuous preferences, "
        "heavy-tailed frequencies; null: clip geometry, every atom balanced",
    )
    b.add_argument(
        "--replicates", type=T.positive, default=5, help="fresh datasets each map is scored on"
    )
    b.add_argument("--dim", type=T.positive, help="embedding dimension (default: the profile's)")
    b.add_argument("--atoms", type=T.positive, default=256, help="planted atoms")
    b.add_argument("--n-pairs", type=T.positive, default=20000, help="pairs per dataset")
    b.add_argument("--methods", nargs="+", help="feature maps to train (default: all)")
    b.add_argument("--steps", type=T.positive, default=1500, help="training steps per map")
    b.add_argument("--seed", type=int, default=0, help="random seed")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(run=_run_planted)


def _run_planted(a: argparse.Namespace) -> list[Path]:
    from .analysis.planted import DEFAULT_METHODS, format_table, run_planted_benchmark

    report = run_planted_benchmark(
        a.out,
        seed=a.seed,
        dim=a.dim,
        atoms=a.atoms,
        n_pairs=a.n_pairs,
        methods=a.methods or DEFAULT_METHODS,
        profile=a.profile,
        replicates=a.replicates,
        steps=a.steps,
        progress=not a.quiet,
    )
    print(format_table(report))
    return [a.out / "planted.json"]


def _add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="render the self-contained HTML report", **_fmt)
    p.add_argument("--analysis", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="HTML file to write")
    p.add_argument("--ablation", type=Path, help="ablation.json or its directory")
    p.add_argument("--compare", type=Path, help="compare.json or its directory")
    p.add_argument("--agree", type=Path, help="agree.json of `monoscope agree` or its directory")
    p.add_argument(
        "--studies", type=Path, nargs="+", default=(), help="study directories (or their parent)"
    )
    p.add_argument(
        "--no-discover",
        action="store_true",
        help="do not look for ablation/, compare/, agree/ and studies/ beside the analysis",
    )
    p.add_argument("--open", action="store_true", help="open it in the browser")
    p.set_defaults(run=_run_report)


def _run_report(a: argparse.Namespace) -> list[Path]:
    from .report import open_in_browser, render_report

    out = render_report(
        a.analysis,
        a.out,
        ablation=a.ablation,
        compare=a.compare,
        studies=a.studies,
        discover=not a.no_discover,
        agree=a.agree,
    )
    if a.open and not open_in_browser(out):
        print(
            f"monoscope: no browser to open it in; open {out.resolve()} yourself", file=sys.stderr
        )
    return [out]


def _add_pocket(sub: Any) -> None:
    p = sub.add_parser("pocket", help="the built-in pocket model", **_fmt)
    psub = p.add_subparsers(dest="pocket_cmd", required=True)
    t = psub.add_parser("train", help="retrain the pocket model on the emoji pairs", **_fmt)
    t.add_argument("--out", required=True, type=Path, help="directory for the weights")
    t.add_argument(
        "--epochs",
        type=T.positive,
        default=None,
        help="training epochs (default: the shipped recipe)",
    )
    _common(t)
    t.set_defaults(run=_run_pocket_train)


def _run_pocket_train(a: argparse.Namespace) -> list[Path]:
    from .encoders.pocket_train import train_pocket

    opts = {"epochs": a.epochs} if a.epochs is not None else {}
    train_pocket(a.out, seed=a.seed, device=a.device, progress=not a.quiet, **opts)
    return [a.out]


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the embedded default", **_fmt)
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--latents", type=T.positive, default=DEMO_SAE["latents"], help="SAE features")
    p.add_argument("--k", type=T.positive, default=DEMO_SAE["k"], help="SAE active latents")
    p.add_argument("--epochs", type=T.positive, default=DEMO_SAE["epochs"], help="SAE epochs")
    p.add_argument(
        "--studies",
        action="store_true",
        help="also run the gender, adversarial and steering studies (a few minutes)",
    )
    _common(p)
    p.set_defaults(run=_run_demo)


def _run_demo(a: argparse.Namespace) -> list[Path]:
    from .demo import run_demo

    return run_demo(
        a.out,
        latents=a.latents,
        k=a.k,
        epochs=a.epochs,
        studies=a.studies,
        seed=a.seed,
        device=a.device,
        progress=not a.quiet,
    )


def _add_doctor(sub: Any) -> None:
    p = sub.add_parser("doctor", help="validate a store, feature map or analysis", **_fmt)
    p.add_argument("path", type=Path, help="a store, feature-map or analysis directory")
    p.add_argument(
        "--verify",
        action="store_true",
        help="also re-hash every shard and weights file against the recorded checksums",
    )
    p.set_defaults(run=_run_doctor)


def _run_doctor(a: argparse.Namespace) -> list[Path]:
    from .doctor import detect, diagnose
    from .integrity import verify

    problems = diagnose(a.path)
    if a.verify and not problems:
        problems = verify(a.path)
    print("\n".join(problems) or "ok")
    if problems:
        raise SystemExit(1)
    if detect(a.path) == "store":
        from .analysis.gap import describe_gap, modality_gap
        from .store import Store

        print(describe_gap(modality_gap(Store(a.path))))
    return []


# Formats of `import-sae`/`export-sae`, listed here so that `--help` does not import torch
# (a test keeps them equal to monoscope.interop's).
SAE_IMPORT_FORMATS = ("saelens", "sparsify", "saev", "dictionary_learning")
SAE_EXPORT_FORMATS = ("saelens",)


def _add_import_sae(sub: Any) -> None:
    p = sub.add_parser(
        "import-sae", help="read an SAE trained with another library as a feature map", **_fmt
    )
    p.add_argument("--format", required=True, choices=SAE_IMPORT_FORMATS)
    p.add_argument(
        "src",
        type=Path,
        help="saelens/sparsify: the directory with cfg.json; saev: sae.pt (or its directory); "
        "dictionary_learning: ae.pt (or its trainer directory)",
    )
    p.add_argument("--out", required=True, type=Path, help="feature-map directory")
    p.add_argument("--overwrite", action="store_true", help="replace a feature map in --out")
    p.add_argument(
        "--input-scale",
        type=float,
        help="the SAE was trained on embeddings multiplied by this dataset factor, which its "
        "checkpoint does not hold",
    )
    p.set_defaults(run=_run_import_sae)


def _run_import_sae(a: argparse.Namespace) -> list[Path]:
    from .interop import import_sae

    return [import_sae(a.format, a.src, a.out, overwrite=a.overwrite, input_scale=a.input_scale)]


def _add_export_sae(sub: Any) -> None:
    p = sub.add_parser("export-sae", help="write a feature map in another library's layout", **_fmt)
    p.add_argument("--format", required=True, choices=SAE_EXPORT_FORMATS)
    p.add_argument("featuremap", type=Path, help="a monoscope SAE feature-map directory")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.set_defaults(run=_run_export_sae)


def _run_export_sae(a: argparse.Namespace) -> list[Path]:
    from .interop import export_sae

    return [export_sae(a.format, a.featuremap, a.out)]


_fmt = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}
DEFAULT_MAX_PIXELS = 64_000_000  # see monoscope.data.pixels; kept here so --help stays light


def _output_of(args: argparse.Namespace) -> tuple[Path | None, bool]:
    """(output to lock, whether it is a file). Data-parallel ranks other than 0 share rank 0's
    directory and do not lock it."""
    out = getattr(args, "out", None)
    if out is None or os.environ.get("RANK", "0") != "0":
        return None, False
    return out, args.command == "report"


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="monoscope",
        description="Which features of a vision-language model belong to vision, language or both.",
    )
    parser.add_argument("--version", action="version", version=f"monoscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_demo,
        _add_embed,
        _add_train,
        _add_analyze,
        _add_compare,
        _add_ablate,
        _add_report,
        _add_agree,
        _add_bench,
        _add_pocket,
        _add_doctor,
        _add_import_sae,
        _add_export_sae,
    ):
        add(sub)
    add_study_parsers(sub)
    return parser


def _show_warning(message: Warning | str, *_: Any, **__: Any) -> None:
    print(f"monoscope: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        from .quiet import silence_library_progress

        silence_library_progress()
    try:
        with output_lock(*_output_of(args)), warnings.catch_warnings():
            warnings.showwarning = _show_warning
            paths = args.run(args)
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
        for line in kept_lines(args.command, getattr(args, "out", None)):
            print(f"monoscope: {line}", file=sys.stderr)
        return 130
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
