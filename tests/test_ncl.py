"""NCL: forward and symmetric InfoNCE against numpy, rep_relu gradient, heads, training."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from monoscope._util import MonoscopeError
from monoscope.analysis.planted import make_planted, write_planted_store
from monoscope.featuremaps import load_featuremap
from monoscope.featuremaps.ncl import NCLMap, rep_relu
from monoscope.featuremaps.train import train_featuremap


def _np_clip_loss(a, b, tau):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = a @ b.T / tau

    def ce(lg):
        lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
        return (lse - np.diag(lg)).mean()

    return (ce(logits) + ce(logits.T)) / 2


def test_forward_and_loss_by_hand():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((5, 3)), rng.standard_normal(5) * 0.1
    xi, xt = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    ncl = NCLMap(3, 5, tau=0.2)
    with torch.no_grad():
        ncl.weight["image"].copy_(torch.tensor(w))
        ncl.bias["image"].copy_(torch.tensor(b))
    zi, zt = np.maximum(xi @ w.T + b, 0), np.maximum(xt @ w.T + b, 0)
    ti, tt = torch.tensor(xi, dtype=torch.float32), torch.tensor(xt, dtype=torch.float32)
    np.testing.assert_allclose(ncl.encode(ti).detach().numpy(), zi, rtol=1e-5, atol=1e-6)
    assert torch.equal(ncl.encode(tt, "text"), ncl.encode(tt))  # shared head
    loss, stats, fired = ncl.train_loss({"image": ti, "text": tt})
    assert loss.item() == pytest.approx(_np_clip_loss(zi, zt, 0.2), rel=1e-5)
    assert stats["l0"].item() == pytest.approx(
        ((zi > 0).sum(1).mean() + (zt > 0).sum(1).mean()) / 2
    )
    assert fired.tolist() == ((zi > 0).any(0) | (zt > 0).any(0)).tolist()


def test_rep_relu_forward_is_relu_and_gradient_is_gelu_shaped():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.7, 3.0], requires_grad=True)
    y = rep_relu(x)
    assert torch.equal(y, torch.relu(x))
    y.sum().backward()
    phi = lambda v: math.exp(-v * v / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    expect = [cdf(v) + v * phi(v) for v in x.tolist()]
    np.testing.assert_allclose(x.grad.numpy(), expect, rtol=1e-5)
    assert x.grad[0] != 0  # silent units still get a gradient


def test_separate_heads():
    ncl = NCLMap(3, 4, shared=False)
    ncl.init_from_data({}, torch.Generator().manual_seed(0))
    x = torch.randn(2, 3)
    with pytest.raises(MonoscopeError, match="pass the modality"):
        ncl.encode(x)
    zi, zt = ncl.encode(x, "image"), ncl.encode(x, "text")
    assert torch.equal(ncl.encode(x, "text"), zt)
    assert torch.equal(zi, torch.relu(x @ ncl.weight["image"].T + ncl.bias["image"]))
    assert torch.equal(zt, torch.relu(x @ ncl.weight["text"].T + ncl.bias["text"]))
    assert not torch.equal(zi, zt)
    with pytest.raises(MonoscopeError, match="modality"):
        ncl.encode(x, "audio")


def test_ncl_training_beats_chance_and_round_trips(tmp_path):
    image, text, _ = make_planted(dim=16, n_atoms=32, n_pairs=600, seed=2)
    store = write_planted_store(tmp_path / "s", image, text, shard_size=256)
    out = train_featuremap(
        store,
        "ncl",
        tmp_path / "ncl",
        latents=64,
        batch_size=128,
        steps=150,
        lr=3e-3,
        progress=False,
        shared=False,
        rep_relu=True,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    feature = metrics["retrieval"]["feature"]
    assert min(feature["i2t_r1"], feature["t2i_r1"]) > 0.2  # chance is 1/600
    fmap = load_featuremap(out)
    assert fmap.hparams() == {
        "dim": 16,
        "latents": 64,
        "shared": False,
        "tau": 0.07,
        "rep_relu": True,
    }
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] and "acc" in log[-1]
