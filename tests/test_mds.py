import numpy as np
import pytest

from monoscope.analysis.mds import group_features, modality_dominance


def test_ratio_of_means_by_hand():
    mu_img = np.array([3.0, 0.0, 1.0, 0.0])
    mu_txt = np.array([1.0, 2.0, 1.0, 0.0])
    mds = modality_dominance(mu_img, mu_txt)
    np.testing.assert_allclose(mds[:3], [0.75, 0.0, 0.5])
    assert np.isnan(mds[3])  # dead


def test_signed_and_mean_of_ratios():
    mu_img, mu_txt = np.array([3.0, 1.0]), np.array([1.0, 3.0])
    np.testing.assert_allclose(modality_dominance(mu_img, mu_txt, "signed"), [0.5, -0.5])
    np.testing.assert_allclose(
        modality_dominance(mu_img, mu_txt, "mean-of-ratios", np.array([0.9, 0.2])), [0.9, 0.2]
    )
    with pytest.raises(ValueError):
        modality_dominance(mu_img, mu_txt, "nope")


def test_std_rule_by_hand():
    # alive MDS: 0.1, 0.5, 0.5, 0.5, 0.9 -> mean 0.5, population std sqrt(0.064) = 0.25298
    mds = np.array([0.1, 0.5, 0.5, 0.5, 0.9, np.nan])
    g = group_features(mds)
    assert g.low == pytest.approx(0.5 - np.sqrt(0.064))
    assert g.high == pytest.approx(0.5 + np.sqrt(0.064))
    assert list(g.groups) == ["TextD", "CrossD", "CrossD", "CrossD", "ImgD", "dead"]
    assert g.counts() == {"ImgD": 1, "TextD": 1, "CrossD": 3}


def test_fixed_and_quantile_rules():
    mds = np.linspace(0, 1, 11)
    fixed = group_features(mds, "fixed", low=0.25, high=0.75)
    assert fixed.counts() == {"ImgD": 3, "TextD": 3, "CrossD": 5}
    q = group_features(mds, "quantile", quantile=0.1)
    assert (q.low, q.high) == pytest.approx((0.1, 0.9))
    assert q.counts() == {"ImgD": 2, "TextD": 2, "CrossD": 7}  # inclusive: 0, 0.1 | 0.9, 1
    # the 0.8 quantile is 1.0, shared by three features: all three are ImgD
    ties = group_features(np.array([0.0, 0.4, 0.5, 0.6, 1.0, 1.0, 1.0]), "quantile", quantile=0.2)
    assert ties.high == 1.0 and ties.low == pytest.approx(0.42)
    assert ties.counts() == {"ImgD": 3, "TextD": 2, "CrossD": 2}
