"""The analysis pass's exact activation histograms against a brute-force count, their merge into
the report's bins, and the artefact round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from monoscope._util import MonoscopeError, write_json
from monoscope.analysis.histograms import HistogramAccumulator
from monoscope.analysis.sparse import SparseCodes
from monoscope.artefacts import FINE_BINS, HISTOGRAMS_FILE, Analysis, Histograms
from monoscope.report.histograms import from_exact


def _codes(rng: np.random.Generator, n: int, k: int, scale: np.ndarray) -> np.ndarray:
    """Sparse non-negative codes with per-feature scales spanning many octaves."""
    a = rng.exponential(1.0, (n, k)).astype(np.float32) * scale.astype(np.float32)
    a[rng.random((n, k)) < 0.6] = 0
    return a


def _brute(img: np.ndarray, txt: np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    """Per feature: bins of width 2**e / bins over (0, 2**e], 2**e the power of two at or above
    the largest activation; a value v goes to bin ceil(v / w) - 1 (float64, one feature at a
    time)."""
    k = img.shape[1]
    out = np.zeros((2, k, bins), np.int64)
    exponent = np.full(k, -1000)
    for j in range(k):
        top = max(img[:, j].max(), txt[:, j].max())
        if top <= 0:
            continue
        exponent[j] = int(np.ceil(np.log2(np.float64(top))))
        w = 2.0 ** exponent[j] / bins
        for m, a in enumerate((img, txt)):
            v = a[:, j][a[:, j] > 0].astype(np.float64)
            b = np.clip(np.ceil(v / w).astype(int) - 1, 0, bins - 1)
            out[m, j] = np.bincount(b, minlength=bins)
    return out, exponent


@pytest.mark.parametrize("batch", [1, 7, 200])
def test_streaming_histograms_equal_brute_force(batch: int) -> None:
    rng = np.random.default_rng(batch)
    k, n = 9, 200
    scale = 2.0 ** rng.uniform(-6, 6, k)
    img, txt = _codes(rng, n, k, scale), _codes(rng, n, k, scale)
    img[:, 0] = txt[:, 0] = 0  # a feature that never fires
    txt[:, 1] = 0  # one that fires on images only
    img[:, 2], txt[:, 2] = np.minimum(img[:, 2], 3.0), np.minimum(txt[:, 2], 3.0)
    img[5, 2] = 4.0  # an exact power of two as the maximum: the last bin of (0, 4]
    img[n - 1, 3] = 1e3  # a late maximum: every earlier bin merges at once
    acc = HistogramAccumulator(k)
    for lo in range(0, n, batch):
        acc.update(torch.from_numpy(img[lo : lo + batch]), torch.from_numpy(txt[lo : lo + batch]))
    want, exponent = _brute(img, txt, FINE_BINS)
    assert acc.n == n
    np.testing.assert_array_equal(acc.counts.numpy(), want)
    fired = want.sum((0, 2)) > 0
    np.testing.assert_array_equal(acc.exponent.numpy()[fired], exponent[fired])
    assert acc.counts[0, 2, FINE_BINS - 1] >= 1
    np.testing.assert_array_equal(acc.counts.sum(2).numpy(), [(img > 0).sum(0), (txt > 0).sum(0)])


def test_sparse_codes_count_like_dense() -> None:
    rng = np.random.default_rng(3)
    k, n, top_k = 12, 64, 3
    dense = {m: _codes(rng, n, k, 2.0 ** rng.uniform(-3, 3, k)) for m in ("image", "text")}
    a, b = HistogramAccumulator(k), HistogramAccumulator(k)
    for lo in range(0, n, 16):
        parts = {m: torch.from_numpy(v[lo : lo + 16]) for m, v in dense.items()}
        sparse = {m: torch.topk(x, top_k, dim=1) for m, x in parts.items()}
        kept = {
            m: torch.zeros_like(x).scatter_(1, sparse[m].indices, sparse[m].values)
            for m, x in parts.items()
        }
        a.update(kept["image"], kept["text"])
        b.update(*(SparseCodes.from_topk(s.indices, s.values, k) for s in sparse.values()))
    assert torch.equal(a.counts, b.counts) and torch.equal(a.exponent, b.exponent)


def test_merged_display_bins_are_exact() -> None:
    """Each display bin is whole fine bins, so its count is the brute-force count of (lo, hi]."""
    rng = np.random.default_rng(1)
    k, n = 6, 300
    img, txt = _codes(rng, n, k, 2.0 ** rng.uniform(-4, 4, k)), _codes(rng, n, k, np.ones(k))
    acc = HistogramAccumulator(k)
    acc.update(torch.from_numpy(img), torch.from_numpy(txt))
    edge = np.exp2(acc.exponent.numpy().astype(float))
    shown = from_exact(Histograms(acc.counts[0].numpy(), acc.counts[1].numpy(), edge, n), 12)
    for j in range(k):
        top = max(img[:, j].max(), txt[:, j].max())
        assert top <= shown.hi[j] <= top * 4 / 3 * (1 + 1e-9)
        w = shown.hi[j] / 12
        for m, a in ((shown.image, img), (shown.text, txt)):
            v = a[:, j][a[:, j] > 0].astype(np.float64)
            want = np.bincount(np.clip(np.ceil(v / w).astype(int) - 1, 0, 11), minlength=12)
            np.testing.assert_array_equal(m[j], want)


def _analysis_dir(tmp_path: Path, k: int) -> Path:
    d = tmp_path / "analysis"
    d.mkdir()
    write_json(d / "summary.json", {"format_version": 2, "n_features": k, "n_pairs": 10})
    return d


def test_histograms_artefact_round_trip_and_errors(tmp_path: Path) -> None:
    k = 5
    d = _analysis_dir(tmp_path, k)
    assert Analysis(d).histograms is None  # an analysis made before the histograms
    acc = HistogramAccumulator(k)
    x = torch.zeros(4, k)
    x[:, 1] = torch.tensor([0.5, 1.5, 3.0, 0.0])
    acc.update(x, x * 2)
    acc.save(d / HISTOGRAMS_FILE)
    hist = Analysis(d).histograms
    assert hist is not None and hist.n_pairs == 4
    np.testing.assert_array_equal(hist.image, acc.counts[0].numpy())
    assert hist.edge.tolist() == [0, 8, 0, 0, 0]
    (d / HISTOGRAMS_FILE).write_bytes(b"garbage")
    with pytest.raises(MonoscopeError, match="histograms.safetensors: unreadable"):
        _ = Analysis(d).histograms
