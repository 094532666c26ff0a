import json
from pathlib import Path

import numpy as np
import pytest

from monoscope._util import MonoscopeError
from monoscope.analysis.analyze import analyze, read_feature_table
from monoscope.analysis.monosemanticity import ms_oracle
from monoscope.featuremaps.identity import IdentityMap
from monoscope.store import Store


def test_identity_analysis_matches_numpy(small_store: Path, tmp_path: Path):
    out = analyze(
        small_store,
        IdentityMap(8),
        tmp_path / "a",
        top_m=3,
        rule="std",
        device="cpu",
        progress=False,
    )
    s = Store(small_store)
    img, txt = s.load("image"), s.load("text")
    a_img = np.concatenate([np.maximum(img, 0), np.maximum(-img, 0)], 1)
    a_txt = np.concatenate([np.maximum(txt, 0), np.maximum(-txt, 0)], 1)
    table = read_feature_table(out / "features.csv")
    np.testing.assert_allclose(table["mu_img"], a_img.mean(0), rtol=1e-5)
    np.testing.assert_allclose(table["mu_txt"], a_txt.mean(0), rtol=1e-5)
    mds = a_img.mean(0) / (a_img.mean(0) + a_txt.mean(0))
    np.testing.assert_allclose(table["mds"], mds, rtol=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_features"] == 16 and summary["n_alive"] == 16 and summary["n_pairs"] == 50
    counts = {g: v["count"] for g, v in summary["groups"].items()}
    assert sum(counts.values()) == 16 and counts["undetermined"] == counts["rare"] == 0
    mu, sd = mds.mean(), mds.std()
    assert counts["ImgD"] == int((mds > mu + sd).sum())
    assert counts["TextD"] == int((mds < mu - sd).sum())
    top = np.load(out / "top" / "image_idx.npy")
    assert top.shape == (16, 50)  # max(top_m, 50) kept for the m-sweep, sorted
    np.testing.assert_array_equal(np.sort(top[0, :3]), np.sort(np.argsort(-a_img[:, 0])[:3]))
    # EmbSim of feature 0 on images: mean pairwise cosine of its 3 top image embeddings
    e = img[top[0, :3]]
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    g = e @ e.T
    assert table["embsim_img"][0] == pytest.approx((g.sum() - 3) / 6, abs=1e-5)
    np.testing.assert_allclose(table["ms_img"], ms_oracle(a_img, img), rtol=1e-4, atol=1e-6)
    xcorr = [np.corrcoef(a_img[:, j], a_txt[:, j])[0, 1] for j in range(16)]
    np.testing.assert_allclose(table["xcorr"], xcorr, rtol=1e-4, atol=1e-6)
    metrics = summary["metrics"]
    assert set(metrics["m_sweep"]) == {"3", "5", "10", "20", "50"}
    assert metrics["embsim_img"]["all"]["n"] == 16


def test_dimension_mismatch_is_a_clear_error(small_store: Path, tmp_path: Path):
    with pytest.raises(MonoscopeError, match="dimension 8 but the feature map expects 4"):
        analyze(small_store, IdentityMap(4), tmp_path / "a", device="cpu", progress=False)


def test_test_rule_and_interval_columns(small_store: Path, tmp_path: Path):
    out = analyze(
        small_store,
        IdentityMap(8),
        tmp_path / "a",
        rule="test",
        permutations=200,
        device="cpu",
        progress=False,
    )
    table = read_feature_table(out / "features.csv")
    assert {"q_value", "mds_ci_low", "mds_ci_high", "confidence"} <= set(table)
    ok = np.isfinite(table["mds"])
    assert (table["mds_ci_low"][ok] <= table["mds"][ok] + 1e-6).all()
    assert (table["mds_ci_high"][ok] >= table["mds"][ok] - 1e-6).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grouping"]["rule"] == "test"
    for g in ("ImgD", "TextD", "CrossD"):
        lo, hi = summary["groups"][g]["ci"]
        assert lo <= hi
    # significance: a feature is ImgD/TextD only where its q-value passes the FDR level
    sided = np.isin(table["group"], ["ImgD", "TextD"])
    assert (table["q_value"][sided] <= 0.05).all()


def test_rare_warning_suggests_fewer_latents_only_for_trained_maps(small_store, tmp_path):
    import warnings

    from monoscope.analysis.analyze import analyze
    from monoscope.featuremaps.identity import IdentityMap

    fmap = IdentityMap(8).save(tmp_path / "f")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        analyze(small_store, fmap, tmp_path / "a", device="cpu", progress=False, min_firings=1000)
    rare = [str(w.message) for w in caught if "are rare" in str(w.message)]
    assert rare and all(m.endswith("use more pairs") for m in rare)
