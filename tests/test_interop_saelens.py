"""Equivalence with SAELens itself: SAEs built with its classes and saved with its own
``save_model``/``save_inference_model`` are imported and compared with its forward; exported
monoscope maps are loaded with ``SAE.load_from_disk`` and compared the same way."""

from __future__ import annotations

import pytest
import torch

from interop_helpers import close, imported, inputs, randomise, require
from monoscope._util import MonoscopeError
from monoscope.featuremaps import load_featuremap
from monoscope.interop import export_sae, import_sae

sl = require("sae_lens")

D, K = 16, 64


def _set_threshold(sae, value: torch.Tensor) -> None:
    with torch.no_grad():
        sae.threshold.copy_(value)


def _standard(apply_b: bool):
    return randomise(
        sl.StandardSAE(sl.StandardSAEConfig(d_in=D, d_sae=K, apply_b_dec_to_input=apply_b))
    )


def _topk(rescale: bool):
    cfg = sl.TopKSAEConfig(d_in=D, d_sae=K, k=8, rescale_acts_by_decoder_norm=rescale)
    return randomise(sl.TopKSAE(cfg))


def _jumprelu():
    sae = randomise(sl.JumpReLUSAE(sl.JumpReLUSAEConfig(d_in=D, d_sae=K)))
    _set_threshold(sae, torch.linspace(-0.2, 1.0, K))  # some <= 0: a plain ReLU there
    return sae


def _training(cls_name: str, **kw):
    """A TrainingSAE saved for inference (BatchTopK and Matryoshka become JumpReLU)."""
    cls = getattr(sl, f"{cls_name}TrainingSAE")
    cfg = getattr(sl, f"{cls_name}TrainingSAEConfig")(d_in=D, d_sae=K, **kw)
    sae = randomise(cls(cfg))
    if hasattr(sae, "topk_threshold"):
        sae.topk_threshold = torch.tensor(0.4)
    return sae


CASES = {
    "standard": lambda: _standard(True),
    "standard-no-b_dec-input": lambda: _standard(False),
    "topk": lambda: _topk(False),
    "topk-rescaled": lambda: _topk(True),
    "jumprelu": _jumprelu,
    "topk-training": lambda: _training("TopK", k=8),
    "batchtopk-training": lambda: _training("BatchTopK", k=8),
    "matryoshka-training": lambda: _training(
        "MatryoshkaBatchTopK", k=8, matryoshka_widths=[16, 48, 64]
    ),
}
KINDS = {
    "standard": "sae-relu",
    "standard-no-b_dec-input": "sae-relu",
    "topk": "sae-topk",
    "topk-rescaled": "sae-topk",
    "jumprelu": "sae-jumprelu",
    "topk-training": "sae-topk",
    "batchtopk-training": "sae-batchtopk",
    "matryoshka-training": "sae-matryoshka",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_import_matches_saelens(case, tmp_path):
    sae = CASES[case]()
    src = tmp_path / "sae"
    if case.endswith("-training"):
        sae.save_inference_model(src)
    else:
        sae.save_model(src)
    ref = sl.SAE.load_from_disk(src)  # SAELens's own loader and forward
    fm = imported("saelens", src, tmp_path)
    assert fm.kind == KINDS[case]
    x = inputs(D)
    with torch.no_grad():
        z_ref, z = ref.encode(x), fm.encode(x)
        assert int((z_ref > 0).sum()) > 0
        assert close(z, z_ref)
        assert close(fm.decode(z_ref), ref.decode(z_ref))
        assert close(fm.decode(z), ref(x))
    if case == "matryoshka-training":
        assert fm.prefixes == [16, 48, 64]


KINDS_OUT = ("sae-relu", "sae-topk", "sae-batchtopk", "sae-jumprelu", "sae-matryoshka")


@pytest.mark.parametrize("kind", KINDS_OUT)
def test_export_loads_in_saelens(kind, tmp_path):
    from test_interop import SAES

    m = SAES[kind]()
    m.save(tmp_path / "fm")
    out = export_sae("saelens", tmp_path / "fm", tmp_path / "sl")
    ref = sl.SAE.load_from_disk(out)
    assert ref.cfg.architecture() == {"sae-relu": "standard", "sae-topk": "topk"}.get(
        kind, "jumprelu"
    )
    x = inputs(8)
    with torch.no_grad():
        z = m.encode(x)
        assert int((z > 0).sum()) > 0
        assert close(ref.encode(x), z)
        assert close(ref.decode(z), m.decode(z))
        assert close(ref(x), m.decode(z))


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_unfolded_scaling_factor_given_as_input_scale(arch, tmp_path):
    """normalize_activations=expected_average_only_in saved unfolded: the factor is given with
    input_scale and lands in monoscope's input scale; the reference is SAELens's own
    fold_activation_norm_scaling_factor of the same SAE."""
    kw = {"d_in": D, "d_sae": K, "normalize_activations": "expected_average_only_in"}
    cls, cfg_cls = {
        "standard": (sl.StandardSAE, sl.StandardSAEConfig),
        "topk": (sl.TopKSAE, sl.TopKSAEConfig),
        "jumprelu": (sl.JumpReLUSAE, sl.JumpReLUSAEConfig),
    }[arch]
    sae = randomise(cls(cfg_cls(**kw, **({"k": 8} if arch == "topk" else {}))))
    sae.save_model(tmp_path / "sae")
    with pytest.raises(MonoscopeError, match="--input-scale"):
        import_sae("saelens", tmp_path / "sae", tmp_path / "x")
    factor = 2.5
    out = import_sae("saelens", tmp_path / "sae", tmp_path / "fm", input_scale=factor)
    fm = load_featuremap(out)
    assert float(fm.scale) == factor
    sae.fold_activation_norm_scaling_factor(factor)  # now works on raw embeddings
    x = inputs(D)
    with torch.no_grad():
        z_ref = sae.encode(x)
        assert int((z_ref > 0).sum()) > 0
        assert close(fm.encode(x), z_ref)
        assert close(fm.decode(z_ref), sae.decode(z_ref))
