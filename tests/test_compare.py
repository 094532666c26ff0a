import json
from pathlib import Path

import pytest

from monoscope._util import MonoscopeError
from monoscope.analysis.analyze import analyze, read_feature_table
from monoscope.analysis.monosemanticity import win_rate
from monoscope.cli import main
from monoscope.featuremaps.identity import IdentityMap


def test_compare_two_maps(small_store: Path, tmp_path: Path):
    a = analyze(small_store, IdentityMap(8), tmp_path / "a", device="cpu", progress=False)
    b = analyze(
        small_store,
        IdentityMap(8, mode="abs"),
        tmp_path / "b",
        device="cpu",
        progress=False,
    )
    assert (
        main(["compare", str(a), str(b), "--out", str(tmp_path / "c"), "--names", "split", "abs"])
        == 0
    )
    result = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert result["format_version"] == 1
    assert [e["name"] for e in result["analyses"]] == ["split", "abs"]
    assert result["analyses"][0]["n_features"] == 16 and result["analyses"][1]["n_features"] == 8
    ta, tb = read_feature_table(a / "features.csv"), read_feature_table(b / "features.csv")
    assert result["win_rate"]["embsim_img"]["split > abs"] == pytest.approx(
        win_rate(ta["embsim_img"], tb["embsim_img"])
    )
    # the two directions are complementary (AUC(A > B) + AUC(B > A) = 1)
    assert result["win_rate"]["ms_txt"]["split > abs"] + result["win_rate"]["ms_txt"][
        "abs > split"
    ] == pytest.approx(1.0)
    assert (tmp_path / "c" / "mds.png").stat().st_size > 1000


def test_compare_needs_two(tmp_path: Path):
    from monoscope.analysis.compare import compare

    with pytest.raises(MonoscopeError, match="at least two"):
        compare([tmp_path], tmp_path / "c")
