"""The study and decoder commands, through their argparse parsers."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from monoscope._util import MonoscopeError
from monoscope.cli_config import config_of
from monoscope.studies.cli import add_parsers
from test_studies_common import LookupEncoder, colour_store
from test_studies_gender import _text, gender_case


def _run(args: argparse.Namespace) -> list[Path]:
    return args.run(config_of(args, args.config), args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="monoscope")
    add_parsers(p.add_subparsers(dest="command", required=True))
    return p


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["study", "gender"], "--pair-keys"),
        (["study", "adversarial"], "(default: 1.0 2.0 4.0 8.0)"),
        (["study", "steer"], "(default: woman)"),
        (["decoder", "train"], "--edge-weight"),
    ],
)
def test_help_shows_options_and_defaults(argv, expected, capsys):
    with pytest.raises(SystemExit) as e:
        parser().parse_args([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert expected in out and "--seed" in out and "--device" in out


def test_study_gender_command_prints_what_it_wrote(tmp_path: Path, monkeypatch):
    store, fmap, analysis = gender_case(tmp_path)
    monkeypatch.setattr(
        "monoscope.studies._common.load_encoder",
        lambda spec, device: LookupEncoder(np.zeros((1, 8)), _text),
    )
    args = parser().parse_args(
        [
            "study",
            "gender",
            "--store",
            str(store),
            "--featuremap",
            str(fmap),
            "--analysis",
            str(analysis),
            "--out",
            str(tmp_path / "out"),
            "--model",
            "lookup",
            "--template",
            "{}",
            "--pair-keys",  # the emoji-style labels of gender_case
            "base",
            "skin_tone",
            "--role-key",
            "base",
            "--permutations",
            "200",
            "--control-seeds",
            "1",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    paths = _run(args)
    assert paths[0] == tmp_path / "out" / "gender.json"
    assert {p.suffix for p in paths[1:]} == {".png"} and all(p.is_file() for p in paths)


def test_bad_input_is_a_one_line_error(tmp_path: Path):
    store, fmap, analysis = gender_case(tmp_path)
    cases = [
        ["study", "steer", "--store", str(tmp_path / "nope"), "--featuremap", str(fmap)],
        # the store's toy model cannot be reloaded by name: --model is needed
        [
            "study",
            "adversarial",
            "--store",
            str(store),
            "--featuremap",
            str(fmap),
            "--analysis",
            str(analysis),
        ],
        [
            "study",
            "gender",
            "--store",
            str(store),
            "--featuremap",
            str(fmap),
            "--analysis",
            str(tmp_path),
        ],
    ]
    for argv in cases:
        args = parser().parse_args([*argv, "--out", str(tmp_path / "o"), "--device", "cpu"])
        with pytest.raises(MonoscopeError) as e:
            _run(args)
        assert "\n" not in str(e.value)


def test_decoder_train_command(tmp_path: Path):
    store = colour_store(tmp_path, n=8)
    args = parser().parse_args(
        [
            "decoder",
            "train",
            "--store",
            str(store),
            "--out",
            str(tmp_path / "dec"),
            "--size",
            "32",
            "--width",
            "16",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    paths = _run(args)
    assert [p.name for p in paths] == ["model.safetensors", "config.json"]
    assert all(p.is_file() for p in paths)
