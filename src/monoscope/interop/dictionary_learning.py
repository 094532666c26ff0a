"""dictionary_learning checkpoints (``ae.pt`` torch state dict + ``config.json``, as
``trainSAE`` writes them into ``trainer_N/``), read with ``torch.load(weights_only=True)``.

The class comes from ``config.json`` (``trainer.dict_class``), else from the state dict's keys:

- ``AutoEncoder``: ``relu(encoder(x - bias))``, ``decoder(z) + bias`` -> ``sae-relu``, decoder
  norms folded into the encoder as ``AutoEncoder.from_pretrained`` does by default
- ``AutoEncoderNew``: ``relu(encoder(x))``, ``decoder(z)`` (decoder bias) -> ``sae-relu``
- ``AutoEncoderTopK``: TopK of ``relu(encoder(x - b_dec))`` -> ``sae-topk``
- ``BatchTopKSAE``, ``MatryoshkaBatchTopKSAE``: ``relu(pre) * (relu(pre) > threshold)`` at
  inference -> ``sae-batchtopk`` / ``sae-matryoshka`` (prefixes from ``group_sizes``)
- ``JumpReluAutoEncoder``: ``relu(pre * (pre > threshold))``, encoder input not centred (the
  class default) -> ``sae-jumprelu``
- ``GatedAutoEncoder`` is refused.

``trainSAE(normalize_activations=True)`` scales the biases by the norm factor before saving, so
the checkpoint already works on raw activations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .._util import MonoscopeError, read_json
from ..featuremaps.base import FeatureMap
from . import _common
from ._common import ForeignSAE

WEIGHTS, CONFIG = "ae.pt", "config.json"

_KEYS = {  # state-dict keys -> class, for checkpoints without config.json
    frozenset({"encoder.weight", "encoder.bias", "decoder.weight", "bias"}): "AutoEncoder",
    frozenset(
        {"encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"}
    ): "AutoEncoderNew",
    frozenset({"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}): "JumpReluAutoEncoder",
    frozenset(
        {"W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes"}
    ): "MatryoshkaBatchTopKSAE",
}


def _dict_class(config: dict[str, Any], keys: set[str], src: Path) -> str:
    name = (config.get("trainer") or {}).get("dict_class")
    if name:
        return str(name)
    if frozenset(keys) in _KEYS:
        return _KEYS[frozenset(keys)]
    raise MonoscopeError(
        f"{src}: cannot tell the dictionary class from the state dict alone (AutoEncoderTopK and "
        f"BatchTopKSAE share their keys); put the run's {CONFIG} beside {WEIGHTS}"
    )


def read(src: str | Path, input_scale: float | None = None) -> tuple[FeatureMap, dict[str, Any]]:
    src = Path(src)
    weights = src / WEIGHTS if src.is_dir() else src
    folder = weights.parent
    config = read_json(folder / CONFIG) if (folder / CONFIG).is_file() else {}
    if not isinstance(config, dict):
        raise MonoscopeError(f"{folder / CONFIG}: expected a JSON object")
    sd = _common.read_state_dict(weights, str(weights))
    cls = _dict_class(config, set(sd), weights)
    name = str(weights)

    def get(key: str) -> torch.Tensor:
        if key not in sd:
            raise MonoscopeError(
                f"{name}: {cls} needs tensor {key!r} (found: {', '.join(sorted(sd))})"
            )
        t = sd[key]
        if t.is_floating_point() and not bool(torch.isfinite(t.float()).all()):
            raise MonoscopeError(f"{name}: tensor {key!r} contains NaN or infinite values")
        return t.float()

    threshold, subtract, folded = None, True, []
    hparams: dict[str, Any] = {}
    if cls == "AutoEncoder":
        kind, W_enc, b_enc = "sae-relu", get("encoder.weight").T, get("encoder.bias")
        W_dec, b_dec = get("decoder.weight").T, get("bias")
        norms = W_dec.norm(dim=1)
        if not torch.allclose(norms, torch.ones_like(norms)):
            # AutoEncoder.from_pretrained normalises the decoder by default (same x^).
            W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
            folded.append("decoder norms into the encoder (as AutoEncoder.from_pretrained does)")
    elif cls == "AutoEncoderNew":
        kind, W_enc, b_enc = "sae-relu", get("encoder.weight").T, get("encoder.bias")
        W_dec, b_dec, subtract = get("decoder.weight").T, get("decoder.bias"), False
    elif cls in ("AutoEncoderTopK", "BatchTopKSAE"):
        kind = "sae-topk" if cls == "AutoEncoderTopK" else "sae-batchtopk"
        W_enc, b_enc = get("encoder.weight").T, get("encoder.bias")
        W_dec, b_dec = get("decoder.weight").T, get("b_dec")
        hparams = {"k": int(sd["k"])} if "k" in sd else {}
        threshold = get("threshold") if kind == "sae-batchtopk" else None
    elif cls == "MatryoshkaBatchTopKSAE":
        kind, W_enc, b_enc, W_dec, b_dec = (
            "sae-matryoshka",
            get("W_enc"),
            get("b_enc"),
            get("W_dec"),
            get("b_dec"),
        )
        sizes = sd.get("group_sizes")
        hparams = {"k": int(sd["k"])}
        if sizes is not None:
            hparams["prefixes"] = [int(v) for v in sizes.long().cumsum(0).tolist()]
        threshold = get("threshold")
    elif cls == "JumpReluAutoEncoder":
        kind, W_enc, b_enc, W_dec, b_dec = (
            "sae-jumprelu",
            get("W_enc"),
            get("b_enc"),
            get("W_dec"),
            get("b_dec"),
        )
        threshold, subtract = get("threshold"), False
    elif cls == "GatedAutoEncoder":
        raise MonoscopeError(
            "dictionary_learning GatedAutoEncoder cannot be imported: its gate and magnitude paths "
            "are not one affine encoder"
        )
    else:
        raise MonoscopeError(f"dictionary_learning class {cls!r} is not supported")
    dtype = next(t.dtype for t in sd.values() if t.is_floating_point())
    fmap = _common.build(
        ForeignSAE(kind, W_enc, b_enc, W_dec, b_dec, subtract, threshold, hparams), input_scale
    )
    trainer = config.get("trainer") or {}
    files = [weights] + ([folder / CONFIG] if (folder / CONFIG).is_file() else [])
    provenance = {
        "format": "dictionary_learning",
        "source": str(weights.resolve()),
        "files": {f.name: _common.sha256(f) for f in files},
        "reader": "torch.load(weights_only=True)",
        "architecture": cls,
        "source_dtype": str(dtype).removeprefix("torch."),
        "normalisation": "none (a trainSAE norm factor is already in the saved biases)",
        "folded": folded
        + ([] if subtract else ["b_dec @ W_enc into b_enc (the encoder input is not centred)"]),
        "lm_name": trainer.get("lm_name"),
        "layer": trainer.get("layer"),
        "source_config": config,
    }
    return fmap, provenance
