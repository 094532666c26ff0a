"""``monoscope study gender|adversarial|steer`` and ``monoscope decoder train``.

:func:`add_parsers` registers both commands on the main CLI's subparsers; their options come from
the study configs of :mod:`monoscope.config`, and each runner returns the paths it wrote, which
the main CLI prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import config as C
from .._util import read_json
from ..cli_config import Formatter, command, config_of

_INPUTS = ("store", "featuremap", "analysis", "out")


def add_parsers(sub: Any) -> None:
    """Register ``study`` (gender, adversarial, steer) and ``decoder`` (train)."""
    study = sub.add_parser(
        "study", help="case studies: gender, adversarial, steer", formatter_class=Formatter
    )
    studies = study.add_subparsers(dest="study", required=True)
    command(
        studies,
        "gender",
        "zero-shot gender bias and gender features",
        C.GenderConfig,
        _run_gender,
    )
    command(
        studies,
        "adversarial",
        "PGD attacks, group-targeted attacks, defences",
        C.AdversarialConfig,
        _run_adversarial,
    )
    command(
        studies,
        "steer",
        "steer embeddings with one group's concept features",
        C.SteerConfig,
        _run_steer,
    )
    dec = sub.add_parser(
        "decoder", help="the embedding-conditioned image decoder", formatter_class=Formatter
    )
    command(
        dec.add_subparsers(dest="decoder_cmd", required=True),
        "train",
        "train the decoder on a store's images",
        C.DecoderTrainConfig,
        _run_decoder_train,
    )


def _with_figures(json_path: Path) -> list[Path]:
    return [json_path, *(json_path.parent / f for f in read_json(json_path)["figures"])]


def _inputs(c: C.StudyInputs) -> tuple[Path, Path, Path | None, Path]:
    return c.store, c.featuremap, c.analysis, c.out


def _run_gender(a: argparse.Namespace) -> list[Path]:
    from .gender import gender_study

    c = config_of(a, C.GenderConfig)
    return _with_figures(gender_study(*_inputs(c), **c.keywords(*_INPUTS)))


def _run_adversarial(a: argparse.Namespace) -> list[Path]:
    from .adversarial import adversarial_study

    c = config_of(a, C.AdversarialConfig)
    return _with_figures(adversarial_study(*_inputs(c), **c.keywords(*_INPUTS)))


def _run_steer(a: argparse.Namespace) -> list[Path]:
    from .steering import steer_study

    c = config_of(a, C.SteerConfig)
    return _with_figures(steer_study(*_inputs(c), **c.keywords(*_INPUTS)))


def _run_decoder_train(a: argparse.Namespace) -> list[Path]:
    from .decoder import train_decoder

    c = config_of(a, C.DecoderTrainConfig)
    out = train_decoder(c.store, c.out, **c.keywords("store", "out"))
    return [out / "model.safetensors", out / "config.json"]
