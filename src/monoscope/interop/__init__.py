"""Bring your own SAE: read checkpoints of SAELens, EleutherAI sparsify, saev and
dictionary_learning as monoscope feature maps, and write monoscope SAEs in SAELens's layout.

One module per format; each ``read(src)`` returns ``(feature map, provenance)`` and never
unpickles (safetensors, or ``torch.load(weights_only=True)`` where the library writes a torch
state dict). docs/interop.md lists the architectures and what is checked.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .._util import MonoscopeError

IMPORT_FORMATS = ("saelens", "sparsify", "saev", "dictionary_learning")
EXPORT_FORMATS = ("saelens",)


def _module(fmt: str, formats: tuple[str, ...]):  # noqa: ANN202
    if fmt not in formats:
        raise MonoscopeError(f"unknown SAE format {fmt!r}; known: {', '.join(formats)}")
    return importlib.import_module(f".{fmt}", __name__)


def import_sae(
    fmt: str,
    src: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    input_scale: float | None = None,
) -> Path:
    """Read the ``fmt`` checkpoint at ``src`` and save it as a feature map in ``out``.

    ``input_scale``: the SAE was trained on embeddings multiplied by this dataset factor, which
    its checkpoint does not hold (e.g. SAELens ``expected_average_only_in`` left unfolded).
    """
    from ._common import write

    src = Path(src)
    if not src.exists():
        raise MonoscopeError(f"{src}: not found")
    fmap, provenance = _module(fmt, IMPORT_FORMATS).read(src, input_scale=input_scale)
    if input_scale is not None:
        provenance["input_scale"] = float(input_scale)
    return write(fmap, out, provenance, overwrite=overwrite)


def export_sae(fmt: str, featuremap: str | Path, out: str | Path) -> Path:
    """Write the feature map at ``featuremap`` as a ``fmt`` checkpoint in ``out``."""
    return _module(fmt, EXPORT_FORMATS).export(featuremap, out)


__all__ = ["EXPORT_FORMATS", "IMPORT_FORMATS", "export_sae", "import_sae"]
