"""Import/export machinery that needs no peer library: refusals, layouts written by hand to
each library's documented format, the CLI, and an imported map through analyze -> report."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ToyEncoder
from interop_helpers import close, imported, inputs
from monoscope import cli
from monoscope._util import MonoscopeError
from monoscope.analysis.ablation import ablate
from monoscope.featuremaps import load_featuremap
from monoscope.featuremaps.sae import BatchTopKSAE, JumpReLUSAE, MatryoshkaSAE, ReLUSAE, TopKSAE
from monoscope.interop import EXPORT_FORMATS, IMPORT_FORMATS, export_sae, import_sae

D, K = 8, 32


def _trained_like(cls, seed: int = 0, **kw):
    """A monoscope SAE with random weights, a non-trivial b_pre, scale and thresholds."""
    g = torch.Generator().manual_seed(seed)
    m = cls(D, K, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        m.scale.fill_(1.7)
        if isinstance(m, JumpReLUSAE):
            m.log_threshold.copy_(torch.rand(K, generator=g).log() - 1)
        if isinstance(m, BatchTopKSAE):
            m.threshold.fill_(0.2)
    return m.eval()


SAES = {
    "sae-relu": lambda: _trained_like(ReLUSAE),
    "sae-topk": lambda: _trained_like(TopKSAE, k=4),
    "sae-batchtopk": lambda: _trained_like(BatchTopKSAE, k=4),
    "sae-jumprelu": lambda: _trained_like(JumpReLUSAE),
    "sae-matryoshka": lambda: _trained_like(MatryoshkaSAE, k=4, prefixes=[8, 16]),
}


def test_cli_lists_match_the_package():
    assert cli.SAE_IMPORT_FORMATS == IMPORT_FORMATS
    assert cli.SAE_EXPORT_FORMATS == EXPORT_FORMATS


@pytest.mark.parametrize("kind", sorted(SAES))
def test_export_then_import_is_the_same_map(kind, tmp_path):
    m = SAES[kind]()
    m.save(tmp_path / "fm")
    export_sae("saelens", tmp_path / "fm", tmp_path / "sl")
    back = imported("saelens", tmp_path / "sl", tmp_path)
    assert back.kind == kind and back.hparams() == m.hparams() | (
        {"prefixes": m.prefixes} if kind == "sae-matryoshka" else {}
    )
    x = inputs(D)
    with torch.no_grad():
        assert close(back.encode(x), m.encode(x))
        assert close(back.decode(m.encode(x)), m.decode(m.encode(x)))


def _saelens_dir(tmp: Path, cfg: dict, tensors: dict | None = None) -> Path:
    src = tmp / "sl"
    src.mkdir(exist_ok=True)
    base = {"architecture": "standard", "d_in": D, "d_sae": K, "dtype": "float32"}
    (src / "cfg.json").write_text(json.dumps(base | cfg))
    g = torch.Generator().manual_seed(0)
    t = tensors or {
        "W_enc": torch.randn(D, K, generator=g),
        "b_enc": torch.randn(K, generator=g),
        "W_dec": torch.randn(K, D, generator=g),
        "b_dec": torch.randn(D, generator=g),
    }
    save_file(t, str(src / "sae_weights.safetensors"))
    return src


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"architecture": "gated"}, "gate and magnitude"),
        ({"architecture": "abstopk", "k": 4}, "negative"),
        ({"architecture": "transcoder"}, "transcoder"),
        ({"architecture": "weird"}, "not supported"),
        ({"normalize_activations": "layer_norm"}, "per-sample layer norm"),
        ({"normalize_activations": "expected_average_only_in"}, "not folded"),
        ({"reshape_activations": "hook_z"}, "attention-head"),
        ({"architecture": "topk"}, "needs k"),
        ({"d_in": D + 1}, "shape"),
        ({"activation_fn": "tanh-relu", "architecture": None}, "tanh-relu"),
    ],
)
def test_saelens_refusals_are_one_line(cfg, match, tmp_path):
    src = _saelens_dir(tmp_path, cfg)
    with pytest.raises(MonoscopeError, match=match) as err:
        import_sae("saelens", src, tmp_path / "fm")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "fm").exists()


def test_saelens_pre_v6_topk_config(tmp_path):
    src = _saelens_dir(
        tmp_path,
        {"architecture": None, "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 3}},
    )
    fm = imported("saelens", src, tmp_path)
    assert fm.kind == "sae-topk" and fm.k == 3
    assert (fm.encode(inputs(D)) > 0).sum(1).max() <= 3


def test_nan_threshold_is_refused(tmp_path):
    g = torch.Generator().manual_seed(0)
    t = {
        "W_enc": torch.randn(D, K, generator=g),
        "b_enc": torch.randn(K, generator=g),
        "W_dec": torch.randn(K, D, generator=g),
        "b_dec": torch.randn(D, generator=g),
        "threshold": torch.full((K,), float("nan")),
    }
    src = _saelens_dir(tmp_path, {"architecture": "jumprelu"}, t)
    with pytest.raises(MonoscopeError, match="NaN"):
        import_sae("saelens", src, tmp_path / "fm")


def test_damaged_weights_are_one_line(tmp_path):
    src = _saelens_dir(tmp_path, {})
    (src / "sae_weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(MonoscopeError, match="safetensors"):
        import_sae("saelens", src, tmp_path / "fm")
    with pytest.raises(MonoscopeError, match="unknown SAE format"):
        import_sae("nope", src, tmp_path / "fm")


def test_provenance_and_no_clobbering(tmp_path):
    src = _saelens_dir(
        tmp_path,
        {
            "apply_b_dec_to_input": False,
            "metadata": {"sae_lens_version": "6.1.0", "hook_name": "h"},
        },
    )
    out = import_sae("saelens", src, tmp_path / "fm")
    cfg = json.loads((out / "config.json").read_text())
    prov = cfg["imported"]
    assert prov["format"] == "saelens" and prov["reader"] == "safetensors"
    assert prov["library_version"] == "6.1.0" and prov["hook_name"] == "h"
    assert set(prov["files"]) == {"cfg.json", "sae_weights.safetensors"}
    assert any("apply_b_dec_to_input" in f for f in prov["folded"])
    assert cfg["kind"] == "sae-relu" and "versions" in cfg
    with pytest.raises(MonoscopeError, match="--overwrite"):
        import_sae("saelens", src, out)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(MonoscopeError, match="not a feature map"):
        import_sae("saelens", src, tmp_path / "other")
    import_sae("saelens", src, tmp_path / "other", overwrite=True)  # foreign files stay
    assert (tmp_path / "other" / "notes.txt").read_text() == "x"
    (out / "metrics.json").write_text("{}")  # as a trained map has
    (out / "checkpoints").mkdir()
    import_sae("saelens", src, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_export_refuses_other_maps(tmp_path):
    from monoscope.featuremaps.identity import IdentityMap

    IdentityMap(D).save(tmp_path / "id")
    with pytest.raises(MonoscopeError, match="cannot be exported"):
        export_sae("saelens", tmp_path / "id", tmp_path / "out")
    with pytest.raises(MonoscopeError, match="other files"):
        export_sae("saelens", tmp_path / "id", tmp_path / "id")


# --- layouts written by hand to each library's documented format ----------------------------


def _sparsify_dir(tmp: Path, cfg: dict) -> Path:
    src = tmp / "sp" / "layers.3"
    src.mkdir(parents=True, exist_ok=True)
    (src / "cfg.json").write_text(
        json.dumps({"activation": "topk", "k": 4, "num_latents": K, "d_in": D} | cfg)
    )
    g = torch.Generator().manual_seed(0)
    t = {
        "encoder.weight": torch.randn(K, D, generator=g),
        "encoder.bias": torch.randn(K, generator=g),
        "W_dec": torch.randn(K, D, generator=g),
        "b_dec": torch.randn(D, generator=g),
    }
    save_file(t, str(src / "sae.safetensors"))
    return src


def test_sparsify_layout(tmp_path):
    src = _sparsify_dir(tmp_path, {})
    fm = imported("sparsify", src.parent, tmp_path)  # the run directory with one hookpoint
    assert fm.kind == "sae-topk" and fm.k == 4
    t = load_file(str(src / "sae.safetensors"))
    x = inputs(D)
    pre = torch.relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"])
    v, i = pre.topk(4, dim=1)
    z = torch.zeros_like(pre).scatter_(1, i, v)
    assert close(fm.encode(x), z)
    assert close(fm.decode(z), z @ t["W_dec"] + t["b_dec"])
    for cfg, match in [
        ({"transcode": True}, "transcoder"),
        ({"activation": "groupmax"}, "groupmax"),
        ({"skip_connection": True}, "skip"),
    ]:
        with pytest.raises(MonoscopeError, match=match):
            import_sae("sparsify", _sparsify_dir(tmp_path, cfg), tmp_path / "x")
    _sparsify_dir(tmp_path, {}).parent.joinpath("layers.4").mkdir()
    (tmp_path / "sp" / "layers.4" / "cfg.json").write_text("{}")
    with pytest.raises(MonoscopeError, match="several hookpoints"):
        import_sae("sparsify", tmp_path / "sp", tmp_path / "x")


def _saev_file(tmp: Path, header: dict, sd: dict) -> Path:
    path = tmp / "saev" / "sae.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(sd, buf)
    path.write_bytes(json.dumps(header).encode() + b"\n" + buf.getvalue())
    return path


def _saev_sd(threshold: float | None = None) -> dict:
    g = torch.Generator().manual_seed(0)
    sd = {
        "W_enc": torch.randn(D, K, generator=g),
        "b_enc": torch.randn(K, generator=g),
        "W_dec": torch.randn(K, D, generator=g),
        "b_dec": torch.randn(D, generator=g),
    }
    if threshold is not None:
        sd["activation.threshold"] = torch.tensor(threshold)
    return sd


@pytest.mark.parametrize("cls", ["Relu", "TopK", "BatchTopK"])
def test_saev_schema5_layout(cls, tmp_path):
    """saev.nn.modeling (schema 5): h = x @ W_enc + b_enc (input not centred), f = act(h),
    x^ = f @ W_dec + b_dec."""
    params = {"top_k": 4} if cls != "Relu" else {}
    header = {
        "schema": 5,
        "cfg": {"d_model": D, "d_sae": K, "activation": {"cls": cls, "params": params}},
        "lib": "x",
    }
    sd = _saev_sd(0.3 if cls == "BatchTopK" else None)
    fm = imported("saev", _saev_file(tmp_path, header, sd), tmp_path)
    x = inputs(D)
    h = x @ sd["W_enc"] + sd["b_enc"]
    if cls == "Relu":
        z = torch.relu(h)
    elif cls == "TopK":
        v, i = h.topk(4, dim=1)
        z = torch.zeros_like(h).scatter_(1, i, v.relu())  # negatives among the top k become 0
    else:
        z = torch.where(h > 0.3, h, 0.0)
    assert fm.kind == {"Relu": "sae-relu", "TopK": "sae-topk", "BatchTopK": "sae-batchtopk"}[cls]
    assert close(fm.encode(x), z)
    assert close(fm.decode(z), z @ sd["W_dec"] + sd["b_dec"])


def test_saev_legacy_and_schema1(tmp_path):
    sd = _saev_sd()
    legacy = {"d_vit": D, "exp_factor": K // D, "sparsity_coeff": 4e-4, "seed": 0}
    fm = imported("saev", _saev_file(tmp_path, legacy, sd).parent, tmp_path)
    x = inputs(D)
    assert close(fm.encode(x), torch.relu((x - sd["b_dec"]) @ sd["W_enc"] + sd["b_enc"]))
    with pytest.raises(MonoscopeError, match="schema-1"):
        import_sae(
            "saev",
            _saev_file(tmp_path, {"schema": 1, "cfg": {"d_model": D, "d_sae": K}}, sd),
            tmp_path / "x",
        )
    (tmp_path / "bad.pt").write_bytes(b"\x80\x02not json\n")
    with pytest.raises(MonoscopeError, match="JSON header"):
        import_sae("saev", tmp_path / "bad.pt", tmp_path / "x")


def test_torch_state_dicts_are_read_without_unpickling_code(tmp_path):
    """A pickle that would run code is refused by weights_only=True, as one line."""

    class Boom:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "dl" / "ae.pt"
    path.parent.mkdir()
    torch.save({"encoder.weight": Boom()}, path)
    with pytest.raises(MonoscopeError, match="weights_only=True") as err:
        import_sae("dictionary_learning", path, tmp_path / "x")
    assert "\n" not in str(err.value)


def test_dictionary_learning_layout(tmp_path):
    """AutoEncoder: relu(encoder(x - bias)), decoder(z) + bias (nn.Linear weights); codes as
    from_pretrained gives them, with the decoder's column norms folded into the encoder."""
    g = torch.Generator().manual_seed(0)
    sd = {
        "encoder.weight": torch.randn(K, D, generator=g),
        "encoder.bias": torch.randn(K, generator=g),
        "decoder.weight": torch.randn(D, K, generator=g),
        "bias": torch.randn(D, generator=g),
    }
    (tmp_path / "trainer_0").mkdir()
    torch.save(sd, tmp_path / "trainer_0" / "ae.pt")
    fm = imported("dictionary_learning", tmp_path / "trainer_0", tmp_path)  # no config.json
    x = inputs(D)
    z = torch.relu((x - sd["bias"]) @ sd["encoder.weight"].T + sd["encoder.bias"])
    norms = sd["decoder.weight"].norm(dim=0)
    assert close(fm.encode(x), z * norms)
    assert close(fm.decode(z * norms), z @ sd["decoder.weight"].T + sd["bias"])
    prov = json.loads((tmp_path / "fm-dictionary_learning" / "config.json").read_text())["imported"]
    assert (
        prov["reader"] == "torch.load(weights_only=True)" and prov["architecture"] == "AutoEncoder"
    )
    sd2 = {
        "encoder.weight": sd["encoder.weight"],
        "encoder.bias": sd["encoder.bias"],
        "decoder.weight": sd["decoder.weight"],
        "b_dec": sd["bias"],
        "k": torch.tensor(4),
        "threshold": torch.tensor(-1.0),
    }
    torch.save(sd2, tmp_path / "trainer_0" / "ae.pt")
    with pytest.raises(MonoscopeError, match="config.json"):
        import_sae("dictionary_learning", tmp_path / "trainer_0", tmp_path / "x")
    (tmp_path / "trainer_0" / "config.json").write_text(
        json.dumps({"trainer": {"dict_class": "GatedAutoEncoder"}})
    )
    with pytest.raises(MonoscopeError, match="Gated"):
        import_sae("dictionary_learning", tmp_path / "trainer_0", tmp_path / "x")


