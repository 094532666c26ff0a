"""EleutherAI sparsify checkpoints (``cfg.json`` + ``sae.safetensors`` per hookpoint, as
``SparseCoder.save_to_disk`` writes them).

sparsify encodes ``topk(relu((x - b_dec) @ encoder.weight.T + encoder.bias))`` and decodes
``z @ W_dec + b_dec``: a monoscope ``sae-topk`` (ReLU then TopK keeps the same values as TopK
then ReLU). Refused: ``groupmax`` activations, transcoders and skip connections (they do not
reconstruct their input).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._util import MonoscopeError, read_json
from ..featuremaps.base import FeatureMap
from . import _common
from ._common import ForeignSAE, need

CFG, WEIGHTS = "cfg.json", "sae.safetensors"


def _locate(src: Path) -> Path:
    """``src`` itself, or its only hookpoint sub-directory."""
    if (src / CFG).is_file():
        return src
    subs = sorted(p for p in src.iterdir() if (p / CFG).is_file()) if src.is_dir() else []
    if len(subs) == 1:
        return subs[0]
    if not subs:
        raise MonoscopeError(f"{src}: no sparsify checkpoint ({CFG} + {WEIGHTS}) here")
    names = ", ".join(p.name for p in subs)
    raise MonoscopeError(
        f"{src}: holds several hookpoints ({names}); pass one of their directories"
    )


def read(src: str | Path, input_scale: float | None = None) -> tuple[FeatureMap, dict[str, Any]]:
    src = _locate(Path(src))
    cfg = read_json(src / CFG)
    if not isinstance(cfg, dict):
        raise MonoscopeError(f"{src / CFG}: expected a JSON object")
    if cfg.get("transcode"):
        raise MonoscopeError(
            "sparsify transcoders cannot be imported: they reconstruct another activation than their input"
        )
    if cfg.get("skip_connection"):
        raise MonoscopeError(
            "sparsify skip connections cannot be imported: x^ has a dense W_skip term"
        )
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise MonoscopeError(f"sparsify activation {activation!r} cannot be imported (topk can)")
    try:
        d, k = int(cfg["d_in"]), int(cfg["k"])
        n = int(cfg.get("num_latents") or 0) or d * int(cfg.get("expansion_factor", 32))
    except (KeyError, TypeError, ValueError):
        raise MonoscopeError(f"{src / CFG}: needs integer d_in and k") from None
    tensors = _common.read_safetensors(src / WEIGHTS)
    name = str(src / WEIGHTS)
    sae = ForeignSAE(
        "sae-topk",
        W_enc=need(tensors, "encoder.weight", (n, d), name).float().T,
        b_enc=need(tensors, "encoder.bias", (n,), name).float(),
        W_dec=need(tensors, "W_dec", (n, d), name).float(),
        b_dec=need(tensors, "b_dec", (d,), name).float(),
        hparams={"k": k},
    )
    dtype = str(tensors["encoder.weight"].dtype).removeprefix("torch.")
    provenance = {
        "format": "sparsify",
        "source": str(src.resolve()),
        "hookpoint": src.name,
        "files": {f: _common.sha256(src / f) for f in (CFG, WEIGHTS)},
        "reader": "safetensors",
        "architecture": "topk",
        "source_dtype": dtype,
        "normalisation": "none; b_dec subtracted from the input",
        "folded": [],
        "source_config": cfg,
    }
    return _common.build(sae, input_scale), provenance
