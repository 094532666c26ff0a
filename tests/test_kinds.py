"""Every registered feature-map kind: the save/load round trip, non-negative codes for both
modalities (``encode(x, modality)`` works for every kind), and the training protocol. Kinds are taken from the registry, so a new kind is
covered as soon as it is registered (one whose constructor needs more than ``dim`` adds an
example to ``COMPOSITES``)."""

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from monoscope.featuremaps import KINDS, FeatureMap, center, identity, load_featuremap, ncl, sae
from monoscope.featuremaps.protocol import Trainable, TrainStep

assert identity.IdentityMap.kind in KINDS  # the imports above register the built-in kinds
D, K = 6, 40
MODALITIES = ("image", "text")
COMPOSITES = {
    "per-modality": lambda: sae.PerModalityMap.from_maps(
        sae.TopKSAE(D, K, k=3), sae.ReLUSAE(D, K // 2)
    ),
    "centered": lambda: center.CenteredMap.wrap(
        ncl.NCLMap(D, K, shared=False), np.linspace(-1, 1, D), np.linspace(1, -1, D)
    ),
}


def _example(kind: str) -> FeatureMap:
    if kind in COMPOSITES:
        return COMPOSITES[kind]()
    params = inspect.signature(KINDS[kind]).parameters
    required = [n for n, p in params.items() if p.default is p.empty and n != "dim"]
    assert not required, f"kind {kind!r} needs {required}: add an example to COMPOSITES"
    kwargs = {name: value for name, value in (("latents", K), ("k", 3)) if name in params}
    return KINDS[kind](D, **kwargs)


def _batch(mode: str, n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image, text = torch.randn(n, D, generator=g) + 0.5, torch.randn(n, D, generator=g) - 0.5
    if mode == "paired":
        return {"image": image, "text": text}
    return {"x": torch.cat([image, text]), "is_image": torch.arange(2 * n) < n}


def _trained(kind: str) -> FeatureMap:
    """An example of ``kind`` after initialisation and two steps of the protocol."""
    torch.manual_seed(0)
    fmap = _example(kind)
    if not fmap.trainable:
        return fmap
    assert isinstance(fmap, Trainable)
    assert fmap.data_mode in ("mixed", "paired")
    fmap.init_from_data(_batch(fmap.data_mode, 64, 1), torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(fmap.parameters(), lr=1e-2)
    for seed in (2, 3):
        dead = torch.zeros(fmap.n_features, dtype=torch.bool)
        step = fmap.train_loss(_batch(fmap.data_mode, 16, seed), dead)
        assert isinstance(step, TrainStep) and step.loss.dim() == 0 and "l0" in step.stats
        assert step.fired.shape == (fmap.n_features,) and step.fired.dtype == torch.bool
        opt.zero_grad()
        step.loss.backward()
        fmap.constrain_grads()
        opt.step()
        fmap.constrain_params()
    fmap.finalize()
    return fmap.eval()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_saves_loads_and_encodes_non_negative(kind: str, tmp_path: Path) -> None:
    fmap = _trained(kind)
    assert fmap.kind == kind
    loaded = load_featuremap(fmap.save(tmp_path / "f"))
    assert type(loaded) is type(fmap) and loaded.hparams() == fmap.hparams()
    x = _batch("paired", 32, 9)
    with torch.no_grad():
        for m in MODALITIES:
            codes = fmap.encode(x[m], m)  # total: every kind takes the modality
            assert codes.shape == (32, fmap.n_features)
            assert bool((codes >= 0).all()) and bool(torch.isfinite(codes).all())
            assert torch.equal(fmap.encode(x[m], m), codes)
            assert torch.equal(loaded.encode(x[m], m), codes)
            if fmap.has_decoder:
                recon = fmap.decode(codes, m)
                assert torch.equal(fmap.decode(codes, m), recon)
                assert torch.equal(loaded.decode(codes, m), recon)


def test_the_registry_holds_every_built_in_kind() -> None:
    assert {
        "identity",
        "sae-relu",
        "sae-topk",
        "sae-batchtopk",
        "sae-jumprelu",
        "sae-matryoshka",
        "per-modality",
        "ncl",
        "centered",
    } <= set(KINDS)
    assert [k for k in KINDS if not KINDS[k].trainable] == ["identity"]
