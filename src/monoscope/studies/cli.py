"""``monoscope study gender|adversarial|steer`` and ``monoscope decoder train``.

:func:`add_parsers` registers both commands on the main CLI's subparsers; each runner returns
the paths it wrote, which the main CLI prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import cli_types as T
from .._util import read_json
from .defaults import ALPHAS, EPSILONS, GENDER_TEMPLATES, OBJECTIVES

_fmt = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}


def add_parsers(sub: Any) -> None:
    """Register ``study`` (gender, adversarial, steer) and ``decoder`` (train)."""
    study = sub.add_parser("study", help="case studies: gender, adversarial, steer", **_fmt)
    studies = study.add_subparsers(dest="study", required=True)
    _add_gender(studies)
    _add_adversarial(studies)
    _add_steer(studies)
    dec = sub.add_parser("decoder", help="the embedding-conditioned image decoder", **_fmt)
    dsub = dec.add_subparsers(dest="decoder_cmd", required=True)
    _add_decoder_train(dsub)


def _inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("--featuremap", required=True, type=Path)
    p.add_argument(
        "--analysis",
        type=Path,
        help="groups from this analysis; computed into OUT/analysis if omitted",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--model", help="encoder spec; the store's own model if omitted")
    _common(p)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", type=T.device, help="cpu, cuda[:N], mps or auto")
    p.add_argument("--seed", type=T.seed, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _with_figures(json_path: Path) -> list[Path]:
    return [json_path, *(json_path.parent / f for f in read_json(json_path)["figures"])]


def _add_gender(sub: Any) -> None:
    p = sub.add_parser("gender", help="zero-shot gender bias and gender features", **_fmt)
    _inputs(p)
    p.add_argument(
        "--template",
        action="append",
        dest="templates",
        help=f"prompt template with {{}} (repeatable); {list(GENDER_TEMPLATES)} if omitted",
    )
    p.add_argument(
        "--label-key", help="label holding the gender (default: the one taking both classes)"
    )
    p.add_argument("--classes", nargs=2, default=["woman", "man"], help="the two label values")
    p.add_argument("--neutral", default="neutral", help="label value of gender-neutral images")
    p.add_argument(
        "--pair-keys",
        nargs="+",
        help="labels shared by counterfactual pairs (default: a 'pair' label; the bundled "
        "emoji: base skin_tone)",
    )
    p.add_argument("--role-key", help="label grouping neutral images into roles (default: role)")
    p.add_argument(
        "--fdr",
        type=T.number(0.0, strict=True, high=1.0),
        default=0.05,
        help="BH false discovery rate",
    )
    p.add_argument(
        "--min-effect", type=T.non_negative_float, default=0.2, help="minimum |d_z| of a feature"
    )
    p.add_argument("--permutations", type=T.positive, default=2000, help="sign-flip permutations")
    p.add_argument("--control-seeds", type=T.positive, default=5, help="random same-size controls")
    p.add_argument(
        "--top-roles", type=T.positive, default=12, help="rows of the skewed-roles table"
    )
    p.set_defaults(run=_run_gender)


def _run_gender(a: argparse.Namespace) -> list[Path]:
    from .gender import gender_study

    path = gender_study(
        a.store,
        a.featuremap,
        a.analysis,
        a.out,
        model=a.model,
        templates=a.templates or GENDER_TEMPLATES,
        label_key=a.label_key,
        classes=tuple(a.classes),
        neutral=a.neutral,
        pair_keys=a.pair_keys,
        role_key=a.role_key,
        fdr=a.fdr,
        min_effect=a.min_effect,
        permutations=a.permutations,
        control_seeds=a.control_seeds,
        top_roles=a.top_roles,
        device=a.device,
        seed=a.seed,
        progress=not a.quiet,
    )
    return _with_figures(path)


def _add_adversarial(sub: Any) -> None:
    p = sub.add_parser("adversarial", help="PGD attacks, group-targeted attacks, defences", **_fmt)
    _inputs(p)
    p.add_argument(
        "--template",
        action="append",
        dest="templates",
        help="class prompt template with {} (repeatable); the set of monoscope ablate if omitted",
    )
    p.add_argument(
        "--label-key", help="label used as zero-shot classes (default: the one that can serve)"
    )
    p.add_argument("--n-images", type=T.positive, default=256, help="images attacked")
    p.add_argument(
        "--eps", nargs="+", type=T.non_negative_float, default=list(EPSILONS), help="L-inf, x 1/255"
    )
    p.add_argument("--steps", type=T.positive, default=10, help="PGD steps")
    p.add_argument(
        "--step-size", type=T.positive_float, help="x 1/255; 2.5 * eps / steps if omitted"
    )
    p.add_argument(
        "--objectives",
        nargs="+",
        default=["zeroshot"],
        choices=OBJECTIVES,
        help="attacked tasks (zeroshot, matching); defences train on the first",
    )
    p.add_argument(
        "--group-eps", type=T.non_negative_float, default=4.0, help="eps of group-targeted attacks"
    )
    p.add_argument(
        "--adapter-rank", type=int, default=0, help="low-rank MLP in the adapter (0: affine only)"
    )
    p.add_argument("--adapter-steps", type=T.non_negative, default=300)
    p.add_argument("--batch-size", type=T.positive, default=128)
    p.add_argument(
        "--examples", type=T.non_negative, default=6, help="images in the examples figure"
    )
    p.set_defaults(run=_run_adversarial)


def _run_adversarial(a: argparse.Namespace) -> list[Path]:
    from ..analysis.ablation import TEMPLATES
    from .adversarial import adversarial_study

    path = adversarial_study(
        a.store,
        a.featuremap,
        a.analysis,
        a.out,
        model=a.model,
        label_key=a.label_key,
        templates=a.templates or TEMPLATES,
        n_images=a.n_images,
        epsilons=a.eps,
        steps=a.steps,
        step_size=a.step_size,
        objectives=a.objectives,
        group_eps=a.group_eps,
        adapter_rank=a.adapter_rank,
        adapter_steps=a.adapter_steps,
        batch_size=a.batch_size,
        examples=a.examples,
        device=a.device,
        seed=a.seed,
        progress=not a.quiet,
    )
    return _with_figures(path)


def _add_steer(sub: Any) -> None:
    p = sub.add_parser("steer", help="steer embeddings with one group's concept features", **_fmt)
    _inputs(p)
    p.add_argument("--concept", default="woman", help="concept prompt, e.g. woman, red, cat")
    p.add_argument("--modality", default="image", choices=("image", "text"), help="edited side")
    p.add_argument(
        "--alphas", nargs="+", type=T.finite_float, default=list(ALPHAS), help="strengths"
    )
    p.add_argument("--sources", type=T.positive, default=64, help="source embeddings edited")
    p.add_argument(
        "--concept-images",
        type=int,
        default=16,
        help="gallery images nearest the prompt averaged into the concept (0: prompt only)",
    )
    p.add_argument("--examples", type=T.non_negative, default=2, help="sources rendered as grids")
    p.add_argument("--max-gallery", type=T.positive, default=20000, help="gallery size cap")
    p.add_argument(
        "--decoder",
        type=Path,
        help="decoder dir; trained into (or reused from) OUT/decoder if omitted",
    )
    p.add_argument("--no-decoder", action="store_true", help="skip decoder renders")
    p.add_argument("--decoder-epochs", type=T.positive, default=15, help="when training one here")
    p.add_argument("--unclip", help="diffusers Stable unCLIP img2img pipeline id or dir")
    p.add_argument("--unclip-steps", type=T.positive, default=20)
    p.add_argument("--unclip-norm", type=T.positive_float, help="rescale embeddings to this norm")
    p.set_defaults(run=_run_steer)


def _run_steer(a: argparse.Namespace) -> list[Path]:
    from .steering import steer_study

    path = steer_study(
        a.store,
        a.featuremap,
        a.analysis,
        a.out,
        model=a.model,
        concept=a.concept,
        modality=a.modality,
        alphas=a.alphas,
        n_sources=a.sources,
        concept_images=a.concept_images,
        examples=a.examples,
        max_gallery=a.max_gallery,
        decoder=a.decoder,
        render_decoder=not a.no_decoder,
        decoder_epochs=a.decoder_epochs,
        unclip=a.unclip,
        unclip_steps=a.unclip_steps,
        unclip_norm=a.unclip_norm,
        device=a.device,
        seed=a.seed,
        progress=not a.quiet,
    )
    return _with_figures(path)


def _add_decoder_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train the decoder on a store's images", **_fmt)
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="decoder directory")
    p.add_argument("--size", type=int, default=32, choices=(32, 64), help="output pixels")
    p.add_argument("--width", type=T.positive, default=128, help="channels at 4x4")
    p.add_argument("--epochs", type=T.positive, default=15)
    p.add_argument("--batch-size", type=T.positive, default=128)
    p.add_argument("--lr", type=T.positive_float, default=2e-3)
    p.add_argument(
        "--noise", type=T.non_negative_float, default=0.05, help="input-embedding noise (x RMS)"
    )
    p.add_argument(
        "--edge-weight", type=T.non_negative_float, default=0.5, help="image-gradient L1 weight"
    )
    p.add_argument("--max-images", type=T.positive, default=20000)
    _common(p)
    p.set_defaults(run=_run_decoder_train)


def _run_decoder_train(a: argparse.Namespace) -> list[Path]:
    from .decoder import train_decoder

    out = train_decoder(
        a.store,
        a.out,
        size=a.size,
        width=a.width,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        noise=a.noise,
        edge_weight=a.edge_weight,
        max_images=a.max_images,
        seed=a.seed,
        device=a.device,
        progress=not a.quiet,
    )
    return [out / "model.safetensors", out / "config.json"]
