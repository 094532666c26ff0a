"""SAE variants: forward passes and losses against numpy, constraints, save/load bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monoscope._util import MonoscopeError
from monoscope.featuremaps import load_featuremap
from monoscope.featuremaps.sae import (
    BatchTopKSAE,
    JumpReLUSAE,
    MatryoshkaSAE,
    PerModalityMap,
    ReLUSAE,
    TopKSAE,
    geometric_median,
)

D, K = 3, 4


RNG = np.random.default_rng(0)
W_ENC = RNG.standard_normal((D, K))
B_ENC = np.array([0.1, -0.2, 0.0, 0.3])
W_DEC = RNG.standard_normal((K, D))
W_DEC /= np.linalg.norm(W_DEC, axis=1, keepdims=True)
B_PRE = np.array([0.5, -1.0, 0.25])
SCALE = 2.0
X = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 1.0]])


def _setup(sae):
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor(W_ENC))
        sae.b_enc.copy_(torch.tensor(B_ENC))
        sae.W_dec.copy_(torch.tensor(W_DEC))
        sae.b_pre.copy_(torch.tensor(B_PRE))
        sae.scale.fill_(SCALE)
    return sae


def _np_pre(x=X):
    xs = (x - B_PRE) * SCALE
    return xs, xs @ W_ENC + B_ENC


def _np_topk(pre, k):
    z = np.zeros_like(pre)
    for i, row in enumerate(pre):  # the test oracle may loop
        idx = np.argsort(row)[::-1][:k]
        z[i, idx] = np.maximum(row[idx], 0)
    return z


def _t(a):
    return torch.tensor(a, dtype=torch.float32)


def _check_decode(sae, z):
    expect = z @ W_DEC / SCALE + B_PRE
    np.testing.assert_allclose(sae.decode(_t(z)).detach().numpy(), expect, rtol=1e-5, atol=1e-5)


def test_topk_forward_and_loss():
    sae = _setup(TopKSAE(D, K, k=2))
    xs, pre = _np_pre()
    z = _np_topk(pre, 2)
    np.testing.assert_allclose(sae.encode(_t(X)).detach().numpy(), z, rtol=1e-5, atol=1e-6)
    _check_decode(sae, z)
    loss, stats, fired = sae.train_loss({"x": _t(X)})
    mse = ((z @ W_DEC - xs) ** 2).mean()
    assert loss.item() == pytest.approx(mse, rel=1e-5)
    assert stats["l0"].item() == pytest.approx((z > 0).sum(1).mean())
    assert fired.tolist() == (z > 0).any(0).tolist()


def test_topk_auxk_loss():
    sae = _setup(TopKSAE(D, K, k=1, aux_k=1, aux_coef=0.5))
    xs, pre = _np_pre()
    z = _np_topk(pre, 1)
    dead = np.array([True, True, False, False])
    e = xs - z @ W_DEC
    masked = np.where(dead, pre, -np.inf)
    z_aux = _np_topk(masked, 1)
    aux = 0.5 * ((z_aux @ W_DEC - e) ** 2).mean() / (e**2).mean()
    loss, stats, _ = sae.train_loss({"x": _t(X)}, torch.tensor(dead))
    assert stats["aux"].item() == pytest.approx(aux, rel=1e-4)
    assert loss.item() == pytest.approx(((z @ W_DEC - xs) ** 2).mean() + aux, rel=1e-4)
    _, none, _ = sae.train_loss({"x": _t(X)}, torch.zeros(K, dtype=torch.bool))
    assert "aux" not in none


def test_relu_forward_penalty_and_fold():
    sae = _setup(ReLUSAE(D, K, l1=0.7))
    with torch.no_grad():
        sae.W_dec.mul_(torch.tensor([[2.0], [0.5], [1.0], [3.0]]))  # unconstrained norms
    w_dec = sae.W_dec.detach().double().numpy()
    xs, pre = _np_pre()
    z = np.maximum(pre, 0)
    np.testing.assert_allclose(sae.encode(_t(X)).detach().numpy(), z, rtol=1e-5, atol=1e-6)
    loss, stats, _ = sae.train_loss({"x": _t(X)})
    mse = ((z @ w_dec - xs) ** 2).mean()
    penalty = 0.7 * (z @ np.linalg.norm(w_dec, axis=1)).mean() / D
    assert stats["penalty"].item() == pytest.approx(penalty, rel=1e-5)
    assert loss.item() == pytest.approx(mse + penalty, rel=1e-5)
    before = sae.decode(sae.encode(_t(X))).detach()
    sae.finalize()
    np.testing.assert_allclose(sae.W_dec.norm(dim=1).detach().numpy(), 1, rtol=1e-6)
    torch.testing.assert_close(sae.decode(sae.encode(_t(X))).detach(), before)


def test_batchtopk_train_codes_threshold_and_inference():
    sae = _setup(BatchTopKSAE(D, K, k=2, threshold_momentum=0.75))
    xs, pre = _np_pre()
    flat = np.maximum(pre, 0).ravel()
    keep = np.argsort(flat)[::-1][:4]  # k * B = 4 over the whole batch
    z = np.zeros_like(flat)
    z[keep] = flat[keep]
    z = z.reshape(pre.shape)
    loss, _, _ = sae.train_loss({"x": _t(X)})
    assert loss.item() == pytest.approx(((z @ W_DEC - xs) ** 2).mean(), rel=1e-5)
    first = flat[keep][flat[keep] > 0].min()
    assert sae.threshold.item() == pytest.approx(first, rel=1e-6)  # first batch: set
    x2 = X[::-1] * 0.5
    _, pre2 = _np_pre(x2)
    flat2 = np.sort(np.maximum(pre2, 0).ravel())[::-1][:4]
    sae.train_loss({"x": _t(x2.copy())})
    expect = 0.75 * first + 0.25 * flat2[flat2 > 0].min()  # then a moving average
    assert sae.threshold.item() == pytest.approx(expect, rel=1e-5)
    theta = sae.threshold.item()
    np.testing.assert_allclose(
        sae.encode(_t(X)).detach().numpy(), np.where(pre > theta, pre, 0), rtol=1e-5, atol=1e-6
    )


def test_matryoshka_sums_prefix_losses():
    sae = _setup(MatryoshkaSAE(D, K, k=2, prefixes=[1, 2]))
    assert sae.prefixes == [1, 2, 4]
    xs, pre = _np_pre()
    flat = np.maximum(pre, 0).ravel()
    keep = np.argsort(flat)[::-1][:4]
    z = np.zeros_like(flat)
    z[keep] = flat[keep]
    z = z.reshape(pre.shape)
    expect = sum(((z[:, :m] @ W_DEC[:m] - xs) ** 2).mean() for m in (1, 2, 4))
    loss, stats, _ = sae.train_loss({"x": _t(X)})
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    assert stats["mse"].item() == pytest.approx(((z @ W_DEC - xs) ** 2).mean(), rel=1e-5)


def test_jumprelu_forward_loss_and_straight_through_gradients():
    eps = 0.5
    sae = _setup(JumpReLUSAE(D, K, l0=0.3, bandwidth=eps, init_threshold=1.0))
    theta = np.array([0.5, 1.0, 2.0, 0.2])
    with torch.no_grad():
        sae.log_threshold.copy_(torch.tensor(np.log(theta)))
    xs, pre = _np_pre()
    z = np.where(pre > theta, pre, 0)
    np.testing.assert_allclose(sae.encode(_t(X)).detach().numpy(), z, rtol=1e-5, atol=1e-6)
    loss, stats, _ = sae.train_loss({"x": _t(X)})
    mse = ((z @ W_DEC - xs) ** 2).mean()
    l0 = (pre > theta).sum(1).mean()
    assert loss.item() == pytest.approx(mse + 0.3 * l0 / D, rel=1e-5)
    loss.backward()
    # d loss / d theta_k = sum_b [dL/dz_bk * -(theta_k/eps) + 0.3/D/B * -(1/eps)] * K(...)
    near = np.abs(pre - theta) < eps / 2
    dz = 2 * (z @ W_DEC - xs) @ W_DEC.T / xs.size
    g_theta = (near * (dz * -(theta / eps) - 0.3 / D / len(X) / eps)).sum(0)
    np.testing.assert_allclose(
        sae.log_threshold.grad.numpy(), g_theta * theta, rtol=1e-4, atol=1e-6
    )


def test_init_from_data_scale_median_and_tied_encoder():
    x = torch.randn(500, 6, generator=torch.Generator().manual_seed(1)) * 3 + 2
    sae = TopKSAE(6, 10, k=2)
    sae.init_from_data({"x": x}, torch.Generator().manual_seed(0))
    xs = sae.scaled(x)
    assert xs.pow(2).sum(1).mean().item() == pytest.approx(6, rel=1e-4)
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(10))
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
    med = geometric_median(pts, iters=200)
    dist = lambda m: (pts - m).norm(dim=1).sum()  # noqa: E731
    for delta in ([1e-3, 0], [0, 1e-3], [-1e-3, 0], [0, -1e-3]):
        assert dist(med) <= dist(med + torch.tensor(delta)) + 1e-6
    with pytest.raises(MonoscopeError, match="no spread"):
        sae.init_from_data({"x": torch.ones(5, 6)}, torch.Generator())
    with pytest.raises(MonoscopeError, match="NaN"):
        sae.init_from_data({"x": torch.full((5, 6), torch.nan)}, torch.Generator())


def test_decoder_stays_unit_norm_through_steps():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    sae = TopKSAE(5, 8, k=2)
    sae.init_from_data({"x": x}, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(sae.parameters(), lr=0.1)
    for _ in range(5):
        loss, _, _ = sae.train_loss({"x": x})
        opt.zero_grad()
        loss.backward()
        sae.constrain_grads()
        assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max().item() < 1e-5
        opt.step()
        sae.constrain_params()
        torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(8))


VARIANTS = [
    lambda: ReLUSAE(5, 8, l1=1.0),
    lambda: TopKSAE(5, 8, k=2),
    lambda: BatchTopKSAE(5, 8, k=2),
    lambda: JumpReLUSAE(5, 8, init_threshold=0.2),
    lambda: MatryoshkaSAE(5, 8, k=2),
    lambda: PerModalityMap.from_maps(TopKSAE(5, 8, k=2), TopKSAE(5, 8, k=3)),
]


@pytest.mark.parametrize("make", VARIANTS)
def test_save_load_bit_exact(tmp_path, make):
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    is_image = torch.arange(64) % 2 == 0
    sae = make()
    sae.init_from_data({"x": x, "is_image": is_image}, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(sae.parameters(), lr=0.01)
    for _ in range(3):  # a few steps so that every buffer (BatchTopK threshold) is set
        loss, _, _ = sae.train_loss({"x": x, "is_image": is_image})
        opt.zero_grad()
        loss.backward()
        opt.step()
    sae.finalize()
    sae.eval()
    loaded = load_featuremap(sae.save(tmp_path / "m"))
    assert type(loaded) is type(sae) and loaded.hparams() == sae.hparams()
    for m in ("image", "text"):
        z = sae.encode(x, m)
        assert torch.equal(loaded.encode(x, m), z)
        assert torch.equal(loaded.decode(z, m), sae.decode(z, m))
    assert torch.equal(loaded.decoder_directions(), sae.decoder_directions())


def test_per_modality_blocks():
    pm = PerModalityMap.from_maps(TopKSAE(5, 8, k=2), TopKSAE(5, 6, k=2))
    x = torch.randn(4, 5)
    pm.init_from_data(
        {"x": torch.randn(32, 5), "is_image": torch.arange(32) < 16}, torch.Generator()
    )
    assert pm.n_features == 14
    zi, zt = pm.encode(x, "image"), pm.encode(x, "text")
    assert torch.equal(zi[:, :8], pm.maps["image"].encode(x)) and not zi[:, 8:].any()
    assert torch.equal(zt[:, 8:], pm.maps["text"].encode(x)) and not zt[:, :8].any()
    torch.testing.assert_close(pm.decode(zt, "text"), pm.maps["text"].decode(zt[:, 8:]))
    with pytest.raises(MonoscopeError, match="needs the modality"):
        pm.encode(x)
    assert torch.equal(pm.encode(x, "text"), zt)
    batch = {"x": torch.randn(6, 5), "is_image": torch.tensor([1, 1, 0, 0, 0, 0]).bool()}
    loss, stats, fired = pm.train_loss(batch)
    li, _, _ = pm.maps["image"].train_loss({"x": batch["x"][:2]})
    lt, _, _ = pm.maps["text"].train_loss({"x": batch["x"][2:]})
    assert loss.item() == pytest.approx((2 * li.item() + 4 * lt.item()) / 6, rel=1e-5)
    assert fired.shape == (14,)


def test_bad_hparams():
    with pytest.raises(ValueError):
        TopKSAE(4, 8, k=9)
    with pytest.raises(ValueError):
        MatryoshkaSAE(4, 8, k=2, prefixes=[0, 4])
    theta = JumpReLUSAE(4, 8, init_threshold=0.3).log_threshold.exp()
    assert theta.detach().numpy() == pytest.approx(0.3)
