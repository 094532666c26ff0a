"""What centring changes: an analysis without ``--center`` against one with it, feature by feature.

Features correspond by index when both analyses went through the same feature map (``analyze
--center`` on the map of the plain analysis, or raw dimensions on both sides). Separately
trained maps (``train --center``) are matched by their feature directions: two alive features
correspond when each is the other's nearest direction (mutual best |cosine|, so the matching
is one-to-one) and the cosine is at least ``min_cosine``; the rest are counted as unmatched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODAL = ("ImgD", "TextD")
MAX_LISTED = 200  # features listed by id in ``changed``


def _inner_kind(summary: dict[str, Any]) -> str | None:
    center = summary.get("center")
    return center.get("inner_kind") if center else summary.get("featuremap_kind")


def _directions(summary: dict[str, Any]) -> np.ndarray | None:
    """(K, d) unit feature directions of the analysis's feature map (None if unavailable)."""
    from ..featuremaps import load_featuremap

    path = summary.get("featuremap")
    if not path or not Path(path).is_dir():
        return None
    try:
        fmap = load_featuremap(path)
    except Exception:  # a missing or foreign map: fall back to shares only
        return None
    dirs = fmap.decoder_directions()
    if dirs is None:
        dirs = fmap.encoder_directions()
    if dirs is None:
        return None
    d = dirs.detach().double().cpu().numpy()
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def correspondence(
    plain: dict[str, Any],
    centred: dict[str, Any],
    alive: tuple[np.ndarray, np.ndarray] | None = None,
    min_cosine: float = 0.7,
) -> tuple[str, np.ndarray, np.ndarray, np.ndarray] | None:
    """(how, plain ids, centred ids, cosines) of corresponding features, or None. Directions
    are matched among the ``alive`` features of each side only (dead latents keep their
    initial directions, which two maps trained with one seed share)."""
    same_map = plain.get("featuremap") and plain.get("featuremap") == centred.get("featuremap")
    raw = _inner_kind(plain) == _inner_kind(centred) == "identity"
    k = plain.get("n_features")
    if (same_map or raw) and k == centred.get("n_features") and isinstance(k, int):
        ids = np.arange(k)
        return ("same features", ids, ids, np.ones(k))
    a, b = _directions(plain), _directions(centred)
    if a is None or b is None or a.shape[1] != b.shape[1]:
        return None
    cos = np.abs(a @ b.T)
    if alive is not None:
        cos = cos * alive[0][:, None] * alive[1][None, :]
    best_b, best_a = cos.argmax(1), cos.argmax(0)
    ids = np.flatnonzero(best_a[best_b] == np.arange(len(a)))
    ids = ids[cos[ids, best_b[ids]] >= min_cosine]
    return (
        f"mutual nearest directions, |cos| >= {min_cosine}",
        ids,
        best_b[ids],
        cos[ids, best_b[ids]],
    )


def centring_effect(
    plain: tuple[str, dict[str, Any], dict[str, np.ndarray]],
    centred: tuple[str, dict[str, Any], dict[str, np.ndarray]],
) -> dict[str, Any]:
    """Group shares of both, how many ImgD/TextD features survive centring, the group
    transitions and which features change group. Tolerates any group labels."""
    (name_a, sa, ta), (name_b, sb, tb) = plain, centred
    shares = {}
    for label, t in ((name_a, ta), (name_b, tb)):
        groups = t["group"][t["alive"] == 1]
        names, counts = np.unique(groups, return_counts=True)
        n = max(len(groups), 1)
        shares[label] = {str(g): float(c / n) for g, c in zip(names, counts, strict=True)}
    out: dict[str, Any] = {
        "plain": name_a,
        "centred": name_b,
        "center": sb.get("center"),
        "group_shares": shares,
        "matching": None,
    }
    match = correspondence(sa, sb, (ta["alive"] == 1, tb["alive"] == 1))
    if match is None:
        out["note"] = "features cannot be matched (no shared map or feature directions)"
        return out
    how, ia, ib, cos = match
    ga, gb = ta["group"][ia].astype(str), tb["group"][ib].astype(str)
    keep = (ga != "dead") | (gb != "dead")
    ia, ib, cos, ga, gb = ia[keep], ib[keep], cos[keep], ga[keep], gb[keep]
    out["matching"] = {"how": how, "matched": int(len(ia))}
    transitions: dict[str, dict[str, int]] = {}
    for g_from, g_to in zip(ga.tolist(), gb.tolist(), strict=True):
        row = transitions.setdefault(g_from, {})
        row[g_to] = row.get(g_to, 0) + 1
    out["transitions"] = transitions
    out["survive"] = {
        g: {
            "before": int((ta["group"] == g).sum()),
            "matched": int((ga == g).sum()),
            "kept": int(((ga == g) & (gb == g)).sum()),
        }
        for g in MODAL
    }
    changed = np.flatnonzero(ga != gb)
    out["n_changed"] = int(len(changed))
    out["changed"] = [
        {
            "plain": int(ia[j]),
            "centred": int(ib[j]),
            "from": ga[j],
            "to": gb[j],
            "cosine": round(float(cos[j]), 4),
        }
        for j in changed[:MAX_LISTED]
    ]
    return out


def centring_effects(
    labels: Sequence[str],
    summaries: Sequence[dict[str, Any]],
    tables: Sequence[dict[str, np.ndarray]],
) -> list[dict[str, Any]]:
    """:func:`centring_effect` for every (plain, centred) pair of analyses whose feature maps
    are of the same kind."""
    items = list(zip(labels, summaries, tables, strict=True))
    plain = [it for it in items if not it[1].get("center")]
    centred = [it for it in items if it[1].get("center")]
    return [
        centring_effect(a, b)
        for a in plain
        for b in centred
        if _inner_kind(a[1]) == _inner_kind(b[1])
    ]


def describe_effect(effect: dict[str, Any]) -> list[str]:
    """Console lines for one plain/centred comparison."""
    lines = [f"centring: {effect['plain']} -> {effect['centred']}"]
    for name, shares in effect["group_shares"].items():
        lines.append(f"  {name}: " + ", ".join(f"{g} {v:.1%}" for g, v in sorted(shares.items())))
    if not effect.get("matching"):
        lines.append(f"  {effect.get('note', 'features not matched')}")
        return lines
    for g, s in effect["survive"].items():
        lines.append(
            f"  {g}: {s['kept']} of {s['matched']} matched ({s['before']} before) keep their group"
        )
    lines.append(
        f"  {effect['n_changed']} of {effect['matching']['matched']} matched features change "
        f"group ({effect['matching']['how']})"
    )
    return lines
