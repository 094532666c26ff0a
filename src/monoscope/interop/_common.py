"""What every SAE format shares: safe weight readers, building a monoscope SAE from a foreign
encoder/decoder, and writing it as a feature-map directory with its provenance.

A foreign SAE is described by :class:`ForeignSAE` in the source's own terms::

    pre = (x - b_dec if subtract_b_dec else x) @ W_enc + b_enc
    z   = act(pre)
    x^  = z @ W_dec + b_dec

and mapped onto monoscope's ``x~ = (x - b_pre) * scale``, ``pre = x~ @ W_enc + b_enc``,
``x^ = z @ W_dec / scale + b_pre`` (featuremaps/sae.py) with ``b_pre = b_dec`` and ``scale = 1``
(or a dataset factor given as ``input_scale``).
A source that does not subtract ``b_dec`` before encoding has it folded into the encoder bias
(``b_enc + b_dec @ W_enc``, computed in float64), so its codes stay the same function of x.
Decoder rows are kept as they are (not renormalised): renormalising would rescale the codes and,
for TopK, change which latents win.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._util import MonoscopeError
from ..featuremaps.base import KINDS, FeatureMap, load_featuremap
from ..featuremaps.sae import SparseAutoencoder
from ..outputs import kind_of, prepare_out, remove_own_files

# What a feature-map directory holds (featuremaps/train.py writes these); --overwrite removes them.


@dataclass
class ForeignSAE:
    """A foreign SAE in its own parameterisation (float tensors, any dtype) and how to map it."""

    kind: str  # the monoscope kind: sae-relu, sae-topk, sae-batchtopk, sae-jumprelu, ...
    W_enc: torch.Tensor  # (d, K)
    b_enc: torch.Tensor  # (K,)
    W_dec: torch.Tensor  # (K, d)
    b_dec: torch.Tensor  # (d,)
    subtract_b_dec: bool = True
    threshold: torch.Tensor | None = None  # (K,) jumprelu, () batchtopk/matryoshka
    hparams: dict[str, Any] = field(default_factory=dict)  # k, prefixes, ...


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (never pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise MonoscopeError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise MonoscopeError(f"{path}: not a readable safetensors file ({e})") from None


def read_state_dict(data: bytes | Path, name: str) -> dict[str, torch.Tensor]:
    """A torch state dict written with ``torch.save``, read with ``weights_only=True`` (tensors
    and plain containers only: no code is unpickled)."""
    if isinstance(data, Path):
        if not data.is_file():
            raise MonoscopeError(f"{data}: file not found")
        data = data.read_bytes()
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MonoscopeError(
            f"{name}: not a torch state dict loadable with weights_only=True ({msg})"
        ) from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MonoscopeError(
            f"{name}: expected a state dict of tensors, found {type(obj).__name__}"
        )
    return obj


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def need(
    tensors: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], src: str
) -> torch.Tensor:
    """``tensors[key]`` checked for presence, shape and finiteness."""
    if key not in tensors:
        raise MonoscopeError(
            f"{src}: tensor {key!r} is missing (found: {', '.join(sorted(tensors))})"
        )
    t = tensors[key]
    if tuple(t.shape) != shape:
        raise MonoscopeError(f"{src}: tensor {key!r} has shape {tuple(t.shape)}, expected {shape}")
    bad = torch.isnan(t) if key == "threshold" else ~torch.isfinite(t)  # inf: never fires
    if t.is_floating_point() and bool(bad.any()):
        raise MonoscopeError(f"{src}: tensor {key!r} contains NaN or infinite values")
    return t


def build(sae: ForeignSAE, input_scale: float | None = None) -> SparseAutoencoder:
    """The monoscope SAE computing the same codes and reconstructions as ``sae``.

    ``input_scale`` S: the source was trained on embeddings multiplied by S, a dataset factor
    its checkpoint does not hold; then ``scale = S`` and ``b_pre = b_dec / S``, so that
    ``x~ = S x - b_dec`` and ``x^ = (z @ W_dec + b_dec) / S``.
    """
    if input_scale is not None and not (math.isfinite(input_scale) and input_scale > 0):
        raise MonoscopeError(f"--input-scale must be a positive number, not {input_scale}")
    s = 1.0 if input_scale is None else float(input_scale)
    d, k = sae.W_enc.shape
    if tuple(sae.W_dec.shape) != (k, d) or sae.b_enc.shape != (k,) or sae.b_dec.shape != (d,):
        raise MonoscopeError(
            f"inconsistent SAE shapes: W_enc {tuple(sae.W_enc.shape)}, b_enc "
            f"{tuple(sae.b_enc.shape)}, W_dec {tuple(sae.W_dec.shape)}, b_dec {tuple(sae.b_dec.shape)}"
        )
    try:
        fmap = KINDS[sae.kind](**{"dim": d, "latents": k, **sae.hparams})
    except (TypeError, ValueError) as e:
        raise MonoscopeError(f"cannot build a {sae.kind} map from this checkpoint: {e}") from None
    b_enc = sae.b_enc
    if not sae.subtract_b_dec and bool(sae.b_dec.any()):
        b_enc = (sae.b_enc.double() + sae.b_dec.double() @ sae.W_enc.double()).float()
    state = {
        "W_enc": sae.W_enc,
        "b_enc": b_enc,
        "W_dec": sae.W_dec,
        "b_pre": (sae.b_dec.double() / s).float(),
        "scale": torch.tensor(s),
    }
    if sae.kind == "sae-jumprelu":
        assert sae.threshold is not None
        # z = relu(pre) * (pre > theta) == where(pre > max(theta, 0), pre, 0): a threshold
        # <= 0 is a ReLU, i.e. log_threshold = -inf.
        state["log_threshold"] = sae.threshold.double().clamp_min(0).log().float()
    elif sae.kind in ("sae-batchtopk", "sae-matryoshka"):
        assert sae.threshold is not None
        state["threshold"] = sae.threshold.reshape(()).float()
    state = {name: t.detach().to(torch.float32).contiguous() for name, t in state.items()}
    fmap.load_state_dict(state)
    assert isinstance(fmap, SparseAutoencoder)
    return fmap.eval()


def write(
    fmap: FeatureMap, out: str | Path, provenance: dict[str, Any], overwrite: bool = False
) -> Path:
    """Save ``fmap`` as a feature-map directory (the same save path trained maps use) with
    ``provenance`` under ``imported`` in config.json, then reload it as a check."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MonoscopeError(f"{out}: exists and is not a directory")
    if kind_of(out) == "featuremap":
        if not overwrite:
            raise MonoscopeError(f"{out}: a feature map is already there; pass --overwrite")
        remove_own_files(out, "featuremap")  # no metrics or log of the map replaced survives
    else:
        prepare_out(out, "featuremap", overwrite)
    fmap.save(out, extra={"imported": provenance})
    back = load_featuremap(out)
    probe = torch.randn(4, fmap.dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.equal(back.encode(probe), fmap.encode(probe)):
            raise MonoscopeError(f"{out}: the saved feature map does not reload identically")
    return out
