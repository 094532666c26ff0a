import numpy as np
import pytest

from monoscope._util import MonoscopeError
from monoscope.analysis.gap import GapAccumulator, describe_gap, modality_gap
from monoscope.store import Store


def _direct(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> dict[str, float]:
    """O(N^2) reference: every image against every caption, pairs weighted by ``w``."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    w = np.ones(len(x)) if w is None else w
    cos = x @ y.T
    ww = np.outer(w, w)
    np.fill_diagonal(ww, 0)
    cx, cy = (w @ x) / w.sum(), (w @ y) / w.sum()
    return {
        "centroid_distance": float(np.linalg.norm(cx - cy)),
        "matched_cosine": float((w * np.diag(cos)).sum() / w.sum()),
        "unmatched_cosine": float((ww * cos).sum() / ww.sum()),
    }


def _offset_pairs(n: int, d: int, offset: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n, d))
    shift = np.zeros(d)
    shift[0] = offset
    return shared + 0.5 * rng.standard_normal((n, d)) + shift, shared - shift


def test_streamed_gap_equals_the_quadratic_reference():
    x, y = _offset_pairs(120, 6, 2.0)
    acc = GapAccumulator(6, replicates=0)
    for lo in range(0, 120, 37):  # uneven batches
        acc.update(x[lo : lo + 37], y[lo : lo + 37])
    got, ref = acc.result(), _direct(x, y)
    for name, value in ref.items():
        assert got[name]["value"] == pytest.approx(value, rel=1e-10, abs=1e-12)
        assert got[name]["ci"] is None
    assert got["matched_minus_unmatched"]["value"] == pytest.approx(
        ref["matched_cosine"] - ref["unmatched_cosine"]
    )
    assert got["n_pairs"] == 120 and ref["centroid_distance"] > 1.0


def test_bootstrap_replicates_equal_the_weighted_reference():
    x, y = _offset_pairs(40, 5, 1.0, seed=3)
    acc = GapAccumulator(5, replicates=3, seed=7)
    acc.update(x[:25], y[:25])
    acc.update(x[25:], y[25:])
    rng = np.random.default_rng(7)  # the same draws, batch by batch
    w = np.concatenate([rng.poisson(1.0, (3, 25)), rng.poisson(1.0, (3, 15))], axis=1)
    stats = acc._statistics()
    for r in range(3):
        ref = _direct(x, y, w[r].astype(float))
        for name, value in ref.items():
            assert stats[name][r + 1] == pytest.approx(value, rel=1e-10)


def test_interval_covers_the_point_and_shrinks_with_no_gap():
    x, y = _offset_pairs(400, 8, 3.0, seed=1)
    gap = GapAccumulator(8, replicates=100, seed=0)
    gap.update(x, y)
    res = gap.result()
    for name in ("centroid_distance", "matched_cosine", "unmatched_cosine"):
        lo, hi = res[name]["ci"]
        assert lo <= res[name]["value"] <= hi
    assert res["centroid_distance"]["ci"][0] > 0.5
    same = GapAccumulator(8, replicates=0)
    same.update(x, x)
    assert same.result()["centroid_distance"]["value"] == pytest.approx(0, abs=1e-12)
    assert same.result()["matched_cosine"]["value"] == pytest.approx(1.0)
    assert "centroid distance" in describe_gap(res)


def test_too_few_pairs_is_a_clear_error():
    acc = GapAccumulator(3, replicates=2)
    acc.update(np.ones((1, 3)), np.ones((1, 3)))
    with pytest.raises(MonoscopeError, match="at least 2 pairs"):
        acc.result()


def test_store_gap_matches_direct(small_store):
    store = Store(small_store)
    res = modality_gap(store, replicates=10, batch_size=7)
    ref = _direct(store.load("image").astype(float), store.load("text").astype(float))
    assert res["unmatched_cosine"]["value"] == pytest.approx(ref["unmatched_cosine"], rel=1e-9)
    assert res["centroid_distance"]["value"] == pytest.approx(ref["centroid_distance"])


def test_analysis_summary_report_and_doctor_show_the_gap(small_store, tmp_path, capsys):
    import json

    from monoscope.analysis.analyze import analyze
    from monoscope.cli import main
    from monoscope.featuremaps.identity import IdentityMap
    from monoscope.report import render_report

    out = analyze(
        small_store, IdentityMap(8), tmp_path / "a", gap_bootstrap=20, device="cpu", progress=False
    )
    gap = json.loads((out / "summary.json").read_text())["modality_gap"]
    ref = modality_gap(Store(small_store), replicates=20)
    assert gap["centroid_distance"]["value"] == pytest.approx(ref["centroid_distance"]["value"])
    assert gap["bootstrap"]["replicates"] == 20 and len(gap["matched_cosine"]["ci"]) == 2
    html = render_report(out, tmp_path / "r.html").read_text()
    assert 'data-gap="centroid_distance"' in html and "modality gap" in html
    assert main(["doctor", str(small_store)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("ok\nmodality gap: centroid distance ")
