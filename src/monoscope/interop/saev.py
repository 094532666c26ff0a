"""saev checkpoints (``sae.pt``: one JSON header line, then a ``torch.save``d state dict, as
``saev.nn.dump`` writes it), read with ``torch.load(weights_only=True)``.

Header versions: no ``schema`` (saev <= 0.1: a ReLU SAE that centres its input, ``x - b_dec``);
``schema`` 2-5 (activation ``Relu``, ``TopK`` or ``BatchTopK`` in ``cfg.activation``; the input
is not centred, ``b_dec`` only in the decoder); ``schema`` 1 was written both by code that
centred the input and by code that did not, so it is accepted only when ``b_dec`` is zero.

saev's ``TopK`` keeps the k largest pre-activations even when negative; monoscope codes are
non-negative, so such entries are 0 after import (they agree wherever the k-th largest
pre-activation is positive). ``BatchTopK`` at inference is ``where(pre > threshold, pre, 0)``
(a ReLU while the threshold is <= 0): ``sae-batchtopk``. saev's optional dataset scaling
(``scale_mean``/``scale_norm``, saev 0.1) is not stored in the checkpoint; it is not applied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._util import MonoscopeError
from ..featuremaps.base import FeatureMap
from . import _common
from ._common import ForeignSAE, need

FILE = "sae.pt"


def _split(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    line, sep, rest = raw.partition(b"\n")
    try:
        header = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MonoscopeError(f"{path}: not a saev checkpoint (no JSON header line)") from None
    if not sep or not isinstance(header, dict):
        raise MonoscopeError(f"{path}: not a saev checkpoint (no JSON header line)")
    return header, rest


def _activation(header: dict[str, Any]) -> tuple[str, dict[str, Any], int, int, str]:
    """(activation class, its params, d_model, d_sae, header version) of a header."""
    schema = header.get("schema")
    if schema is None:  # saev <= 0.1: the header is the config itself
        d = int(header.get("d_vit", header.get("d_model", 0)))
        n = int(header.get("d_sae") or d * int(header.get("exp_factor", 0)))
        return "Relu", {}, d, n, "legacy"
    cfg = header.get("cfg") or {}
    d = int(cfg.get("d_model", cfg.get("d_vit", 0)))
    n = int(cfg.get("d_sae") or d * int(cfg.get("exp_factor", 0)))
    if header.get("cls") in ("Relu", "TopK", "BatchTopK"):  # schema 1, first layout
        return header["cls"], {"top_k": cfg.get("top_k", 32)}, d, n, str(schema)
    act = cfg.get("activation") or {"cls": "Relu", "params": {}}
    return str(act.get("cls")), dict(act.get("params") or {}), d, n, str(schema)


def read(src: str | Path, input_scale: float | None = None) -> tuple[FeatureMap, dict[str, Any]]:
    src = Path(src)
    path = src / FILE if src.is_dir() else src
    if not path.is_file():
        raise MonoscopeError(f"{path}: file not found")
    header, body = _split(path)
    try:
        cls, params, d, n, version = _activation(header)
    except (TypeError, ValueError):
        raise MonoscopeError(f"{path}: header needs integer d_model (or d_vit) and d_sae") from None
    if not (d > 0 and n > 0):
        raise MonoscopeError(f"{path}: header needs d_model (or d_vit) and d_sae")
    if version not in ("legacy", "1", "2", "3", "4", "5"):
        raise MonoscopeError(f"{path}: saev schema {version} is not supported (legacy, 1-5 are)")
    sd = _common.read_state_dict(body, str(path))
    name = str(path)
    W_enc = need(sd, "W_enc", (d, n), name).float()
    b_enc = need(sd, "b_enc", (n,), name).float()
    W_dec = need(sd, "W_dec", (n, d), name).float()
    b_dec = need(sd, "b_dec", (d,), name).float()
    centred = version == "legacy"
    if version == "1" and bool(b_dec.any()):
        raise MonoscopeError(
            f"{path}: saev schema-1 checkpoints were written both by code that centred the "
            "encoder input on b_dec and by code that did not, and this b_dec is non-zero"
        )
    threshold, hparams = None, {}
    if cls == "Relu":
        kind = "sae-relu"
    elif cls == "TopK":
        kind, hparams = "sae-topk", {"k": int(params.get("top_k", 32))}
    elif cls == "BatchTopK":
        kind, hparams = "sae-batchtopk", {"k": int(params.get("top_k", 32))}
        threshold = need(sd, "activation.threshold", (), name).float()
    else:
        raise MonoscopeError(f"saev activation {cls!r} is not supported (Relu, TopK, BatchTopK)")
    fmap = _common.build(
        ForeignSAE(kind, W_enc, b_enc, W_dec, b_dec, centred, threshold, hparams), input_scale
    )
    notes = []
    if cls == "TopK":
        notes.append("saev TopK keeps negative pre-activations among the top k; here they are 0")
    if version == "legacy" and (header.get("scale_mean") or header.get("scale_norm")):
        notes.append("saev dataset scaling is not in the checkpoint and is not applied")
    provenance = {
        "format": "saev",
        "source": str(path.resolve()),
        "files": {path.name: _common.sha256(path)},
        "reader": "torch.load(weights_only=True) after the JSON header line",
        "architecture": cls,
        "schema": version,
        "library_version": header.get("lib"),
        "commit": header.get("commit"),
        "source_dtype": str(sd["W_enc"].dtype).removeprefix("torch."),
        "normalisation": "none; b_dec subtracted from the input" if centred else "none",
        "folded": []
        if centred
        else ["b_dec @ W_enc into b_enc (the encoder input is not centred)"],
        "notes": notes,
        "source_config": header,
    }
    return fmap, provenance
