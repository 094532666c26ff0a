import pytest

from monoscope.cli import main


def test_bad_input_is_one_line_error_and_nonzero(tmp_path, capsys):
    code = main(
        [
            "analyze",
            "--store",
            str(tmp_path / "nope"),
            "--featuremap",
            str(tmp_path),
            "--out",
            str(tmp_path / "a"),
            "--quiet",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("monoscope: error:") and "not a store" in err and "\n" not in err


def test_unknown_data_source(tmp_path, capsys):
    code = main(
        [
            "embed",
            "--model",
            "pocket",
            "--data",
            "nothing.txt",
            "--out",
            str(tmp_path / "s"),
            "--quiet",
        ]
    )
    assert code == 2
    assert "unknown source" in capsys.readouterr().err


def test_help_lists_stages(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "embed", "train", "analyze", "report", "pocket"):
        assert cmd in out


def test_cli_methods_are_the_trainers():
    from monoscope.cli import METHODS
    from monoscope.featuremaps.train import METHODS as TRAIN_METHODS

    assert METHODS == TRAIN_METHODS


def _analyze_args(store, fmap, out, *extra):
    args = ["analyze", "--store", str(store), "--featuremap", str(fmap), "--out", str(out)]
    return [*args, "--quiet", "--device", "cpu", *extra]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--low", "-0.1"], "must be >= 0 and <= 1"),
        (["--high", "1.5"], "must be >= 0 and <= 1"),
        (["--quantile", "0.8"], "must be > 0 and < 0.5"),
        (["--fdr", "nan"], "not a finite number"),
        (["--fdr", "1"], "must be > 0 and < 1"),
        (["--min-firings", "0"], "must be >= 1"),
    ],
)
def test_rule_options_are_validated_at_parse_time(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        main(_analyze_args(tmp_path / "s", tmp_path / "f", tmp_path / "a", *extra))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err and "Traceback" not in err


def test_thresholds_out_of_order_are_one_line_error(small_store, tmp_path, capsys):
    from monoscope.featuremaps.identity import IdentityMap

    fmap = IdentityMap(8).save(tmp_path / "f")
    extra = ["--low", "0.9", "--high", "0.1"]
    assert main(_analyze_args(small_store, fmap, tmp_path / "a", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert "0 <= low < high <= 1" in err and "\n" not in err
    assert not (tmp_path / "a" / "summary.json").exists()


@pytest.mark.parametrize("rule", ["evidence", "std", "fixed", "quantile", "test"])
def test_every_rule_runs_from_the_cli(small_store, tmp_path, rule):
    import json

    from monoscope.featuremaps.identity import IdentityMap

    fmap = IdentityMap(8).save(tmp_path / "f")
    out = tmp_path / "a"
    extra = ["--rule", rule, "--permutations", "50"] if rule == "test" else ["--rule", rule]
    assert main(_analyze_args(small_store, fmap, out, *extra)) == 0
    grouping = json.loads((out / "summary.json").read_text())["grouping"]
    assert grouping["rule"] == rule and 0 <= grouping["low"] < grouping["high"] <= 1