# --- an imported map is a feature map like any other -----------------------------------------


def test_imported_map_through_analyze_and_report(small_store, tmp_path):
    """A SAELens-layout checkpoint imported with the CLI, analysed, ablated and reported like a
    native map."""
    m = _trained_like(TopKSAE, k=4)
    m.save(tmp_path / "native")
    assert (
        cli.main(
            [
                "export-sae",
                "--format",
                "saelens",
                str(tmp_path / "native"),
                "--out",
                str(tmp_path / "sl"),
            ]
        )
        == 0
    )
    fm = tmp_path / "imported"
    assert (
        cli.main(["import-sae", "--format", "saelens", str(tmp_path / "sl"), "--out", str(fm)]) == 0
    )
    assert load_featuremap(fm).kind == "sae-topk"
    an = tmp_path / "analysis"
    args = ["analyze", "--store", str(small_store), "--featuremap", str(fm), "--out", str(an)]
    assert (
        cli.main(
            [
                *args,
                "--top-m",
                "3",
                "--permutations",
                "10",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    abl = ablate(
        small_store,
        fm,
        tmp_path / "abl",
        analysis=an,
        model=ToyEncoder(),
        label_keys=["parity"],
        control_seeds=2,
        device="cpu",
        progress=False,
    )
    html = tmp_path / "report.html"
    assert (
        cli.main(["report", "--analysis", str(an), "--ablation", str(abl), "--out", str(html)]) == 0
    )
    assert html.stat().st_size > 1000
    summary = json.loads((an / "summary.json").read_text())
    assert summary["n_features"] == K
    assert "ImgD" in json.loads((abl / "ablation.json").read_text())["removals"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert (
        cli.main(
            [
                "import-sae",
                "--format",
                "saelens",
                str(tmp_path / "missing"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("monoscope: error:") and "\n" not in err


def test_export_names_the_model_the_map_was_trained_on(tmp_path):
    SAES["sae-topk"]().save(
        tmp_path / "fm", extra={"training": {"store": {"model": {"id": "m/x"}}}}
    )
    out = export_sae("saelens", tmp_path / "fm", tmp_path / "sl")
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert meta["model_name"] == "m/x" and meta["sae_lens_version"] == "6.0.0"


def test_input_scale(tmp_path):
    """--input-scale S: the source saw S x; monoscope's scale is S and b_pre = b_dec / S."""
    src = _saelens_dir(tmp_path, {})
    fm = tmp_path / "fm"
    assert (
        cli.main(
            ["import-sae", "--format", "saelens", str(src), "--out", str(fm), "--input-scale", "4"]
        )
        == 0
    )
    m = load_featuremap(fm)
    t = load_file(str(src / "sae_weights.safetensors"))
    x = inputs(D)
    z = torch.relu((4 * x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
    assert close(m.encode(x), z)
    assert close(m.decode(z), (z @ t["W_dec"] + t["b_dec"]) / 4)
    assert json.loads((fm / "config.json").read_text())["imported"]["input_scale"] == 4.0
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(MonoscopeError, match="positive"):
            import_sae("saelens", src, tmp_path / "x", input_scale=bad)
