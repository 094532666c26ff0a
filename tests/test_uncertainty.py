import itertools

import numpy as np
import pytest
import torch

from monoscope.analysis.mds import group_features, modality_dominance
from monoscope.analysis.uncertainty import (
    PoissonBootstrap,
    SignFlipTest,
    benjamini_hochberg,
    group_by_test,
    summarise_bootstrap,
)


def test_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # sorted 0.005, 0.01, 0.03, 0.04 -> p*m/rank = 0.02, 0.02, 0.04, 0.04 (already monotone)
    np.testing.assert_allclose(benjamini_hochberg(p)[:4], [0.02, 0.04, 0.04, 0.02])
    assert np.isnan(benjamini_hochberg(p)[4])
    # monotonicity step: 0.04*3/2 = 0.06 > 0.05*3/3 = 0.05 -> both 0.05
    np.testing.assert_allclose(benjamini_hochberg(np.array([0.01, 0.04, 0.05])), [0.03, 0.05, 0.05])


def test_sign_flip_p_value_matches_exact_enumeration():
    rng = np.random.default_rng(3)
    d = np.round(rng.normal(0.4, 1.0, size=(10, 1)), 2)
    # exact two-sided p over all 2^10 sign patterns
    signs = np.array(list(itertools.product([-1, 1], repeat=10)))
    null = np.abs(signs @ d[:, 0])
    exact = (null >= abs(d.sum()) - 1e-9).mean()
    test = SignFlipTest(1, permutations=4000, seed=0)
    img = torch.tensor(np.maximum(d, 0), dtype=torch.float32)
    txt = torch.tensor(np.maximum(-d, 0), dtype=torch.float32)
    for lo in range(0, 10, 3):  # streamed in batches
        test.update(img[lo : lo + 3], txt[lo : lo + 3])
    assert test.p_values()[0] == pytest.approx(exact, abs=0.02)


def test_group_by_test_needs_significance_and_effect():
    mds = np.array([0.9, 0.9, 0.55, 0.1, np.nan])
    q = np.array([0.01, 0.5, 0.001, 0.01, np.nan])
    g = group_by_test(mds, q, fdr=0.05, min_effect=0.1)
    assert list(g.groups) == ["ImgD", "CrossD", "CrossD", "TextD", "dead"]


def test_constant_feature_has_zero_width_ci_and_full_stability():
    n, k = 400, 3
    img = torch.tensor([[3.0, 1.0, 0.0]]).repeat(n, 1)
    txt = torch.tensor([[1.0, 1.0, 2.0]]).repeat(n, 1)
    boot = PoissonBootstrap(k, replicates=50, seed=0)
    for lo in range(0, n, 64):
        boot.update(img[lo : lo + 64], txt[lo : lo + 64])
    mds = modality_dominance(img.mean(0).numpy(), txt.mean(0).numpy())
    point = group_features(mds)
    res = summarise_bootstrap(boot, point, mds)
    np.testing.assert_allclose(res.mds_low, [0.75, 0.5, 0.0], atol=1e-9)
    np.testing.assert_allclose(res.mds_high, [0.75, 0.5, 0.0], atol=1e-9)
    np.testing.assert_allclose(res.stability, 1.0)
    assert res.group_ci["ImgD"] == (1.0, 1.0)  # every replicate agrees: zero width


def test_bootstrap_ci_matches_delta_method():
    rng = np.random.default_rng(0)
    n = 4000
    a = rng.exponential(2.0, n)  # image activations, mean 2
    b = rng.exponential(1.0, n)  # text activations, mean 1
    boot = PoissonBootstrap(1, replicates=400, seed=1)
    boot.update(
        torch.tensor(a[:, None], dtype=torch.float32), torch.tensor(b[:, None], dtype=torch.float32)
    )
    mu_i, mu_t = boot.means()
    reps = mu_i[:, 0] / (mu_i[:, 0] + mu_t[:, 0])
    # delta method for r = A / (A + B) with independent A, B: grad = (B, -A) / (A + B)^2
    ma, mb = a.mean(), b.mean()
    se = np.sqrt((mb**2 * a.var() + ma**2 * b.var()) / n) / (ma + mb) ** 2
    assert reps.std() == pytest.approx(se, rel=0.15)
    assert abs(reps.mean() - ma / (ma + mb)) < se


def test_group_size_ci_not_shrunk_by_features_silent_in_a_replicate():
    # 40 common features and 10 that fire on a single pair: a replicate that drops that pair
    # must not make every group smaller.
    n, rng = 200, np.random.default_rng(0)
    img = torch.tensor(rng.exponential(1.0, (n, 50)), dtype=torch.float32)
    txt = torch.tensor(rng.exponential(1.0, (n, 50)), dtype=torch.float32)
    img[:, 40:] = 0
    txt[:, 40:] = 0
    img[7, 40:] = 1.0
    boot = PoissonBootstrap(50, replicates=100, seed=0)
    boot.update(img, txt)
    mds = modality_dominance(img.mean(0).numpy(), txt.mean(0).numpy())
    point = group_features(mds)
    res = summarise_bootstrap(boot, point, mds)
    total_lo = sum(res.group_ci[g][0] for g in ("ImgD", "TextD", "CrossD"))
    total_hi = sum(res.group_ci[g][1] for g in ("ImgD", "TextD", "CrossD"))
    assert total_lo <= 50 <= total_hi
    lo, hi = res.group_ci["ImgD"]  # the 10 rare features are ImgD (MDS 1) in every replicate
    assert point.counts()["ImgD"] - 3 <= lo <= point.counts()["ImgD"] <= hi
    assert (res.stability[40:] < 0.8).all()  # silent in about 37% of replicates


def test_normal_ci_by_hand():
    from monoscope.analysis.uncertainty import normal_ci

    reps = np.array([10.0, 12.0, 14.0])  # sample std 2
    lo, hi = normal_ci(reps, 11.0)
    assert (lo, hi) == pytest.approx((11 - 1.959964 * 2, 11 + 1.959964 * 2), abs=1e-5)
