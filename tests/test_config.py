"""The configs are the one home of every option: the CLI, the stage functions and the saved
hyperparameters all agree with them."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from monoscope import config as C
from monoscope.cli import build_parser, main
from monoscope.cli_config import kind_fields


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _commands(sub, (*path, name))
    if not out and path:
        out.append((path, parser))
    return out


COMMANDS = _commands(build_parser())


def test_every_command_has_a_config():
    assert len(COMMANDS) >= 17
    for path, p in COMMANDS:
        assert "config" in {a.dest for a in p._actions} or p.get_default("config"), path


@pytest.mark.parametrize("path, parser", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_field_has_a_flag_and_every_flag_a_field(path, parser):
    cls = parser.get_default("config")
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    fields = {f.name for f in dataclasses.fields(cls)}
    if path == ("train",):
        fields |= set(kind_fields())
    assert dests == fields
    assert cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("), "needs a docstring"


@pytest.mark.parametrize("path, parser", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_is_complete_and_says_each_default_once(path, parser):
    text = parser.format_help()
    assert "(default: None)" not in text
    for action in parser._actions:
        assert action.help, f"{path}: {action.dest} has no help"
        assert action.help.count("(default:") <= 1, action.help


def _sample(cls: type[C.Settings]) -> C.Settings:
    """An instance with every required field filled."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING:
            hint = hints[f.name]
            if typing.get_origin(hint) is typing.Literal:
                values[f.name] = typing.get_args(hint)[0]
            elif typing.get_origin(hint) is tuple:
                values[f.name] = (Path("a"), Path("b"))
            else:
                values[f.name] = Path("x") if hint is Path else "x"
    return cls(**values)


CONFIGS = sorted(
    {p.get_default("config") for _, p in COMMANDS} | set(C.KIND_CONFIGS.values()),
    key=lambda c: c.__name__,
)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_configs_round_trip_through_json(cls):
    import json

    cfg = _sample(cls)
    assert cls.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_from_dict_rejects_unknown_options():
    from monoscope._util import MonoscopeError

    with pytest.raises(MonoscopeError, match="unknown option"):
        C.DemoConfig.from_dict({"latens": 3})


def test_kind_configs_extend_each_other():
    assert issubclass(C.MatryoshkaConfig, C.BatchTopKConfig)
    assert issubclass(C.BatchTopKConfig, C.TopKConfig)


def test_kind_configs_match_the_constructors_and_hparams():
    from monoscope.featuremaps import KINDS
    from monoscope.featuremaps.train import METHODS

    assert set(C.KIND_CONFIGS) == set(METHODS) == set(C.METHODS)
    for kind, cls in C.KIND_CONFIGS.items():
        params = inspect.signature(KINDS[kind].__init__).parameters
        own = {n: p.default for n, p in params.items() if n not in ("self", "dim")}
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        assert own == fields, kind
        model = KINDS[kind](8, **{n: v for n, v in fields.items() if n == "mode"})
        if "latents" in fields:
            model = KINDS[kind](8, latents=16, **({"k": 4} if "k" in fields else {}))
        assert list(model.hparams()) == ["dim", *cls.saved()], kind


# The stage functions keep their keyword signatures; their names and defaults are the configs'.
STAGES = {
    "monoscope.embed:embed": (C.EmbedConfig, {"data", "image_column", "caption_column"}),
    "monoscope.featuremaps.train:train_featuremap": (C.TrainConfig, {"method"}),
    "monoscope.analysis.analyze:analyze": (C.AnalyzeConfig, set()),
    "monoscope.analysis.ablation:ablate": (C.AblateConfig, set()),
    "monoscope.analysis.compare:compare": (C.CompareConfig, set()),
    "monoscope.analysis.agreement:agreement": (C.AgreeConfig, set()),
    "monoscope.report:render_report": (C.ReportConfig, {"analysis", "open"}),
    "monoscope.demo:run_demo": (C.DemoConfig, set()),
    "monoscope.studies.gender:gender_study": (C.GenderConfig, set()),
    "monoscope.studies.adversarial:adversarial_study": (C.AdversarialConfig, set()),
    "monoscope.studies.steering:steer_study": (C.SteerConfig, set()),
    "monoscope.studies.decoder:train_decoder": (C.DecoderTrainConfig, set()),
    "monoscope.encoders.pocket_train:train_pocket": (C.PocketTrainConfig, {"out"}),
}


def _same(a: object, b: object) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    if isinstance(b, Path):
        return str(a) == str(b)
    return a == b


