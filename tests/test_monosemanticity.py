import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monoscope.analysis.evidence import MomentAccumulator
from monoscope.analysis.monosemanticity import (
    BootstrapMeans,
    MSAccumulator,
    embsim,
    mean_ci,
    mean_pairwise_cosine,
    ms_oracle,
    random_embsim,
    random_sets,
    win_rate,
)


def _cos(u, v):
    return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))


def test_embsim_by_hand():
    # three 2-d vectors at 0, 90 and 180 degrees: cosines 0, -1, 0 -> mean -1/3
    e = np.array([[[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]])
    assert embsim(e)[0] == pytest.approx(-1 / 3)


def test_embsim_with_padding_matches_pairwise_loop():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((4, 5, 3))
    valid = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]], bool)
    got = embsim(e, valid)
    for k in (0, 1, 3):
        rows = e[k][valid[k]]
        ref = np.mean([_cos(a, b) for a, b in itertools.permutations(rows, 2)])
        assert got[k] == pytest.approx(ref, abs=1e-6)
    assert np.isnan(got[2])


def test_embsim_m_sweep_matches_pairwise_loop_per_prefix():
    rng = np.random.default_rng(3)
    e = rng.standard_normal((3, 7, 4))
    valid = np.ones((3, 7), bool)
    valid[2, 3:] = False
    got = embsim(e, valid, ms=[2, 5, 7])
    assert got.shape == (3, 3)
    for j, m in enumerate((2, 5, 7)):
        for k in range(3):
            rows = e[k, :m][valid[k, :m]]
            ref = np.mean([_cos(a, b) for a, b in itertools.permutations(rows, 2)])
            assert got[j, k] == pytest.approx(ref, abs=1e-6)


def test_random_set_null_is_centred_on_mean_pairwise_cosine():
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((60, 4)) + np.array([1.0, 0, 0, 0])
    ref = np.mean([_cos(a, b) for a, b in itertools.permutations(emb, 2)])
    assert mean_pairwise_cosine(emb) == pytest.approx(ref, abs=1e-6)
    null = random_embsim(lambda idx: emb[idx], 60, m=5, samples=4000, seed=0)
    assert null.mean() == pytest.approx(ref, abs=0.01)


def test_random_sets_have_distinct_members_both_paths():
    for n in (30, 10_000):  # argsort path and rejection path
        idx = random_sets(n, 20, samples=600, seed=2)
        assert idx.shape == (600, 20) and idx.max() < n
        assert (np.diff(np.sort(idx, 1), axis=1) > 0).all()


def test_ms_streaming_matches_quadratic_oracle():
    rng = np.random.default_rng(2)
    acts = np.maximum(rng.standard_normal((70, 6)), 0).astype(np.float32)
    acts[:, 5] = 1.0  # constant feature -> NaN
    emb = rng.standard_normal((70, 4)).astype(np.float32)
    acc = MSAccumulator(6, 4)
    for lo in range(0, 70, 16):
        acc.update(torch.from_numpy(acts[lo : lo + 16]), emb[lo : lo + 16])
    got, ref = acc.scores(), ms_oracle(acts, emb)
    np.testing.assert_allclose(got[:5], ref[:5], rtol=1e-5, atol=1e-7)
    assert np.isnan(got[5]) and np.isnan(ref[5])


def test_ms_is_one_for_a_feature_firing_on_identical_embeddings():
    emb = np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3, np.float32)
    acts = np.array([[1.0], [2.0], [3.0], [0.0], [0.0], [0.0]], np.float32)
    acc = MSAccumulator(1, 2)
    acc.update(torch.from_numpy(acts), emb)
    assert acc.scores()[0] == pytest.approx(1.0)


def test_cross_modal_correlation_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.random((50, 3)).astype(np.float32)
    y = (0.5 * x + rng.random((50, 3)) * np.array([0.1, 1.0, 10.0])).astype(np.float32)
    acc = MomentAccumulator(3)
    for lo in range(0, 50, 7):
        acc.update(torch.from_numpy(x[lo : lo + 7]), torch.from_numpy(y[lo : lo + 7]))
    ref = [np.corrcoef(x[:, k], y[:, k])[0, 1] for k in range(3)]
    np.testing.assert_allclose(acc.result().correlation, ref, rtol=1e-5)  # float32 batch sums


