"""Vocabulary names for the explorer (``<analysis>/vocabulary/names.json``, from ``--vocab``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._util import MonoscopeError, read_json


def vocabulary_view(analysis_dir: Path, ids: Sequence[int], notices: list[str]) -> dict[str, Any]:
    """``{"vocab": [[[term, cosine], ...] or None per feature], "vocab_source": ...}`` for the
    explorer's features ``ids``; empty when the analysis has no vocabulary names."""
    path = Path(analysis_dir) / "vocabulary" / "names.json"
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except MonoscopeError as e:
        notices.append(f"Vocabulary names not shown: {e}")
        return {}
    feats = data.get("features") if isinstance(data, Mapping) else None
    if not isinstance(feats, Mapping):
        notices.append(f"Vocabulary names not shown: {path} has no 'features'.")
        return {}

    def terms(k: int) -> list[list[Any]] | None:
        rows = feats.get(str(k))
        ok = isinstance(rows, list) and all(
            isinstance(r, list) and len(r) == 2 and isinstance(r[0], str) for r in rows
        )
        return [[r[0], r[1]] for r in rows] if ok and rows else None

    source = data.get("source")
    return {
        "vocab": [terms(k) for k in ids],
        "vocab_source": "the captions' words and phrases" if source == "captions" else str(source),
    }
