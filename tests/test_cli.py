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
