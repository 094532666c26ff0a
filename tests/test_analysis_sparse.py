"""The sparse analysis path computes what the dense one does: accumulator by accumulator on
random sparse codes, and end to end (features.csv, summary.json, top-m) on a store."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import monoscope.analysis.analyze as analyze_module
import monoscope.analysis.sparse as sparse_module
from monoscope.analysis.analyze import analyze, read_feature_table
from monoscope.analysis.evidence import MomentAccumulator
from monoscope.analysis.monosemanticity import MSAccumulator
from monoscope.analysis.sparse import SparseCodes, matches, sparse_encoder
from monoscope.analysis.stats import FeatureStats, RatioStats
from monoscope.analysis.uncertainty import SignFlipTest
from monoscope.featuremaps.identity import IdentityMap
from monoscope.featuremaps.sae import BatchTopKSAE, ReLUSAE, TopKSAE
from monoscope.store import StoreWriter

torch.set_num_threads(1)


def _codes(rng: np.random.Generator, b: int, k: int, density: float) -> torch.Tensor:
    """(b, k) non-negative codes: mostly zeros, feature 0 dead, feature 1 firing everywhere."""
    a = rng.exponential(1.0, (b, k)) * (rng.random((b, k)) < density)
    a[:, 0] = 0
    a[:, 1] = rng.exponential(1.0, b) + 0.1
    return torch.from_numpy(a.astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_codes_round_trip_and_column_statistics(seed: int):
    a = _codes(np.random.default_rng(seed), 37, 11, 0.2)
    s = SparseCodes.from_dense(a)
    torch.testing.assert_close(s.dense(), a)
    torch.testing.assert_close(s.sums, a.double().sum(0))
    torch.testing.assert_close(s.squares, (a.double() ** 2).sum(0))
    torch.testing.assert_close(s.counts, (a > 0).sum(0))
    torch.testing.assert_close(s.maxima, a.amax(0))
    torch.testing.assert_close(s.minima, a.amin(0))
    torch.testing.assert_close(s.weighted_rows(torch.ones(37, 3)), a.T @ torch.ones(37, 3))
    idx = torch.stack([torch.randperm(11)[:4] for _ in range(37)])
    vals = torch.relu(torch.randn(37, 4))
    dense = torch.zeros(37, 11).scatter_(1, idx, vals)
    torch.testing.assert_close(SparseCodes.from_topk(idx, vals, 11).dense(), dense)


def test_matches_finds_the_shared_entries_and_nothing_else():
    a = SparseCodes.from_dense(torch.tensor([[1.0, 0, 2], [0, 3, 0], [0, 0, 0]]))
    b = SparseCodes.from_dense(torch.tensor([[0.0, 5, 6], [0, 7, 8], [9, 0, 0]]))
    i, j = matches(a, b)
    assert a.vals[i].tolist() == [2.0, 3.0] and b.vals[j].tolist() == [6.0, 7.0]
    empty = SparseCodes.from_dense(torch.zeros(3, 3))
    assert matches(empty, b)[0].numel() == 0 and matches(a, empty)[1].numel() == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_every_accumulator_agrees_with_its_dense_path(seed: int):
    rng = np.random.default_rng(seed)
    n, k, d, m = 90, 13, 5, 6
    a_img, a_txt = _codes(rng, n, k, 0.3), _codes(rng, n, k, 0.3)
    a_txt[::3] = a_img[::3]  # pairs where a feature fires in both modalities
    e = rng.standard_normal((n, d)).astype(np.float32)

    def accumulators() -> list:
        return [
            MomentAccumulator(k),
            MSAccumulator(k, d),
            RatioStats(k),
            SignFlipTest(k, 50, seed),
            FeatureStats(k, m),
        ]

    dense, sparse = accumulators(), accumulators()
    for lo in range(0, n, 4):  # batches smaller than m, too
        for accs, conv in ((dense, lambda x: x), (sparse, SparseCodes.from_dense)):
            x, y = conv(a_img[lo : lo + 4]), conv(a_txt[lo : lo + 4])
            accs[0].update(x, y)
            accs[1].update(x, e[lo : lo + 4])
            accs[2].update(x, y)
            accs[3].update(x, y)
            accs[4].update(x, lo)
    md, ms = dense[0].result(), sparse[0].result()
    for name in ("sum_img", "sum_txt", "sq_img", "sq_txt", "cross"):
        np.testing.assert_allclose(getattr(ms, name), getattr(md, name), rtol=1e-6)
    for name in ("fired_img", "fired_txt", "fired_any"):
        np.testing.assert_array_equal(getattr(ms, name), getattr(md, name))
    np.testing.assert_allclose(sparse[1].scores(), dense[1].scores(), rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(sparse[2].mean, dense[2].mean, rtol=1e-6)
    np.testing.assert_allclose(sparse[3].observed, dense[3].observed, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sparse[3].null, dense[3].null, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(sparse[3].p_values(), dense[3].p_values())
    for (si, sv), (di, dv) in zip([sparse[4].top()], [dense[4].top()], strict=True):
        np.testing.assert_array_equal(sv, dv)
        np.testing.assert_array_equal(si, di)
        np.testing.assert_array_equal(si, _top_sets(si, sv))  # ties in row order


def test_top_m_lists_ties_in_row_order_on_both_paths():
    rng = np.random.default_rng(5)
    a = torch.from_numpy(rng.integers(0, 3, (40, 7)).astype(np.float32))  # many ties
    dense, sparse = FeatureStats(7, 6), FeatureStats(7, 6)
    for lo in range(0, 40, 4):
        dense.update(a[lo : lo + 4], lo)
        sparse.update(SparseCodes.from_dense(a[lo : lo + 4]), lo)
    for idx, val in (dense.top(), sparse.top()):
        for k in range(7):  # oracle: positive rows by (value descending, row), first 6
            rows = sorted(np.flatnonzero(a[:, k] > 0), key=lambda r: (-a[r, k], r))[:6]
            assert idx[k][idx[k] >= 0].tolist() == rows
            np.testing.assert_array_equal(val[k][: len(rows)], a[rows, k])


def _top_sets(idx: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Each feature's top list ordered by (value descending, row): tie order ignored."""
    order = np.lexsort((idx, -val), axis=1)
    return np.take_along_axis(idx, order, 1)


