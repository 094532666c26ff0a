"""Equivalence with dictionary_learning and saev, whose PyPI releases need torchvision (so they
run in the second test environment, ``make test-openclip``; skipped elsewhere).

dictionary_learning SAEs are trained for a few steps with its own ``trainSAE`` (which writes
``ae.pt`` + ``config.json``, with ``normalize_activations=True`` so that the norm factor is
folded into the saved biases) and compared with each class's ``from_pretrained`` forward.
saev SAEs are written with its own ``saev.nn.dump`` and compared with ``saev.nn.load``.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from interop_helpers import close, imported, inputs, randomise, require

D, K = 16, 64


@pytest.fixture(scope="module")
def dl_runs(tmp_path_factory):
    """{dict_class: trainer directory} of one trainSAE run with five trainers."""
    require("dictionary_learning")
    from dictionary_learning.dictionary import AutoEncoder
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
    from dictionary_learning.trainers.jumprelu import JumpReluTrainer
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKTrainer
    from dictionary_learning.trainers.standard import StandardTrainer
    from dictionary_learning.trainers.top_k import TopKTrainer
    from dictionary_learning.training import trainSAE

    steps = 6
    common = {
        "steps": steps,
        "activation_dim": D,
        "dict_size": K,
        "layer": 0,
        "lm_name": "tiny",
        "device": "cpu",
    }
    warm = {
        "warmup_steps": 1,
        "sparsity_warmup_steps": 1,
        "threshold_start_step": 1,
        "resample_steps": None,
    }
    configs = [
        {"trainer": StandardTrainer, "dict_class": AutoEncoder},
        {"trainer": TopKTrainer, "k": 8},
        {"trainer": BatchTopKTrainer, "k": 8},
        {"trainer": MatryoshkaBatchTopKTrainer, "k": 8, "group_fractions": [0.25, 0.75]},
        {"trainer": JumpReluTrainer},
    ]
    for c in configs:
        accepted = inspect.signature(c["trainer"].__init__).parameters
        c.update({k: v for k, v in (common | warm).items() if k in accepted})
    g = torch.Generator().manual_seed(0)
    data = iter([torch.randn(64, D, generator=g) * 3 + 1 for _ in range(100 + steps)])
    out = tmp_path_factory.mktemp("dl")
    torch.manual_seed(0)
    trainSAE(
        data, configs, steps=steps, save_dir=str(out), device="cpu", normalize_activations=True
    )
    import json

    runs = {}
    for d in sorted(out.glob("trainer_*")):
        runs[json.loads((d / "config.json").read_text())["trainer"]["dict_class"]] = d
    return runs


KINDS = {
    "AutoEncoder": "sae-relu",
    "AutoEncoderTopK": "sae-topk",
    "BatchTopKSAE": "sae-batchtopk",
    "MatryoshkaBatchTopKSAE": "sae-matryoshka",
    "JumpReluAutoEncoder": "sae-jumprelu",
}


def _dl_reference(cls_name: str, path):
    from dictionary_learning import dictionary
    from dictionary_learning.trainers import batch_top_k, matryoshka_batch_top_k, top_k

    for mod in (dictionary, top_k, batch_top_k, matryoshka_batch_top_k):
        if hasattr(mod, cls_name):
            return getattr(mod, cls_name).from_pretrained(str(path))
    raise AssertionError(cls_name)


@pytest.mark.parametrize("cls_name", sorted(KINDS))
def test_import_matches_dictionary_learning(dl_runs, cls_name, tmp_path):
    run = dl_runs[cls_name]
    ref = _dl_reference(cls_name, run / "ae.pt").eval()
    if cls_name == "JumpReluAutoEncoder":
        with torch.no_grad():  # a trained-looking threshold (a few steps leave it at 0.001)
            ref.threshold.copy_(torch.linspace(0.0, 2.0, K))
        torch.save(ref.state_dict(), run / "ae.pt")
    fm = imported("dictionary_learning", run, tmp_path)
    assert fm.kind == KINDS[cls_name]
    x = inputs(D) * 3 + 1
    with torch.no_grad():
        z_ref, z = ref.encode(x), fm.encode(x)
        assert int((z_ref > 0).sum()) > 0
        assert close(z, z_ref)
        assert close(fm.decode(z_ref), ref.decode(z_ref))
        assert close(fm.decode(z), ref(x))
    if cls_name == "MatryoshkaBatchTopKSAE":
        assert fm.prefixes == [16, 64]


@pytest.mark.parametrize("exp_factor", [4])
def test_import_matches_saev(exp_factor, tmp_path):
    saev_nn = require("saev.nn")
    import saev.config

    sae = randomise(
        saev_nn.SparseAutoencoder(saev.config.SparseAutoencoder(d_vit=D, exp_factor=exp_factor))
    )
    saev_nn.dump(str(tmp_path / "ckpt" / "sae.pt"), sae)
    ref = saev_nn.load(str(tmp_path / "ckpt" / "sae.pt"))
    fm = imported("saev", tmp_path / "ckpt" / "sae.pt", tmp_path)
    assert fm.kind == "sae-relu"
    x = inputs(D)
    with torch.no_grad():
        x_hat, z_ref, _ = ref(x)
        z = fm.encode(x)
        assert int((z_ref > 0).sum()) > 0
        assert close(z, z_ref)
        assert close(fm.decode(z), x_hat)
        assert close(fm.decode(z_ref), ref.decode(z_ref))
