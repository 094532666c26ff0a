"""Sparse TopK training kernels: same loss, gradients, training steps and checkpoints as the
dense path."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from monoscope._util import MonoscopeError
from monoscope.analysis.planted import make_planted, write_planted_store
from monoscope.featuremaps.sae import BatchTopKSAE, MatryoshkaSAE, TopKSAE
from monoscope.featuremaps.sparse import ActiveSet, decode_active, use_sparse
from monoscope.featuremaps.train import build_featuremap, train_featuremap

KINDS = [TopKSAE, BatchTopKSAE, MatryoshkaSAE]
D, K, TOPK = 12, 48, 3


def _pair(cls):
    torch.manual_seed(0)
    x = torch.randn(64, D)
    dense = cls(D, K, k=TOPK, decoder="dense")
    dense.init_from_data({"x": x}, torch.Generator().manual_seed(0))
    with torch.no_grad():  # break the tied init so every gradient term is exercised
        dense.b_enc.normal_(0, 0.1)
        dense.W_enc.add_(0.1 * torch.randn_like(dense.W_enc))
    sparse = copy.deepcopy(dense)
    sparse.decoder = "sparse"
    return dense, sparse, x


@pytest.mark.parametrize("cls", KINDS)
@pytest.mark.parametrize("with_dead", [False, True])
def test_loss_stats_and_gradients_match_dense(cls, with_dead):
    torch.set_num_threads(1)
    dense, sparse, x = _pair(cls)
    dead = torch.arange(K) % 3 == 0 if with_dead else None
    results = []
    for sae in (dense, sparse):
        loss, stats, fired = sae.train_loss({"x": x}, dead)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
        results.append((loss.detach(), {**stats, "fired": fired}, grads))
    (l_d, s_d, g_d), (l_s, s_s, g_s) = results
    torch.testing.assert_close(l_s, l_d, rtol=1e-5, atol=1e-6)
    assert s_s.keys() == s_d.keys() and ("aux" in s_s) == with_dead
    for key in s_d:
        torch.testing.assert_close(s_s[key], s_d[key], rtol=1e-5, atol=1e-6)
    for name, g in g_d.items():
        assert float(g.abs().max()) > 0, name
        torch.testing.assert_close(g_s[name], g, rtol=1e-4, atol=1e-6, msg=name)
    if isinstance(dense, BatchTopKSAE):
        torch.testing.assert_close(sparse.threshold, dense.threshold)


@pytest.mark.parametrize("method", ["sae-topk", "sae-batchtopk", "sae-matryoshka"])
def test_training_runs_match_dense_and_save_the_same_checkpoint(method, tmp_path):
    torch.set_num_threads(1)
    # the two paths round differently (1e-7), so a BatchTopK selection at a near-tie can flip
    # after a few steps and the runs part; this data has no such tie within 12 steps
    image, text, _ = make_planted(dim=8, n_atoms=16, n_pairs=300, seed=0)
    store = write_planted_store(tmp_path / "s", image, text, shard_size=128)
    opts = {"latents": 32, "k": 3, "batch_size": 64, "steps": 12, "progress": False}
    outs = {}
    for decoder in ("dense", "sparse"):
        outs[decoder] = train_featuremap(
            store, method, tmp_path / decoder, decoder=decoder, dead_window=64, **opts
        )
    w_d = load_file(str(outs["dense"] / "model.safetensors"))
    w_s = load_file(str(outs["sparse"] / "model.safetensors"))
    assert w_s.keys() == w_d.keys()
    for name in w_d:
        torch.testing.assert_close(w_s[name], w_d[name], rtol=1e-4, atol=1e-5, msg=name)
    cfg_d, cfg_s = (json.loads((outs[d] / "config.json").read_text()) for d in outs)
    assert cfg_s["hparams"] == cfg_d["hparams"] and "decoder" not in cfg_s["hparams"]
    log_d, log_s = ((outs[d] / "train_log.jsonl").read_text().splitlines() for d in outs)
    assert any("aux" in json.loads(line) for line in log_s)  # AuxK was exercised
    for a, b in zip(log_d, log_s, strict=True):
        ra, rb = json.loads(a), json.loads(b)
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4)


def test_decode_active_matches_dense_product_and_handles_empty_rows():
    torch.manual_seed(1)
    w = torch.randn(10, 4)
    z = torch.zeros(3, 10)
    z[0, [1, 7]] = torch.tensor([0.5, 2.0])
    z[2, 3] = -1.0  # row 1 has no entries
    rows, cols = z.nonzero(as_tuple=True)
    active = ActiveSet._from_rows(rows, cols, 3, 10)
    torch.testing.assert_close(decode_active(active, z[rows, cols], w), z @ w)
    none = active.subset(torch.zeros(len(rows), dtype=torch.bool))
    assert decode_active(none, torch.zeros(0), w).abs().sum() == 0


def test_auto_rule_and_bad_decoder():
    assert use_sparse("cpu", 8192, 32) and use_sparse("cpu", 256, 32)
    assert not use_sparse("cpu", 128, 32) and not use_sparse("mps", 8192, 32)
    assert TopKSAE(8, 4096, k=8).sparse_training(torch.device("cpu"))
    assert not TopKSAE(8, 16, k=8).sparse_training(torch.device("cpu"))
    assert TopKSAE(8, 16, k=8, decoder="sparse").sparse_training(torch.device("cpu"))
    with pytest.raises(MonoscopeError, match="decoder must be one of"):
        build_featuremap("sae-topk", 8, latents=16, k=2, decoder="fast")
