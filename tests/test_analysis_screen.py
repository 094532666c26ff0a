"""The bfloat16 screen returns the float32 encoder's codes (monoscope.analysis.screen)."""

from __future__ import annotations

import pytest
import torch

from monoscope.analysis.screen import UNIT, ScreenedPreActs, _at_least, screen_pays
from monoscope.analysis.sparse import sparse_encoder
from monoscope.featuremaps.sae import BatchTopKSAE, MatryoshkaSAE, TopKSAE

BF16 = screen_pays("cpu", 1 << 16)
needs_bf16 = pytest.mark.skipif(
    not BF16, reason="no bfloat16 GEMM here: the screen is not used on this CPU"
)


def _problem(seed: int, d: int, n_lat: int, rows: int = 64, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, n_lat, generator=g) * (0.2 + 2 * torch.rand(n_lat, generator=g))
    b = 0.3 * torch.randn(n_lat, generator=g)
    x = scale * torch.randn(rows, d, generator=g)
    x[0] = 0  # a row whose pre-activations are the biases
    return w, b, x


def _same_topk(pre: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor, k: int) -> None:
    ref = pre.topk(k, dim=1)
    assert torch.equal(idx.sort(1).values, ref.indices.sort(1).values)
    got = vals.sort(1, descending=True).values
    assert torch.allclose(got, ref.values, rtol=1e-5, atol=1e-5 * float(pre.abs().max()))


@needs_bf16
@pytest.mark.parametrize(
    ("seed", "d", "n_lat", "k", "scale"),
    [(0, 3, 40, 1, 1.0), (1, 64, 700, 5, 1.0), (2, 511, 700, 32, 1.0), (3, 64, 300, 64, 1e3)],
)
def test_topk_is_the_float32_encoders(seed: int, d: int, n_lat: int, k: int, scale: float):
    w, b, x = _problem(seed, d, n_lat, scale=scale)
    idx, vals = ScreenedPreActs(w, b).topk(x, k)
    _same_topk(torch.addmm(b, x, w), idx, vals, k)


@needs_bf16
def test_topk_separates_latents_that_bfloat16_cannot_tell_apart():
    # 600 latents within 1e-4 relative of one another: one bfloat16 value for all of them
    g = torch.Generator().manual_seed(5)
    base = torch.randn(32, 1, generator=g)
    w = base + 1e-4 * torch.randn(32, 600, generator=g)
    x = torch.randn(16, 32, generator=g)
    pre = x @ w
    assert (pre.bfloat16()[:, :1] == pre.bfloat16()).float().mean() > 0.5
    idx, vals = ScreenedPreActs(w, torch.zeros(600)).topk(x, 8)
    _same_topk(pre, idx, vals, 8)


@needs_bf16
@pytest.mark.parametrize("threshold", [0.0, 1.5, 40.0])
def test_above_is_the_thresholded_encoders(threshold: float):
    w, b, x = _problem(7, 96, 500)
    rows, cols, vals = ScreenedPreActs(w, b).above(x, threshold)
    pre = torch.addmm(b, x, w)
    ref_rows, ref_cols = (pre > threshold).nonzero(as_tuple=True)
    assert torch.equal(rows, ref_rows) and torch.equal(cols, ref_cols)
    assert torch.allclose(vals, pre[rows, cols], rtol=1e-5, atol=1e-5)


@needs_bf16
def test_the_error_bound_holds_on_this_cpu():
    w, b, x = _problem(9, 300, 2000, rows=256)
    screen = ScreenedPreActs(w, b)
    xa, s, e_in = screen._screen(x)
    exact = torch.addmm(b.double(), x.double(), w.double())
    err = (s.double() - exact).abs()
    bound = e_in.double()[:, None] + UNIT / (1 - UNIT) * s.double().abs()
    assert bool((err <= bound).all())
    assert float((err / bound).max()) < 0.5  # a bound, not an estimate: the worst case is far


def test_screen_is_used_on_cpu_for_large_maps_only():
    assert not screen_pays("cpu", 1024)
    assert not screen_pays("meta", 1 << 16)
    assert screen_pays("cpu", 8192) == BF16


@pytest.mark.parametrize("kind", [TopKSAE, BatchTopKSAE, MatryoshkaSAE])
def test_sparse_encoder_of_a_large_map_gives_its_own_codes(kind: type[TopKSAE]):
    torch.manual_seed(0)
    sae = kind(48, 4096, k=12)
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.b_enc.normal_(0, 0.5)
        sae.b_pre.normal_()
        if isinstance(sae, BatchTopKSAE):
            sae.threshold.fill_(9.0)
    encode = sparse_encoder(sae)
    assert encode is not None
    x = torch.randn(300, 48)
    with torch.no_grad():
        dense = sae.encode(x)
        codes = encode(x, "image").dense()
    assert torch.equal(codes > 0, dense > 0)
    assert torch.allclose(codes, dense, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("cutoff", [[0.5, 3.0], [-0.25, 2.0], [0.0, 1e-30]])
def test_at_least_is_a_bfloat16_comparison(cutoff: list[float]):
    s = torch.tensor([[-0.0, 0.0, -1.0, 0.5, 0.50390625, 2.0, 3.0, 1e30]] * 2).bfloat16()
    c = torch.tensor(cutoff)
    assert torch.equal(_at_least(s, c), s >= c[:, None].bfloat16())


def test_a_non_finite_input_reaches_the_codes():
    torch.manual_seed(0)
    sae = TopKSAE(16, 4096, k=4)
    with torch.no_grad():
        sae.W_enc.normal_()
    encode = sparse_encoder(sae)
    assert encode is not None
    x = torch.randn(5, 16)
    x[2, 3] = float("nan")
    assert not encode(x, "text").is_finite()
