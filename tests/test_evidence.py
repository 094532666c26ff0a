"""Per-feature MDS evidence: Fieller intervals against a brute-force oracle, coverage on data
with known MDS, verdicts on null and bimodal data, expected counts, thresholds in [0, 1]."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr

from monoscope.analysis.evidence import (
    PSEUDO_FIRINGS,
    MomentAccumulator,
    PairMoments,
    evidence,
    evidence_verdicts,
    expected_counts,
    fieller_interval,
    prob_above,
    t_statistic,
    with_pseudo_firings,
)
from monoscope.analysis.mds import group_features, is_bimodal

Z95 = 1.959963984540054


def _simulate(n: int, mds: np.ndarray, rate: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    """Paired activations with known population MDS: events at ``rate``, shown on the image
    with prob. p / max(p, 1-p) and on the text with (1-p) / max(p, 1-p) (one uniform draw),
    log-normal magnitudes with equal means, correlated across the pair."""
    rng = np.random.default_rng(seed)
    k = len(mds)
    scale = 1 / np.maximum(mds, 1 - mds)
    ev = rng.random((n, k)) < rate
    u = rng.random((n, k))
    g1 = rng.standard_normal((n, k))
    g2 = 0.8 * g1 + 0.6 * rng.standard_normal((n, k))
    a = np.where(ev & (u < mds * scale), np.exp(0.5 * g1), 0.0)
    b = np.where(ev & (u >= 1 - (1 - mds) * scale), np.exp(0.5 * g2), 0.0)
    return a, b


def test_streamed_moments_equal_the_full_pass():
    rng = np.random.default_rng(0)
    a = np.maximum(rng.standard_normal((97, 5)), 0).astype(np.float32)
    b = np.maximum(rng.standard_normal((97, 5)), 0).astype(np.float32)
    acc = MomentAccumulator(5)
    for lo in range(0, 97, 10):
        acc.update(torch.from_numpy(a[lo : lo + 10]), torch.from_numpy(b[lo : lo + 10]))
    got, ref = acc.result(), PairMoments.of(a, b)
    assert got.n == ref.n == 97
    for name in ("sum_img", "sum_txt", "sq_img", "sq_txt", "cross"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-5)
    for name in ("fired_img", "fired_txt", "fired_any"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))


def test_fieller_interval_matches_a_brute_force_scan():
    a, b = _simulate(400, np.array([0.2, 0.5, 0.8, 0.95]), np.full(4, 0.2), seed=1)
    m = PairMoments.of(a, b)
    low, high = fieller_interval(m)
    grid = np.linspace(0, 1, 20001)
    for k in range(4):
        # the oracle: r is inside when |mean D(r)| <= z * sd(D(r)) / sqrt(n)
        d = a[:, k][:, None] * (1 - grid) - b[:, k][:, None] * grid
        inside = np.abs(d.mean(0)) <= Z95 * d.std(0) / np.sqrt(len(d))
        assert low[k] == pytest.approx(grid[inside].min(), abs=1e-4)
        assert high[k] == pytest.approx(grid[inside].max(), abs=1e-4)
        assert low[k] <= m.mds[k] <= high[k]


def test_t_statistic_by_hand():
    # two pairs: (a, b) = (2, 0) and (1, 1); at r = 0.5, D = (1, 0): mean 0.5, sd 0.5
    m = PairMoments.of(np.array([[2.0], [1.0]]), np.array([[0.0], [1.0]]))
    assert t_statistic(m, 0.5)[0] == pytest.approx(0.5 / (0.5 / np.sqrt(2)))
    assert prob_above(m, 0.5)[0] == pytest.approx(ndtr(np.sqrt(2)))
    assert m.mds[0] == pytest.approx(0.75)


def test_a_feature_seen_a_dozen_times_on_images_only_is_not_certain():
    a = np.zeros((2000, 1))
    a[:12, 0] = np.linspace(0.5, 1.5, 12)
    m = PairMoments.of(a, np.zeros_like(a))
    raw_low, raw_high = fieller_interval(m)
    assert raw_low[0] == pytest.approx(1.0) and raw_high[0] == 1.0  # zero width without them
    low, high = fieller_interval(with_pseudo_firings(m, PSEUDO_FIRINGS))
    assert high[0] == 1.0 and 0.7 < low[0] < 0.9  # allows the text firings it could have had
    ev = evidence(m, 0.25, 0.75)
    assert ev.ci_low[0] == pytest.approx(low[0]) and ev.mds[0] == 1.0


def test_the_interval_holds_the_point_estimate_however_well_supported():
    a = np.zeros((5000, 2))
    a[:, 0] = 1.0  # fires on every image, never on text
    a[:100, 1] = 1.0
    b = np.zeros_like(a)
    b[:100, 1] = 1.0  # exactly balanced
    ev = evidence(PairMoments.of(a, b), 0.25, 0.75)
    assert ev.ci_high[0] == 1.0 and 0.99 < ev.ci_low[0] < 1.0
    assert ev.ci_low[1] <= 0.5 <= ev.ci_high[1]


def test_a_feature_firing_once_gets_the_whole_range():
    a = np.zeros((500, 1))
    a[3, 0] = 2.0
    ev = evidence(PairMoments.of(a, np.zeros_like(a)), 0.25, 0.75)
    assert (ev.ci_low[0], ev.ci_high[0]) == (0.0, 1.0)
    v = evidence_verdicts(ev, 0.25, 0.75)
    assert v.verdicts[0] == "rare"


def test_intervals_cover_the_known_mds():
    """95% intervals cover 93-97% of features with >= 20 firings (planted MDS, N = 2,000)."""
    rng = np.random.default_rng(2)
    k = 3000
    mds = np.where(rng.random(k) < 0.3, rng.choice([0.0, 1.0], k), rng.random(k))
    rate = np.exp(rng.uniform(np.log(0.005), np.log(0.3), k))
    a, b = _simulate(2000, mds, rate, seed=3)
    ev = evidence(PairMoments.of(a, b), 0.25, 0.75)
    fired = ev.fired_any
    interior = (mds > 0) & (mds < 1)  # an interval always reaches a boundary MDS it estimates
    well = (fired >= 20) & interior
    covered = (ev.ci_low <= mds) & (mds <= ev.ci_high)
    assert 0.93 <= covered[well].mean() <= 0.97
    few = (fired >= 5) & (fired < 20) & interior
    assert covered[few].mean() >= 0.9
    assert covered[(fired > 0) & ~interior].all()
    assert ((ev.ci_high - ev.ci_low)[fired > 0] > 0).all()  # never zero-width


def test_null_data_gets_no_modality_specific_verdicts_and_std_does():
    rng = np.random.default_rng(4)
    k = 500
    a, b = _simulate(2000, np.full(k, 0.5), np.exp(rng.uniform(np.log(0.01), np.log(0.3), k)), 5)
    # independent sides: MDS 0.5 in truth, but noisy point estimates
    b = b[rng.permutation(len(b))]
    m = PairMoments.of(a, b)
    v = evidence_verdicts(evidence(m, 0.25, 0.75), 0.25, 0.75)
    assert np.isin(v.verdicts, ["ImgD", "TextD"]).mean() <= 0.01
    std = group_features(m.mds, "std", warn=False)
    assert np.isin(std.groups, ["ImgD", "TextD"]).mean() > 0.2  # the paper's rule invents groups


def test_verdicts_on_bimodal_data():
    truth = np.r_[np.full(100, 1.0), np.full(100, 0.0), np.full(100, 0.5)]
    a, b = _simulate(3000, truth, np.full(300, 0.05), seed=7)
    a[:, -5:] = 0
    b[:, -5:] = 0
    a[:3, -5:] = 1.0  # 5 features firing on 3 pairs only
    m = PairMoments.of(a, b)
    v = evidence_verdicts(evidence(m, 0.25, 0.75), 0.25, 0.75, min_firings=10)
    assert (v.verdicts[:100] == "ImgD").mean() > 0.95
    assert (v.verdicts[100:200] == "TextD").mean() > 0.95
    assert (v.verdicts[200:295] == "CrossD").mean() > 0.9
    assert (v.verdicts[-5:] == "rare").all()
    assert np.isnan(v.q_values[-5:]).all() and (v.q_values[:100] <= 0.05).all()
    assert is_bimodal(m.mds)
    with pytest.warns(UserWarning, match="piles up"):
        std = group_features(m.mds, "std")
    assert 0 <= std.low < std.high <= 1 and std.warnings


def test_expected_counts_cover_the_true_counts():
    rng = np.random.default_rng(8)
    hits = []
    for rep in range(40):
        k = 400
        mds = rng.random(k)
        a, b = _simulate(1500, mds, np.exp(rng.uniform(np.log(0.01), np.log(0.2), k)), 100 + rep)
        m = PairMoments.of(a, b)
        alive = m.fired_any > 0
        est = expected_counts(evidence(m, 0.25, 0.75))
        for g, region in (("ImgD", mds > 0.75), ("TextD", mds < 0.25)):
            lo, hi = est[g]["ci"]
            hits.append(lo <= (region & alive).sum() <= hi)
    assert np.mean(hits) >= 0.9


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=40),
    st.sampled_from(["std", "quantile"]),
)
def test_point_rules_never_leave_the_unit_interval(values, rule):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = group_features(np.array(values), rule)
    assert 0 <= g.low <= g.high <= 1


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 0.99))
def test_intervals_stay_in_range_on_sparse_and_degenerate_inputs(seed, zero_share):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 30)), 6
    a = np.where(rng.random((n, k)) < zero_share, 0.0, rng.exponential(1.0, (n, k)))
    b = np.where(rng.random((n, k)) < zero_share, 0.0, rng.exponential(1.0, (n, k)))
    a[:, 0] = 0  # text only
    b[:, 1] = 0  # image only
    a[:, 2] = b[:, 2] = 0  # dead
    ev = evidence(PairMoments.of(a, b), 0.25, 0.75)
    alive = ev.fired_any > 0
    assert not alive[2] and np.isnan(ev.ci_low[2])
    lo, hi = ev.ci_low[alive], ev.ci_high[alive]
    assert ((lo >= 0) & (lo <= ev.mds[alive]) & (ev.mds[alive] <= hi) & (hi <= 1)).all()
    for p in (ev.p_img, ev.p_txt, ev.p_cross):
        assert ((p[alive] >= 0) & (p[alive] <= 1)).all()
