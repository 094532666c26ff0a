import itertools

import numpy as np
import pytest
import torch

from monoscope.analysis.uncertainty import SignFlipTest, benjamini_hochberg, group_by_test


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
