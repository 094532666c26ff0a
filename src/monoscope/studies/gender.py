"""The gender case study (METHOD.md §6.1).

On images labelled with the two genders (``classes``, default woman/man):

1. zero-shot gender classification with configurable prompt templates: accuracy per gender
   and the gap, with bootstrap CIs;
2. gender features: per counterfactual unit (pairs that share every ``pair_keys`` label, e.g.
   the same emoji role and skin tone) the mean activation of the woman variants minus that of
   the man variants, tested per feature with a paired sign-flip permutation test and
   Benjamini-Hochberg FDR control plus an effect-size floor (|d_z| = |mean / sd| of the paired
   differences), for images and captions separately; their distribution over ImgD / TextD /
   CrossD;
3. removal of ImgD / TextD / CrossD / the gender features (and the female-only and male-only
   ones), each against random same-size controls: per-gender accuracy and drop after each;
4. bias on gender-neutral images (label ``neutral``) of the roles that have gendered
   variants: the woman-vs-man score cos(image, woman) - cos(image, man) per role (``role_key``),
   before and after each removal, and a table of the most skewed roles.

Writes ``gender.json`` and ``gender_accuracy.png``, ``gender_features.png``, ``gender_bias.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import torch

from .._util import MonoscopeError, versions, write_json
from ..analysis.ablation import paired_drop, remove_features, zero_shot_hits
from ..analysis.monosemanticity import mean_ci, unit_rows
from ..analysis.uncertainty import SignFlipTest, benjamini_hochberg
from ..artefacts import STUDY_VERSION
from ..config import GENDER_TEMPLATES, GenderConfig
from ..encoders import DualEncoder
from ..featuremaps import FeatureMap
from ..labels import key_with_values, present_labels
from ..report.plots import GROUP_COLORS, MPL_STYLE
from ..store import Store
from ._common import (
    GROUPS,
    diff_ci,
    label_array,
    open_inputs,
    random_masks,
    require_labels,
    save_png,
)


def counterfactual_means(
    acts: torch.Tensor, side: np.ndarray, key: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Mean activations of side 0 and side 1 per counterfactual unit.

    ``side`` (n,) is 0 or 1 per row and ``key`` (n,) its unit; only units with both sides are
    kept. Returns ``(means_0, means_1, keys)`` with (P, K) means.
    """
    keys, inv = np.unique(np.asarray(key), return_inverse=True)
    slot = inv * 2 + np.asarray(side, np.int64)
    acts = acts.float().cpu()
    sums = torch.zeros(2 * len(keys), acts.shape[1]).index_add_(0, torch.from_numpy(slot), acts)
    counts = np.bincount(slot, minlength=2 * len(keys)).reshape(-1, 2)
    both = (counts > 0).all(1)
    means = sums.reshape(len(keys), 2, -1) / torch.from_numpy(counts.clip(min=1)).float()[..., None]
    rows = torch.from_numpy(both)
    return means[rows, 0], means[rows, 1], keys[both]


