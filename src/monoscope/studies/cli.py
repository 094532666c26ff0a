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
from ..cli_config import command, group

_INPUTS = ("store", "featuremap", "analysis", "out")


def add_parsers(sub: Any) -> None:
    """Register ``study`` (gender, adversarial, steer) and ``decoder`` (train)."""
    studies = group(sub, "study", "case studies: gender, adversarial, steer", "study")
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
    command(
        group(sub, "decoder", "the embedding-conditioned image decoder", "decoder_cmd"),
        "train",
        "train the decoder on a store's images",
        C.DecoderTrainConfig,
        _run_decoder_train,
    )


def _with_figures(json_path: Path) -> list[Path]:
    return [json_path, *(json_path.parent / f for f in read_json(json_path)["figures"])]


def _inputs(c: C.StudyInputs) -> tuple[Path, Path, Path | None, Path]:
    return c.store, c.featuremap, c.analysis, c.out


def _run_gender(c: C.GenderConfig, a: argparse.Namespace) -> list[Path]:
    from .gender import gender_study

    return _with_figures(gender_study(*_inputs(c), **c.keywords(*_INPUTS)))


def _run_adversarial(c: C.AdversarialConfig, a: argparse.Namespace) -> list[Path]:
    from .adversarial import adversarial_study

    return _with_figures(adversarial_study(*_inputs(c), **c.keywords(*_INPUTS)))


def _run_steer(c: C.SteerConfig, a: argparse.Namespace) -> list[Path]:
    from .steering import steer_study

    return _with_figures(steer_study(*_inputs(c), **c.keywords(*_INPUTS)))


def _run_decoder_train(c: C.DecoderTrainConfig, a: argparse.Namespace) -> list[Path]:
    from .decoder import train_decoder

    out = train_decoder(c.store, c.out, **c.keywords("store", "out"))
    return [out / "model.safetensors", out / "config.json"]