@pytest.mark.parametrize("target", sorted(STAGES))
def test_stage_functions_take_the_config_fields_with_its_defaults(target):
    import importlib

    module, name = target.split(":")
    fn = getattr(importlib.import_module(module), name)
    cls, cli_only = STAGES[target]
    params = {
        n: p
        for n, p in inspect.signature(fn).parameters.items()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    }
    for f in dataclasses.fields(cls):
        if f.name in cli_only:
            continue
        assert f.name in params, f"{name} lacks {f.name}"
        p = params[f.name]
        if f.default is not dataclasses.MISSING and p.default is not inspect.Parameter.empty:
            assert _same(p.default, f.default), f"{name}({f.name}={p.default!r}) vs {f.default!r}"


# --- the drifts the configs fixed -------------------------------------------------------------
def test_rule_test_is_accepted():
    args = build_parser().parse_args(
        ["analyze", "--store", "s", "--featuremap", "f", "--out", "o", "--rule", "test"]
    )
    assert args.rule == "test"


def test_epochs_are_fractional_on_the_cli_as_in_the_api():
    args = build_parser().parse_args(
        ["train", "--store", "s", "--method", "sae-topk", "--out", "o", "--epochs", "0.5"]
    )
    assert args.epochs == 0.5


@pytest.mark.parametrize(
    "flag", ["--l0", "--bandwidth", "--aux-k", "--prefixes", "--tau", "--no-shared", "--rep-relu"]
)
def test_every_kind_option_is_reachable(flag):
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert flag in help_text


def test_an_option_of_another_kind_is_one_line_error(tmp_path, capsys):
    code = main(
        ["train", "--store", str(tmp_path), "--method", "sae-topk", "--out", str(tmp_path / "f")]
        + ["--l1", "3"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == "monoscope: error: --l1 applies to sae-relu, not sae-topk"


def test_kind_options_reach_the_feature_map(small_store, tmp_path):
    from monoscope.featuremaps import load_featuremap

    out = tmp_path / "f"
    args = ["train", "--store", str(small_store), "--method", "sae-jumprelu", "--out", str(out)]
    extra = ["--latents", "16", "--l0", "2.5", "--bandwidth", "0.2", "--steps", "2", "--quiet"]
    assert main([*args, *extra, "--device", "cpu"]) == 0
    hp = load_featuremap(out).hparams()
    assert (hp["latents"], hp["l0"], hp["bandwidth"]) == (16, 2.5, 0.2)


def test_help_imports_no_torch():
    code = (
        "import sys\nfrom monoscope.cli import main\n"
        "for cmd in (['train'], ['analyze'], ['study', 'steer']):\n"
        "    try:\n        main([*cmd, '--help'])\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_strings_and_lists_become_paths_and_tuples():
    cfg = C.CompareConfig(analyses=["a", "b"], out="o")
    assert cfg == C.CompareConfig(analyses=(Path("a"), Path("b")), out=Path("o"))
    assert C.CompareConfig.from_dict(cfg.to_dict()) == cfg


def test_summary_records_the_analysis_options(small_store, tmp_path):
    import json

    from monoscope.featuremaps.identity import IdentityMap

    fmap = IdentityMap(8).save(tmp_path / "f")
    args = ["analyze", "--store", str(small_store), "--featuremap", str(fmap)]
    args += ["--out", str(tmp_path / "a"), "--quiet", "--device", "cpu", "--low", "0.2"]
    assert main(args) == 0
    recorded = json.loads((tmp_path / "a" / "summary.json").read_text())["options"]
    assert C.AnalyzeOptions.from_dict(recorded) == C.AnalyzeOptions(
        low=0.2, device="cpu", progress=False
    )


def test_record_keeps_the_config_fields_as_json():
    values = {"store": object(), "templates": ("a {}",), "max_pairs": 9, "local": 1}
    assert C.AblateConfig.record(values, "store") == {"templates": ["a {}"], "max_pairs": 9}


def test_study_outputs_record_their_options(tmp_path):
    import json

    import numpy as np

    from monoscope.studies.gender import gender_study
    from test_studies_common import LookupEncoder
    from test_studies_gender import EMOJI_KEYS, _text, gender_case

    store, fmap, analysis = gender_case(tmp_path)
    out = gender_study(
        store,
        fmap,
        analysis,
        tmp_path / "g",
        model=LookupEncoder(np.zeros((1, 8)), _text),
        templates=("{}",),
        permutations=50,
        control_seeds=1,
        device="cpu",
        progress=False,
        **EMOJI_KEYS,
    )
    options = json.loads(out.read_text())["settings"]["options"]
    assert options["permutations"] == 50 and "store" not in options
    assert C.GenderConfig.from_dict({**options, "store": "s", "featuremap": "f", "out": "o"})
