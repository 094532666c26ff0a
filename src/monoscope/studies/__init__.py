"""Case studies (METHOD.md §6): gender bias, adversarial attack and defence, steering.

Each study is one function writing a JSON file and PNG figures into an output directory, and
one ``monoscope study ...`` command (:mod:`monoscope.studies.cli`). The functions are imported
lazily, so the CLI can register its parsers without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "adversarial_study": "adversarial",
    "gender_study": "gender",
    "steer_study": "steering",
    "train_decoder": "decoder",
    "load_decoder": "decoder",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