def test_win_rate_matches_pairwise_oracle_with_ties():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 5, 40).astype(float)
    b = rng.integers(0, 5, 30).astype(float)
    ref = np.mean([1.0 if u > v else 0.5 if u == v else 0.0 for u in a for v in b])
    assert win_rate(a, b) == pytest.approx(ref)
    assert win_rate([1, 2], [0, 0]) == 1.0 and win_rate([1.0], [1.0]) == 0.5


def test_mean_ci_brackets_the_mean():
    v = np.random.default_rng(5).normal(2.0, 1.0, 400)
    r = mean_ci(v)
    assert r["ci"][0] < r["mean"] < r["ci"][1]
    assert r["ci"][1] - r["ci"][0] == pytest.approx(2 * 1.96 / 20, rel=0.2)
    assert mean_ci(np.array([np.nan]))["mean"] is None


@pytest.mark.parametrize("budget", [0, 1 << 28])
def test_bootstrap_means_are_the_resampled_means(budget: int):
    rng = np.random.default_rng(7)
    means = BootstrapMeans(replicates=300, seed=3, budget=budget)
    for n in (1, 2, 57, 57, 400):
        v = rng.normal(size=n)
        idx = np.random.default_rng(3).integers(0, n, (300, n))  # the resamples, drawn directly
        lo, hi = np.percentile(v[idx].mean(1), [2.5, 97.5])
        r = means(v)
        assert r["n"] == n and r["mean"] == pytest.approx(v.mean())
        assert r["ci"] == pytest.approx([lo, hi], rel=1e-12, abs=1e-12)
    assert len(means._counts) == (0 if budget == 0 else 4)  # sizes 1, 2, 57 and 400


def test_embsim_prefix_lengths_match_truncated_sets():
    rng = np.random.default_rng(6)
    e = rng.standard_normal((5, 6, 4))
    valid = np.ones((5, 6), bool)
    valid[1, 4:] = False
    both = embsim(e, valid, ms=[3, 6])
    np.testing.assert_allclose(both[0], embsim(e[:, :3], valid[:, :3]), atol=1e-6)
    np.testing.assert_allclose(both[1], embsim(e, valid), atol=1e-6)


def test_ms_of_a_feature_firing_once_is_undefined():
    """A feature with one firing has no pair to score (the float32 difference of sums is pure
    rounding there): NaN, not a value far outside [-1, 1]."""
    rng = np.random.default_rng(7)
    emb = rng.standard_normal((300, 16)).astype(np.float32)
    acts = np.zeros((300, 3), np.float32)
    acts[17, 0] = 3.7  # fires once
    acts[[3, 90], 1] = [2.0, 1e-6]  # twice, the second firing negligible
    acts[[3, 90, 200], 2] = [1.0, 0.5, 0.25]
    acc = MSAccumulator(3, 16)
    for lo in range(0, 300, 64):
        acc.update(torch.from_numpy(acts[lo : lo + 64]), emb[lo : lo + 64])
    ms = acc.scores()
    assert np.isnan(ms[0]) and np.isnan(ms[1])
    assert ms[2] == pytest.approx(ms_oracle(acts, emb)[2], abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.5, 0.999))
def test_ms_is_in_range_and_matches_the_oracle_on_sparse_activations(seed, sparsity):
    rng = np.random.default_rng(seed)
    n, k, d = int(rng.integers(2, 60)), 5, 8
    emb = rng.standard_normal((n, d)).astype(np.float32)
    acts = np.where(rng.random((n, k)) < sparsity, 0.0, rng.exponential(1.0, (n, k)) ** 3).astype(
        np.float32
    )
    acc = MSAccumulator(k, d)
    for lo in range(0, n, 7):
        acc.update(torch.from_numpy(acts[lo : lo + 7]), emb[lo : lo + 7])
    ms, ref = acc.scores(), ms_oracle(acts, emb)
    defined = np.isfinite(ms)
    assert ((ms[defined] >= -1) & (ms[defined] <= 1)).all()
    np.testing.assert_array_equal(defined, np.isfinite(ref))
    np.testing.assert_allclose(ms[defined], ref[defined], atol=2e-3)
