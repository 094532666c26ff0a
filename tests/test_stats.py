import numpy as np
import torch

from monoscope.analysis.stats import FeatureStats, RatioStats


def test_streaming_matches_full_pass_oracle():
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.standard_normal((137, 9)), 0).astype(np.float32)
    acts[:, 8] = 0  # a dead feature
    stats = FeatureStats(9, top_m=5)
    for lo in range(0, 137, 10):
        stats.update(torch.from_numpy(acts[lo : lo + 10]), lo)
    idx, val = stats.top()
    for k in range(8):  # O(N log N) oracle per feature
        order = np.argsort(-acts[:, k], kind="stable")[:5]
        np.testing.assert_array_equal(np.sort(idx[k]), np.sort(order))
        np.testing.assert_allclose(val[k], acts[order, k])
    assert (idx[8] == -1).all() and (val[8] == 0).all()


def test_fewer_active_samples_than_m_are_padded():
    stats = FeatureStats(1, top_m=4)
    stats.update(torch.tensor([[0.0], [2.0], [0.0], [1.0]]), 0)
    idx, val = stats.top()
    assert idx.tolist() == [[1, 3, -1, -1]] and val.tolist() == [[2.0, 1.0, 0.0, 0.0]]


def test_mean_of_ratios_by_hand():
    r = RatioStats(2)
    r.update(torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([[1.0, 0.0], [1.0, 2.0]]))
    # feature 0: (1/2 + 3/4) / 2; feature 1: only pair 2 active -> 0 / 2
    np.testing.assert_allclose(r.mean, [0.625, 0.0])