def test_sparse_encoder_gives_the_maps_own_codes():
    torch.manual_seed(0)
    x = torch.randn(20, 8)
    for fmap in (TopKSAE(8, 32, k=4), BatchTopKSAE(8, 32, k=4)):
        torch.nn.init.normal_(fmap.W_enc)
        fmap.threshold.fill_(0.5) if isinstance(fmap, BatchTopKSAE) else None
        encode = sparse_encoder(fmap)
        assert encode is not None
        torch.testing.assert_close(encode(x, "image").dense(), fmap.encode(x, "image"))
    assert sparse_encoder(IdentityMap(8)) is None and sparse_encoder(ReLUSAE(8, 32)) is None


def _store(path: Path, n: int, dim: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n, dim), dtype=np.float32)
    txt = img + rng.standard_normal((n, dim), dtype=np.float32)
    header = {
        "model": {"kind": "synthetic"},
        "dim": dim,
        "normalized": False,
        "source": {"kind": "synthetic", "n": n},
        "shard_size": n,
    }
    w = StoreWriter(path, header)
    pairs = [{"id": str(i), "caption": "", "image_ref": "", "labels": {}} for i in range(n)]
    w.add_shard(0, img, txt, pairs, Counter())
    w.end(n)
    return w.finish()


def _close(a, b, path: str = "") -> None:
    """Recursive comparison of two summary.json values (floats to a relative 1e-6)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            if key not in ("versions", "created", "store", "featuremap"):
                _close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9, nan_ok=True), path
    else:
        assert a == b, path


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("topk", {}),
        ("topk", {"rule": "test", "definition": "mean-of-ratios", "center": "mean"}),
        ("batchtopk", {"rule": "std"}),
    ],
)
def test_analysis_is_the_same_through_the_sparse_and_the_dense_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, options: dict
):
    store = _store(tmp_path / "store", 700, 16)
    torch.manual_seed(0)
    fmap = TopKSAE(16, 96, k=6) if kind == "topk" else BatchTopKSAE(16, 96, k=6)
    torch.nn.init.normal_(fmap.W_enc)
    if isinstance(fmap, BatchTopKSAE):
        fmap.threshold.fill_(1.0)
    kw = {"device": "cpu", "progress": False, "batch_size": 128, "permutations": 200, **options}
    monkeypatch.setattr(sparse_module, "GEMM_ROWS", 48)  # blocks that do not divide a batch
    used = []
    monkeypatch.setattr(
        analyze_module, "sparse_encoder", lambda f: used.append(sparse_encoder(f)) or used[-1]
    )
    sparse = analyze(store, fmap, tmp_path / "sparse", **kw)
    assert used and used[-1] is not None  # the sparse path ran
    monkeypatch.setattr(analyze_module, "sparse_encoder", lambda fmap: None)
    dense = analyze(store, fmap, tmp_path / "dense", **kw)

    ts, td = read_feature_table(sparse / "features.csv"), read_feature_table(dense / "features.csv")
    assert ts.keys() == td.keys()
    for name in ts:
        if ts[name].dtype.kind == "f":  # 6 significant digits in the file
            np.testing.assert_allclose(ts[name], td[name], rtol=2e-5, atol=1e-7, err_msg=name)
        else:
            np.testing.assert_array_equal(ts[name], td[name], err_msg=name)
    _close(
        json.loads((sparse / "summary.json").read_text()),
        json.loads((dense / "summary.json").read_text()),
    )
    for modality in ("image", "text"):
        val_s = np.load(sparse / "top" / f"{modality}_val.npy")
        val_d = np.load(dense / "top" / f"{modality}_val.npy")
        np.testing.assert_array_equal(val_s, val_d)
        idx_s = np.load(sparse / "top" / f"{modality}_idx.npy")
        idx_d = np.load(dense / "top" / f"{modality}_idx.npy")
        np.testing.assert_array_equal(idx_s, idx_d)