def paired_feature_test(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    fdr: float = 0.05,
    min_effect: float = 0.2,
    permutations: int = 2000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-feature paired test of mean(a - b) = 0 over (P, K) paired rows.

    Returns ``mean_diff``, ``effect`` (d_z; +-inf for a constant difference), ``p`` (sign-flip permutation; NaN where a and b
    never differ), ``q`` (BH) and ``significant`` (q <= fdr and |d_z| >= min_effect).
    """
    if a.shape != b.shape or a.shape[0] < 2:
        raise MonoscopeError(f"the paired test needs at least 2 pairs, got {a.shape[0]}")
    diff = (a - b).double()
    mean = diff.mean(0).numpy()
    sd = diff.std(0, correction=1).numpy()
    # a constant nonzero difference is an infinitely large effect
    effect = np.divide(mean, sd, out=np.copysign(np.inf, mean), where=sd > 0)
    effect[mean == 0] = 0.0
    test = SignFlipTest(a.shape[1], permutations, seed)
    test.update(a, b)
    p = test.p_values()
    p[~(diff != 0).any(0).numpy()] = np.nan
    q = benjamini_hochberg(p)
    significant = np.nan_to_num(q, nan=1.0) <= fdr
    significant &= np.abs(effect) >= min_effect
    return {"mean_diff": mean, "effect": effect, "p": p, "q": q, "significant": significant}


def group_distribution(members: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """Counts, shares and enrichment (share / the group's share of alive features) per group,
    and for features with no confident verdict (undetermined, rare)."""
    alive = groups != "dead"
    total = int(members.sum())
    out: dict[str, Any] = {"total": total}
    for g in (*GROUPS, "undetermined", "rare"):
        count = int((members & (groups == g)).sum())
        share = count / total if total else None
        base = float((groups == g).sum() / max(alive.sum(), 1))
        out[g] = {
            "count": count,
            "share": share,
            "enrichment": share / base if share is not None and base > 0 else None,
        }
    return out


def gender_study(
    store: str | Path | Store,
    featuremap: str | Path | FeatureMap,
    analysis: str | Path | None,
    out: str | Path,
    *,
    model: str | DualEncoder | None = None,
    templates: Sequence[str] = GENDER_TEMPLATES,
    label_key: str | None = None,
    classes: tuple[str, str] = ("woman", "man"),
    neutral: str = "neutral",
    pair_keys: Sequence[str] | None = None,
    role_key: str | None = None,
    fdr: float = 0.05,
    min_effect: float = 0.2,
    permutations: int = 2000,
    control_seeds: int = 5,
    top_roles: int = 12,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Run the gender study; returns the path of ``out/gender.json`` (see module docstring).

    ``classes`` are the two label values of ``label_key`` (default: the one label that takes
    both) and also the words put into the ``templates``; ``pair_keys`` are the labels that make
    two pairs counterfactuals of each other (default: a ``pair`` label; the bundled emoji:
    ``base`` and ``skin_tone``, see :data:`monoscope.data.emoji.GENDER`); ``role_key`` groups
    the ``neutral`` images into roles for the bias table (default: a ``role`` label; the table
    is skipped when absent).
    """
    given = dict(locals())  # the call, recorded in the output
    out = Path(out)
    if len(classes) != 2 or classes[0] == classes[1]:
        raise MonoscopeError(f"--classes needs two different label values, got {list(classes)}")
    if not templates or any("{}" not in t for t in templates):
        raise MonoscopeError("every prompt template needs a '{}' placeholder")
    inp = open_inputs(
        store, featuremap, analysis, out, model=model, device=device, seed=seed, progress=progress
    )
    pairs = inp.store.pairs()
    label_key = label_key or key_with_values(pairs, classes)
    if pair_keys is None:
        if "pair" not in present_labels(pairs):
            raise MonoscopeError(
                "the gender study needs labels that tie each counterfactual pair together: a "
                "'pair' label or --pair-keys; labels present: "
                f"{present_labels(pairs) or 'none'}"
            )
        pair_keys = ("pair",)
    role_key = role_key or "role"
    require_labels(pairs, [label_key, *pair_keys])
    labels = label_array(pairs, label_key)
    rows = np.flatnonzero(np.isin(labels, classes))
    side = (labels[rows] == classes[1]).astype(np.int64)  # 0: classes[0], 1: classes[1]
    if side.min(initial=1) != 0 or side.max(initial=0) != 1:
        raise MonoscopeError(
            f"label '{label_key}' needs images of both {classes[0]!r} and {classes[1]!r}"
        )
    fmap, groups = inp.fmap, inp.groups
    x_img, x_txt = inp.rows("image", rows), inp.rows("text", rows)
    class_emb = inp.classes(classes, templates)

    # Gender features from counterfactual pairs, per modality.
    key = np.full(len(rows), "", dtype=object)
    for k in pair_keys:
        key = key + "\x1f" + label_array(pairs, k)[rows].astype(object)
    tests, n_units = {}, {}
    with torch.inference_mode():
        for modality, x in (("image", x_img), ("text", x_txt)):
            a, b, units = counterfactual_means(fmap.encode(x, modality), side, key)
            n_units[modality] = len(units)
            tests[modality] = paired_feature_test(
                a, b, fdr=fdr, min_effect=min_effect, permutations=permutations, seed=seed
            )
    direction = {
        modality: {
            classes[0]: t["significant"] & (t["mean_diff"] > 0),
            classes[1]: t["significant"] & (t["mean_diff"] < 0),
        }
        for modality, t in tests.items()
    }
    either = {c: direction["image"][c] | direction["text"][c] for c in classes}
    gender_mask = either[classes[0]] | either[classes[1]]
    features: dict[str, Any] = {
        "n_pairs": n_units,
        "per_modality": {
            modality: {c: group_distribution(m, groups) for c, m in d.items()}
            for modality, d in direction.items()
        },
        "either_modality": {c: group_distribution(m, groups) for c, m in either.items()},
        "top": {modality: _top_features(t, groups, classes) for modality, t in tests.items()},
    }

    # Bias on gender-neutral images of roles that have gendered variants.
    has_roles = any(role_key in p.get("labels", {}) for p in pairs)
    roles = label_array(pairs, role_key) if has_roles else None
    neutral_rows = np.zeros(0, np.int64)
    if roles is not None:
        gendered_roles = np.intersect1d(roles[rows][side == 0], roles[rows][side == 1])
        neutral_rows = np.flatnonzero((labels == neutral) & np.isin(roles, gendered_roles))
        neutral_rows = neutral_rows[roles[neutral_rows] != ""]
    x_neu = inp.rows("image", neutral_rows)
    role_names, role_of = np.unique(
        roles[neutral_rows] if roles is not None else np.zeros(0, str), return_inverse=True
    )

    def evaluate(removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cls = unit_rows(remove_features(fmap, class_emb, "text", removed).float().cpu())
        img = remove_features(fmap, x_img, "image", removed).float().cpu()
        neu = unit_rows(remove_features(fmap, x_neu, "image", removed).float().cpu())
        sims = neu @ cls.T
        return zero_shot_hits(img, cls, side), (sims[:, 0] - sims[:, 1]).numpy()

    masks = {
        "none": np.zeros(len(groups), bool),
        **{g: groups == g for g in GROUPS},
        "gender": gender_mask,
        f"{classes[0]} features": either[classes[0]],
        f"{classes[1]} features": either[classes[1]],
    }
    rng = np.random.default_rng(seed)
    alive = groups != "dead"
    base_hits, base_bias = evaluate(masks["none"])
    removals: dict[str, Any] = {}
    role_scores: dict[str, np.ndarray] = {}
    for name, mask in masks.items():
        hits, bias = (base_hits, base_bias) if name == "none" else evaluate(mask)
        entry = _accuracy_entry(hits, base_hits, side, classes, seed)
        entry["n_features"] = int(mask.sum())
        if name != "none" and mask.any():
            controls = [
                evaluate(m) for m in random_masks(alive, int(mask.sum()), control_seeds, rng)
            ]
            ctrl_hits = np.mean([c[0] for c in controls], axis=0)
            entry["control"] = _accuracy_entry(ctrl_hits, base_hits, side, classes, seed)
        if len(neutral_rows):
            role_scores[name] = _per_role(bias, role_of, len(role_names))
            entry["bias"] = {
                "mean_score": mean_ci(bias, seed=seed),
                "mean_abs_role_score": float(np.abs(role_scores[name]).mean()),
                f"share_roles_toward_{classes[0]}": float((role_scores[name] > 0).mean()),
            }
        removals[name] = entry

    result: dict[str, Any] = {
        "format_version": STUDY_VERSION,
        "classes": list(classes),
        "n_images": {c: int((side == i).sum()) for i, c in enumerate(classes)},
        "baseline": removals["none"],
        "features": features,
        "removals": {k: v for k, v in removals.items() if k != "none"},
        "bias": _bias_table(role_names, role_scores, role_of, top_roles, classes),
        "paper_finding": _verdict(features, removals, classes),
    }
    figures = [
        _plot_accuracy(out / "gender_accuracy.png", removals, classes),
        _plot_features(out / "gender_features.png", features, classes),
    ]
    if len(neutral_rows):
        figures.append(_plot_bias(out / "gender_bias.png", result["bias"], classes))
    result["figures"] = [f.name for f in figures]
    result["settings"] = {
        "options": GenderConfig.record(given, "store", "featuremap", "analysis", "out", "model"),
        "store": str(inp.store.path.resolve()),
        "analysis": str(inp.analysis.resolve()),
        "space": "embedding" if fmap.has_decoder else "feature",
        "templates": list(templates),
        "label_key": label_key,
        "neutral": neutral,
        "pair_keys": list(pair_keys),
        "role_key": role_key,
        "fdr": fdr,
        "min_effect": min_effect,
        "permutations": permutations,
        "control_seeds": control_seeds,
        "seed": seed,
        "score": f"cos(image, '{classes[0]}') - cos(image, '{classes[1]}'); > 0 leans {classes[0]}",
        "versions": versions(),
    }
    return write_json(out / "gender.json", result)


def _accuracy_entry(
    hits: np.ndarray, base: np.ndarray, side: np.ndarray, classes: Sequence[str], seed: int
) -> dict[str, Any]:
    """Per-class accuracy (CI), the gap between the classes, and per-class drops vs ``base``."""
    hits, base = hits.astype(np.float64), base.astype(np.float64)
    per = [hits[side == i] for i in (0, 1)]
    drops = [paired_drop(base[side == i], per[i], seed=seed) for i in (0, 1)]
    return {
        "accuracy": {c: mean_ci(per[i], seed=seed) for i, c in enumerate(classes)},
        "gap": diff_ci(per[0], per[1], seed=seed),
        "drop": {c: {"drop": d, "ci": ci} for c, (d, ci) in zip(classes, drops, strict=True)},
        # classes[1] drop minus classes[0] drop: > 0 when the removal hurts classes[1] more
        "drop_difference": diff_ci(base[side == 1] - per[1], base[side == 0] - per[0], seed=seed),
    }


def _per_role(score: np.ndarray, role_of: np.ndarray, n_roles: int) -> np.ndarray:
    total = np.bincount(role_of, weights=score, minlength=n_roles)
    return total / np.bincount(role_of, minlength=n_roles).clip(min=1)


def _top_features(
    test: dict[str, np.ndarray], groups: np.ndarray, classes: Sequence[str], n: int = 10
) -> dict[str, list[dict[str, Any]]]:
    """The ``n`` strongest significant features of each direction."""
    out = {}
    for c, sign in ((classes[0], 1.0), (classes[1], -1.0)):
        idx = np.flatnonzero(test["significant"] & (sign * test["mean_diff"] > 0))
        idx = idx[np.argsort(-np.abs(test["effect"][idx]))][:n]
        out[c] = [
            {
                "feature": int(k),
                "group": str(groups[k]),
                "mean_diff": float(test["mean_diff"][k]),
                "effect": float(test["effect"][k]) if np.isfinite(test["effect"][k]) else None,
                "q": float(test["q"][k]),
            }
            for k in idx
        ]
    return out


def _bias_table(
    names: np.ndarray,
    scores: dict[str, np.ndarray],
    role_of: np.ndarray,
    top: int,
    classes: Sequence[str],
) -> dict[str, Any]:
    if not scores:
        return {"n_roles": 0, "note": "no neutral images of roles with gendered variants"}
    base = scores["none"]
    counts = np.bincount(role_of, minlength=len(names))
    order = np.argsort(-np.abs(base))[:top]
    return {
        "n_roles": len(names),
        "n_images": int(counts.sum()),
        "most_skewed": [
            {
                "role": str(names[r]),
                "n_images": int(counts[r]),
                "toward": classes[0] if base[r] > 0 else classes[1],
                "score": {k: float(v[r]) for k, v in scores.items()},
            }
            for r in order
        ],
    }


def _verdict(
    features: dict[str, Any], removals: dict[str, Any], classes: Sequence[str]
) -> dict[str, Any]:
    """Does the paper's finding hold here? Judged by two stated criteria, honestly either way."""
    female, male = classes
    dist_f = features["either_modality"][female]
    dist_m = features["either_modality"][male]
    shares = {g: dist_f[g]["share"] for g in GROUPS}
    plurality = max(GROUPS, key=lambda g: shares[g] or 0.0) if dist_f["total"] else None
    f_img, m_img = dist_f["ImgD"]["share"], dist_m["ImgD"]["share"]
    if plurality == "ImgD":
        part1 = "holds"
    elif f_img is not None and (dist_f["ImgD"]["enrichment"] or 0) > 1 and f_img > (m_img or 0):
        part1 = "partly: ImgD is over-represented among them, but is not their largest group"
    else:
        part1 = "does not hold"
    text = removals["TextD"]
    diff = text["drop_difference"]
    if diff["diff"] is None:
        part2 = "not measurable"
    elif diff["diff"] > 0 and diff["ci"][0] > 0:
        part2 = "holds"
    elif diff["diff"] > 0:
        part2 = "direction only: the difference's 95% CI includes 0"
    else:
        part2 = "does not hold"
    return {
        f"{female}_concepts_mainly_in_ImgD": {
            "criterion": f"ImgD is the largest group among the {female} features (significant "
            "in images or captions)",
            "verdict": part1,
            f"{female}_feature_shares": shares,
            f"{female}_ImgD_enrichment": dist_f["ImgD"]["enrichment"],
            f"{male}_ImgD_share": m_img,
            f"n_{female}_features": dist_f["total"],
            f"n_{male}_features": dist_m["total"],
        },
        f"{male}_hurt_more_by_removing_TextD": {
            "criterion": f"removing TextD drops {male} accuracy more than {female} accuracy "
            "(difference of drops > 0 with a 95% CI above 0)",
            "verdict": part2,
            f"{male}_drop": text["drop"][male],
            f"{female}_drop": text["drop"][female],
            "difference": diff,
            "control_difference": text.get("control", {}).get("drop_difference"),
            "ImgD_difference": removals["ImgD"]["drop_difference"],  # is it specific to TextD?
        },
    }


def _plot_accuracy(path: Path, removals: dict[str, Any], classes: Sequence[str]) -> Path:
    from matplotlib.figure import Figure

    names = list(removals)
    colors = ("#CC79A7", "#56B4E9")
    with mpl.rc_context(MPL_STYLE):
        fig = Figure(figsize=(max(6.0, 0.9 * len(names) + 1.5), 3.4), layout="constrained")
        ax = fig.add_subplot()
        x = np.arange(len(names))
        for i, c in enumerate(classes):
            acc = [removals[n]["accuracy"][c] for n in names]
            mean = np.array([a["mean"] for a in acc])
            err = np.array([[a["mean"] - a["ci"][0], a["ci"][1] - a["mean"]] for a in acc]).T
            ax.bar(
                x + (i - 0.5) * 0.38,
                mean,
                0.36,
                yerr=err,
                color=colors[i],
                label=c,
                capsize=2,
                error_kw={"elinewidth": 0.8},
            )
            ctrl = [removals[n].get("control", {}).get("accuracy", {}).get(c) for n in names]
            cx = [x[j] + (i - 0.5) * 0.38 for j, a in enumerate(ctrl) if a]
            ax.scatter(
                cx,
                [a["mean"] for a in ctrl if a],
                marker="_",
                s=160,
                color="#39424e",
                zorder=3,
                label="random control" if i == 0 else None,
            )
        ax.set_xticks(x, ["baseline" if n == "none" else n for n in names], rotation=20)
        ax.set_ylabel("zero-shot accuracy")
        ax.set_ylim(0, 1.05)
        ax.set_title("Gender classification after removing feature sets", fontsize=10)
        ax.legend(frameon=False, fontsize=8, ncols=3, loc="upper right")
    return save_png(fig, path)


def _plot_features(path: Path, features: dict[str, Any], classes: Sequence[str]) -> Path:
    from matplotlib.figure import Figure

    panels = [*features["per_modality"].items(), ("either", features["either_modality"])]
    with mpl.rc_context(MPL_STYLE):
        fig = Figure(figsize=(8.0, 2.8), layout="constrained")
        axes = fig.subplots(1, len(panels), sharey=True)
        for ax, (name, dist) in zip(axes, panels, strict=True):
            x = np.arange(len(classes))
            bottom = np.zeros(len(classes))
            for g in GROUPS:
                counts = np.array([dist[c][g]["count"] for c in classes])
                ax.bar(x, counts, 0.6, bottom=bottom, color=GROUP_COLORS[g], label=g)
                bottom += counts
            ax.set_xticks(x, [f"{c}\nfeatures" for c in classes])
            ax.set_title(f"{name} test" if name != "either" else "either modality", fontsize=9)
        axes[0].set_ylabel("significant features")
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside right upper", frameon=False, fontsize=8)
    return save_png(fig, path)


def _plot_bias(path: Path, bias: dict[str, Any], classes: Sequence[str]) -> Path:
    from matplotlib.figure import Figure

    rows = bias["most_skewed"][::-1]
    shown = ["none", *GROUPS, "gender"]
    marks = {"none": "o", "ImgD": "s", "TextD": "D", "CrossD": "^", "gender": "x"}
    colors = {**GROUP_COLORS, "none": "#39424e", "gender": "#D55E00"}
    with mpl.rc_context(MPL_STYLE):
        fig = Figure(figsize=(6.4, 0.28 * len(rows) + 1.3), layout="constrained")
        ax = fig.add_subplot()
        y = np.arange(len(rows))
        for name in shown:
            ax.scatter(
                [r["score"][name] for r in rows],
                y,
                marker=marks[name],
                s=22,
                color=colors[name],
                label="baseline" if name == "none" else f"-{name}",
            )
        ax.axvline(0, color="#9aa3ad", linewidth=0.8)
        ax.set_yticks(y, [r["role"] for r in rows], fontsize=8)
        ax.set_xlabel(f"<- {classes[1]}    score    {classes[0]} ->")
        ax.set_title("Most gender-skewed roles on neutral images", fontsize=10)
        ax.legend(frameon=False, fontsize=7, loc="lower right")
    return save_png(fig, path)
