import json
from pathlib import Path

import numpy as np
import pytest

from monoscope._util import MonoscopeError, write_json
from monoscope.analysis.agreement import (
    LABELS,
    agreement,
    cohen_kappa,
    describe_agreement,
    fleiss_kappa,
)

V, T, B, X = (LABELS.index(x) for x in ("visual", "textual", "both", "incoherent"))
RATER_A = [V, V, T, B, V, T, X, B, V, T]
RATER_B = [V, T, T, B, V, T, B, B, V, V]


def test_cohen_kappa_by_hand():
    # agreement 7/10; marginals A (4 v, 3 t, 2 b, 1 i), B (4 v, 3 t, 3 b, 0 i):
    # p_e = (16 + 9 + 6 + 0) / 100 = 0.31, kappa = (0.7 - 0.31) / 0.69
    k = cohen_kappa(np.array(RATER_A), np.array(RATER_B), 4)
    assert k[0] == pytest.approx(0.39 / 0.69)
    sklearn = pytest.importorskip("sklearn.metrics")
    assert k[0] == pytest.approx(sklearn.cohen_kappa_score(RATER_A, RATER_B))


def test_cohen_kappa_weights_equal_repeated_items():
    w = np.array([[2, 1, 1, 1, 1, 1, 1, 1, 1, 3]], float)
    a = np.repeat(RATER_A, w[0].astype(int))
    b = np.repeat(RATER_B, w[0].astype(int))
    assert cohen_kappa(np.array(RATER_A), np.array(RATER_B), 4, w)[0] == pytest.approx(
        cohen_kappa(a, b, 4)[0]
    )
    assert np.isnan(cohen_kappa(np.array([V, V]), np.array([V, V]), 4)[0])  # chance = 1


def test_fleiss_kappa_by_hand():
    # 3 raters, 4 items: (v v v), (v v t), (t t t), (b t b)
    # P_i = 1, 1/3, 1, 1/3 -> P = 2/3; p = (5/12, 5/12, 2/12, 0) -> P_e = 54/144 = 3/8
    # kappa = (2/3 - 3/8) / (5/8) = 7/15
    counts = np.array([[3, 0, 0, 0], [2, 1, 0, 0], [0, 3, 0, 0], [0, 1, 2, 0]], float)
    assert fleiss_kappa(counts)[0] == pytest.approx(7 / 15)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[2, 0, 0, 0], [1, 0, 0, 0]], float))


def _analysis(tmp_path: Path, groups: list[str]) -> Path:
    a = tmp_path / "analysis"
    a.mkdir()
    rows = ["feature,alive,mu_img,mu_txt,mds,group"]
    rows += [f"{k},{int(g != 'dead')},1,1,0.5,{g}" for k, g in enumerate(groups)]
    (a / "features.csv").write_text("\n".join(rows) + "\n")
    write_json(a / "summary.json", {"n_features": len(groups), "featuremap": "/fm"})
    return a


def _ratings(path: Path, rater: str, labels: dict[int, int], **analysis) -> Path:
    write_json(
        path,
        {
            "format": "monoscope-ratings",
            "version": 1,
            "rater": rater,
            "analysis": analysis,
            "ratings": [{"feature": k, "label": LABELS[c]} for k, c in labels.items()],
        },
    )
    return path


GROUPS = [
    "ImgD",
    "ImgD",
    "TextD",
    "CrossD",
    "ImgD",
    "TextD",
    "CrossD",
    "CrossD",
    "ImgD",
    "undetermined",
]


def test_agree_two_raters_and_the_verdict(tmp_path: Path, capsys):
    from monoscope.cli import main

    a = _analysis(tmp_path, GROUPS)
    ra = _ratings(tmp_path / "a.json", "ann", dict(enumerate(RATER_A)), n_features=10)
    rb = _ratings(tmp_path / "b.json", "bob", dict(enumerate(RATER_B)), featuremap="/fm")
    out = tmp_path / "agree"
    assert (
        main(
            [
                "agree",
                "--analysis",
                str(a),
                str(ra),
                str(rb),
                "--out",
                str(out),
                "--bootstrap",
                "200",
            ]
        )
        == 0
    )
    res = json.loads((out / "agree.json").read_text())
    inter = res["inter_rater"]
    assert inter["method"] == "cohen" and inter["n_items"] == 10
    assert inter["kappa"]["value"] == pytest.approx(0.39 / 0.69)
    lo, hi = inter["kappa"]["ci"]
    assert lo <= inter["kappa"]["value"] <= hi
    # ann vs verdict (feature 9 is undetermined: not compared): verdicts v v t b v t b b v,
    # ann v v t b v t i b v -> 8/9 agree; kappa by hand:
    # verdict marginals (4 v, 2 t, 3 b, 0 i), ann (4 v, 2 t, 2 b, 1 i): p_e = (16 + 4 + 6) / 81
    ann = res["verdict"]["ann"]
    assert ann["n"] == 9 and ann["not_compared"] == {"undetermined": 1}
    assert ann["agreement"]["value"] == pytest.approx(8 / 9)
    p_e = 26 / 81
    assert ann["kappa"]["value"] == pytest.approx((8 / 9 - p_e) / (1 - p_e))
    assert ann["confusion"]["CrossD"] == {"visual": 0, "textual": 0, "both": 2, "incoherent": 1}
    assert res["consensus"]["ties_dropped"] == 3  # items 1, 6 and 9 split the two raters
    printed = capsys.readouterr().out
    assert "between raters: Cohen's kappa 0.565" in printed and "ann vs verdict" in printed
    assert describe_agreement(res)[0] == printed.splitlines()[0]


def test_agree_three_raters_use_fleiss(tmp_path: Path):
    a = _analysis(tmp_path, ["ImgD", "ImgD", "TextD", "CrossD"])
    files = [
        _ratings(tmp_path / f"{n}.json", n, dict(enumerate(labels)))
        for n, labels in (("r1", [V, V, T, B]), ("r2", [V, V, T, T]), ("r3", [V, T, T, B]))
    ]
    res = json.loads(agreement(a, files, tmp_path / "o", bootstrap=50).read_text())
    assert res["inter_rater"]["method"] == "fleiss"
    assert res["inter_rater"]["kappa"]["value"] == pytest.approx(7 / 15)
    assert len(res["inter_rater"]["pairwise"]) == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"format": "other"}, "not a ratings file"),
        (
            {"format": "monoscope-ratings", "ratings": [{"feature": 0, "label": "red"}]},
            "bad rating",
        ),
        ({"format": "monoscope-ratings", "ratings": [{"feature": 99, "label": "both"}]}, "not in"),
        ({"format": "monoscope-ratings", "ratings": []}, "no ratings"),
        (
            {"format": "monoscope-ratings", "analysis": {"n_features": 3}, "ratings": []},
            "another analysis",
        ),
    ],
)
def test_bad_ratings_files_are_one_line_errors(tmp_path: Path, content, message):
    a = _analysis(tmp_path, GROUPS)
    write_json(tmp_path / "r.json", content)
    with pytest.raises(MonoscopeError, match=message):
        agreement(a, [tmp_path / "r.json"], tmp_path / "o")
