"""The report's blind rating mode and the agreement panel (``monoscope agree``'s agree.json).

The sample: among the explorer's features, those with enough support (at least
``min_support`` firings over both modalities together, and something to show) are grouped by
their label (any label but ``dead``), and up to ``per_group`` are drawn at random from each
group (a stratified sample, seeded), then shuffled so that the groups do not come in blocks.
The page shows them one at a time with only their top images and top captions; the rater's
marks stay in the browser's localStorage under the sample's key and export as a JSON file that
``monoscope agree`` reads.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.agreement import LABELS
from .inputs import read_optional_json

PER_GROUP = 15
MIN_SUPPORT = 20


def rating_sample(
    features: Sequence[Any],
    explorer: Mapping[str, Any],
    summary: Mapping[str, Any],
    *,
    per_group: int = PER_GROUP,
    min_support: int = MIN_SUPPORT,
    seed: int = 0,
) -> dict[str, Any]:
    """The sample as JSON for the page: explorer positions, feature ids and the file header."""
    n_pairs = summary.get("n_pairs") if isinstance(summary.get("n_pairs"), int) else 0
    strata: dict[str, list[int]] = {}
    for pos, f in enumerate(features):
        firings = (f.freq_img + f.freq_txt) * n_pairs
        shown = bool(explorer["img"][pos] or explorer["txt"][pos])
        if f.group != "dead" and shown and math.isfinite(firings) and firings >= min_support:
            strata.setdefault(f.group, []).append(pos)
    rng = np.random.default_rng(seed)
    picked = [
        int(p)
        for g in sorted(strata)
        for p in rng.permutation(strata[g])[: min(per_group, len(strata[g]))]
    ]
    order = [picked[i] for i in rng.permutation(len(picked))]
    ids = [int(features[p].id) for p in order]
    fmap_input = (summary.get("inputs") or {}).get("featuremap") or {}
    analysis = {  # names, not paths: the page must not carry the machine's paths
        "featuremap": Path(str(summary.get("featuremap") or "")).name or None,
        "fingerprint": fmap_input.get("fingerprint"),
        "store": Path(str(summary.get("store") or "")).name or None,
        "n_features": summary.get("n_features"),
    }
    key = hashlib.sha256(json.dumps([analysis, ids, seed]).encode()).hexdigest()[:16]
    return {
        "key": key,
        "items": order,
        "ids": ids,
        "labels": list(LABELS),
        "strata": {g: min(per_group, len(v)) for g, v in sorted(strata.items())},
        "eligible": sum(len(v) for v in strata.values()),
        "per_group": per_group,
        "min_support": min_support,
        "seed": seed,
        "analysis": analysis,
    }


def find_agree(
    analysis_dir: Path, agree: str | Path | None, discover: bool, notices: list[str]
) -> dict[str, Any] | None:
    """agree.json given (file or directory) or, with ``discover``, ``<run>/agree/agree.json``."""
    if agree is not None:
        path = Path(agree)
        path = path / "agree.json" if path.is_dir() else path
        if not path.is_file():
            notices.append(f"{path}: not found; the agreement panel is left out.")
            return None
    elif discover:
        path = analysis_dir.parent / "agree" / "agree.json"
    else:
        return None
    data = read_optional_json(path, notices)
    if data is None or not isinstance(data.get("verdict"), Mapping):
        return None
    if data.get("analysis") and Path(str(data["analysis"])) != analysis_dir.resolve():
        notices.append(f"{path}: made for another analysis ({data['analysis']}); left out.")
        return None
    return {**data, "path": str(path)}


def rating_context(
    analysis_dir: Path,
    features: Sequence[Any],
    explorer: Mapping[str, Any],
    summary: Mapping[str, Any],
    agree: str | Path | None,
    discover: bool,
    notices: list[str],
) -> dict[str, Any]:
    """Template variables of the rating section: ``rating`` (the sample) and ``agree``."""
    return {
        "rating": rating_sample(features, explorer, summary),
        "agree": find_agree(analysis_dir, agree, discover, notices),
    }
