"""SAELens checkpoints (``cfg.json`` + ``sae_weights.safetensors``, as ``SAE.save_model`` and
``TrainingSAE.save_inference_model`` write them): import and export.

Architectures: ``standard`` (ReLU), ``topk`` (also with ``rescale_acts_by_decoder_norm``, folded
into the weights), ``jumprelu`` (BatchTopK and Matryoshka-BatchTopK SAEs are saved as JumpReLU
with one shared threshold: these become ``sae-batchtopk``/``sae-matryoshka`` with that exact
threshold). Input handling: ``apply_b_dec_to_input`` either way; ``normalize_activations`` must be
``none`` (a scaling factor that SAELens folds into the weights is already there), or
``expected_average_only_in`` with its factor given as ``input_scale``; per-sample
``layer_norm``/``constant_norm_rescale`` and unfolded whitening are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._util import MonoscopeError, atomic_write, read_json, write_json
from ..featuremaps.base import FeatureMap, load_featuremap
from ..featuremaps.sae import BatchTopKSAE, JumpReLUSAE, MatryoshkaSAE, ReLUSAE, TopKSAE
from ..locks import LOCK_NAME
from . import _common
from ._common import ForeignSAE, need

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
# The SAELens config schema the export writes (SAELens >= 6 reads it without conversion).
SCHEMA_VERSION = "6.0.0"

_REFUSED = {
    "gated": "its gate and magnitude paths (b_gate, b_mag, r_mag) are not one affine encoder",
    "abstopk": "AbsTopK codes can be negative, monoscope codes are non-negative",
    "matching_pursuit": "matching pursuit codes are found iteratively, not by one encoder",
    "temporal": "a temporal SAE reads sequences, not single embeddings",
}
_NORMS = {
    "layer_norm": "per-sample layer norm is not an affine map of the embedding",
    "constant_norm_rescale": "per-sample norm rescaling is not an affine map of the embedding",
    "expected_average_only_in": "the scaling factor was not folded into the weights and is not in "
    "the checkpoint: give it with --input-scale, or fold it (SAE.fold_activation_norm_scaling_factor)",
    "covariance_whitening": "the whitening was not folded into the weights and is not in the "
    "checkpoint (fold it with SAE.fold_activation_whitening and save again)",
}


def _architecture(cfg: dict[str, Any]) -> tuple[str, int | None]:
    """(architecture, k); configs written before SAELens 6 name TopK by its activation."""
    act = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    arch = cfg.get("architecture") or ("topk" if act == "topk" else "standard")
    if arch == "standard" and act not in ("relu", None):
        raise MonoscopeError(
            f"SAELens activation {act!r} cannot be represented (ReLU, TopK or JumpReLU)"
        )
    return arch, k


def read(src: str | Path, input_scale: float | None = None) -> tuple[FeatureMap, dict[str, Any]]:
    """The monoscope feature map equal to the SAELens SAE in directory ``src``, and its provenance."""
    src = Path(src)
    cfg = read_json(src / CFG)
    if not isinstance(cfg, dict):
        raise MonoscopeError(f"{src / CFG}: expected a JSON object")
    arch, k = _architecture(cfg)
    if arch in _REFUSED or "transcoder" in arch:
        why = _REFUSED.get(arch, "a transcoder reconstructs another activation than its input")
        raise MonoscopeError(f"SAELens architecture {arch!r} cannot be imported: {why}")
    if arch not in ("standard", "topk", "jumprelu"):
        raise MonoscopeError(
            f"SAELens architecture {arch!r} is not supported (standard, topk, jumprelu)"
        )
    norm = cfg.get("normalize_activations") or "none"
    if norm != "none" and not (norm == "expected_average_only_in" and input_scale is not None):
        why = _NORMS.get(norm, "unknown normalisation")
        raise MonoscopeError(f"SAELens normalize_activations={norm!r} cannot be imported: {why}")
    if (cfg.get("reshape_activations") or "none") != "none":
        raise MonoscopeError("SAELens hook_z SAEs read attention-head outputs, not embeddings")
    tensors = _common.read_safetensors(src / WEIGHTS)
    if "scaling_factor" in tensors and not bool((tensors["scaling_factor"] == 1).all()):
        raise MonoscopeError("SAELens finetuning scaling factors are not supported")
    try:
        d, n = int(cfg["d_in"]), int(cfg["d_sae"])
    except (KeyError, TypeError, ValueError):
        raise MonoscopeError(f"{src / CFG}: needs integer d_in and d_sae") from None
    name = str(src / WEIGHTS)
    W_enc = need(tensors, "W_enc", (d, n), name).float()
    b_enc = need(tensors, "b_enc", (n,), name).float()
    W_dec = need(tensors, "W_dec", (n, d), name).float()
    b_dec = need(tensors, "b_dec", (d,), name).float()
    folded = []
    meta = cfg.get("metadata") or {}
    train_arch = meta.get("training_architecture")
    details = meta.get("training_architecture_details") or {}
    threshold = None
    hparams: dict[str, Any] = {}
    if arch == "standard":
        kind = "sae-relu"
    elif arch == "topk":
        if k is None:
            raise MonoscopeError(f"{src / CFG}: a topk SAE needs k")
        kind, hparams = "sae-topk", {"k": int(k)}
        if cfg.get("rescale_acts_by_decoder_norm", False):
            # SAELens: topk(pre * |W_dec|), decode (z / |W_dec|) @ W_dec: the same codes come
            # from an encoder scaled by the norms and a unit-norm decoder.
            norms = W_dec.double().norm(dim=1)
            W_enc = (W_enc.double() * norms).float()
            b_enc = (b_enc.double() * norms).float()
            W_dec = (W_dec.double() / norms[:, None]).float()
            folded.append("decoder norms into the encoder (rescale_acts_by_decoder_norm)")
    else:
        threshold = need(tensors, "threshold", (n,), name).float()
        shared = bool((threshold == threshold[0]).all())
        if train_arch in ("batchtopk", "matryoshka_batchtopk") and shared and "k" in details:
            threshold = threshold[0]
            kind = "sae-batchtopk" if train_arch == "batchtopk" else "sae-matryoshka"
            hparams = {"k": max(1, round(float(details["k"])))}
            widths = details.get("matryoshka_widths")  # SAELens: nested prefix sizes
            if kind == "sae-matryoshka" and widths:
                hparams["prefixes"] = [int(w) for w in widths]
        else:
            kind = "sae-jumprelu"
    apply_b = bool(cfg.get("apply_b_dec_to_input", True))
    if not apply_b:
        folded.append("b_dec @ W_enc into b_enc (apply_b_dec_to_input is false)")
    fmap = _common.build(
        ForeignSAE(kind, W_enc, b_enc, W_dec, b_dec, apply_b, threshold, hparams), input_scale
    )
    provenance = {
        "format": "saelens",
        "source": str(src.resolve()),
        "files": {f: _common.sha256(src / f) for f in (CFG, WEIGHTS)},
        "reader": "safetensors",
        "architecture": arch if train_arch is None else f"{arch} (trained as {train_arch})",
        "source_dtype": str(cfg.get("dtype", "float32")),
        "library_version": meta.get("sae_lens_version") or cfg.get("sae_lens_version"),
        "normalisation": "none; b_dec subtracted from the input" if apply_b else "none",
        "folded": folded,
        "hook_name": meta.get("hook_name") or cfg.get("hook_name"),
        "model_name": meta.get("model_name") or cfg.get("model_name"),
        "source_config": cfg,
    }
    return fmap, provenance


def export(fmap: str | Path | FeatureMap, out: str | Path) -> Path:
    """Write a monoscope SAE as a SAELens checkpoint (``SAE.load_from_disk(out)`` loads it)."""
    from safetensors.torch import save_file

    out = Path(out)
    ours = {CFG, WEIGHTS, LOCK_NAME}
    if out.exists() and (not out.is_dir() or {p.name for p in out.iterdir()} - ours):
        raise MonoscopeError(f"{out}: exists and holds other files than a SAELens checkpoint")
    model_name = None
    if not isinstance(fmap, FeatureMap):
        store = (read_json(Path(fmap) / "config.json").get("training") or {}).get("store") or {}
        model_name = (store.get("model") or {}).get("id")
        fmap = load_featuremap(fmap)
    meta: dict[str, Any] = {
        "sae_lens_version": SCHEMA_VERSION,
        "exported_from": f"monoscope {fmap.kind}",
    }
    if model_name:  # the dual encoder whose embeddings the map was trained on
        meta["model_name"] = model_name
    extra: dict[str, Any] = {}
    if isinstance(fmap, MatryoshkaSAE | BatchTopKSAE):
        arch, thr = "jumprelu", fmap.threshold.double().clamp_min(0).expand(fmap.latents)
        meta["training_architecture"] = (
            "matryoshka_batchtopk" if isinstance(fmap, MatryoshkaSAE) else "batchtopk"
        )
        meta["training_architecture_details"] = {"k": fmap.k}
        if isinstance(fmap, MatryoshkaSAE):
            meta["training_architecture_details"]["matryoshka_widths"] = list(fmap.prefixes)
    elif isinstance(fmap, JumpReLUSAE):
        arch, thr = "jumprelu", fmap.log_threshold.double().exp()
    elif isinstance(fmap, TopKSAE):
        arch, thr = "topk", None
        extra = {"k": fmap.k, "rescale_acts_by_decoder_norm": False}
    elif isinstance(fmap, ReLUSAE):
        arch, thr = "standard", None
    else:
        raise MonoscopeError(
            f"a {fmap.kind!r} feature map cannot be exported to SAELens "
            "(sae-relu, sae-topk, sae-batchtopk, sae-jumprelu, sae-matryoshka can)"
        )
    s = fmap.scale.double()
    # SAELens: pre = (x - b_dec) @ W_enc + b_enc, x^ = z @ W_dec + b_dec; monoscope scales the
    # centred input by s, so W_enc * s and W_dec / s carry that scale.
    tensors = {
        "W_enc": (fmap.W_enc.double() * s).float(),
        "b_enc": fmap.b_enc.float(),
        "W_dec": (fmap.W_dec.double() / s).float(),
        "b_dec": fmap.b_pre.float(),
    }
    if thr is not None:
        tensors["threshold"] = thr.float()
    cfg = {
        "architecture": arch,
        "d_in": fmap.dim,
        "d_sae": fmap.latents,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        **extra,
        "metadata": meta,
    }
    out.mkdir(parents=True, exist_ok=True)
    tensors = {n: t.detach().cpu().contiguous() for n, t in tensors.items()}
    atomic_write(out / WEIGHTS, lambda p: save_file(tensors, str(p)))
    write_json(out / CFG, cfg)
    return out
