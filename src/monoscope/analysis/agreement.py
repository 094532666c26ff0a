"""Do people agree with the verdict? Agreement of blind ratings (from the report's rating mode)
with each other and with the analysis's groups: ``monoscope agree``.

Each rater marks a feature ``visual``, ``textual``, ``both`` or ``incoherent`` from its top
images and captions alone. The verdict maps ImgD -> visual, TextD -> textual, CrossD -> both;
features with any other label (dead, or labels such as undetermined) are not compared with
the verdict and are counted instead. ``incoherent`` counts as a disagreement with every verdict.

- Between raters: Cohen's kappa for two raters, Fleiss' kappa for more, over the features every
  rater rated; Cohen's kappa for every pair of raters as well.
- Rater vs verdict: Cohen's kappa, the share of agreeing features and the confusion matrix
  (verdict rows, rating columns), per rater and for the raters' consensus (the majority label;
  ties dropped).

Kappas are computed from confusion counts; 95% intervals come from a nonparametric bootstrap
over features (multinomial resampling counts, every replicate one matrix product). Hand-written
rather than taken from a library because the bootstrap needs the counts of every replicate at
once; the tests pin both against hand-computed values (and Cohen's against scikit-learn's
``cohen_kappa_score`` where it is installed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from .._util import MonoscopeError, read_json, versions, write_json
from ..artefacts import read_feature_table

LABELS = ("visual", "textual", "both", "incoherent")
VERDICT = {"ImgD": "visual", "TextD": "textual", "CrossD": "both"}
FORMAT = "monoscope-ratings"


def _weights(n: int, replicates: int, seed: int) -> np.ndarray:
    """(1 + replicates, n) resampling counts; row 0 all ones (the point estimate)."""
    rng = np.random.default_rng(seed)
    w = np.ones((replicates + 1, n))
    if replicates and n:
        w[1:] = rng.multinomial(n, np.full(n, 1.0 / n), size=replicates)
    return w


def _interval(values: np.ndarray) -> dict[str, Any]:
    point, reps = values[0], values[1:]
    reps = reps[np.isfinite(reps)]
    return {
        "value": float(point) if np.isfinite(point) else None,
        "ci": [float(v) for v in np.percentile(reps, [2.5, 97.5])] if reps.size else None,
    }


def cohen_kappa(
    a: np.ndarray, b: np.ndarray, n_labels: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Cohen's kappa of label codes ``a`` and ``b`` (length n) under each row of ``weights``
    ((R, n) item weights; default one row of ones); NaN where chance agreement is 1."""
    w = np.ones((1, len(a))) if weights is None else weights
    pair = np.zeros((len(a), n_labels * n_labels))
    pair[np.arange(len(a)), a * n_labels + b] = 1
    conf = (w @ pair).reshape(-1, n_labels, n_labels)
    total = conf.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        p_o = np.trace(conf, axis1=1, axis2=2) / total
        p_e = (conf.sum(2) * conf.sum(1)).sum(1) / total**2
        return np.where(p_e < 1, (p_o - p_e) / np.where(p_e < 1, 1 - p_e, 1), np.nan)


def fleiss_kappa(counts: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Fleiss' kappa of (n items, C labels) rating counts, every item rated by the same
    number m >= 2 of raters, under each row of ``weights`` (as :func:`cohen_kappa`)."""
    m = counts.sum(1)
    if len(counts) == 0 or (m != m[0]).any() or m[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings per item")
    m = float(m[0])
    w = np.ones((1, len(counts))) if weights is None else weights
    p_item = ((counts**2).sum(1) - m) / (m * (m - 1))
    n = w.sum(1)
    p_bar = (w @ p_item) / n
    p_label = (w @ counts) / (n[:, None] * m)
    p_e = (p_label**2).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p_e < 1, (p_bar - p_e) / np.where(p_e < 1, 1 - p_e, 1), np.nan)


def read_ratings(path: str | Path) -> tuple[str, dict[int, str], dict[str, Any]]:
    """(rater, {feature: label}, the file's analysis block) of one exported ratings file."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MonoscopeError(f"{path}: not a ratings file (format {FORMAT!r} expected)")
    entries = data.get("ratings")
    if not isinstance(entries, list):
        raise MonoscopeError(f"{path}: 'ratings' must be a list")
    ratings: dict[int, str] = {}
    for e in entries:
        k = e.get("feature") if isinstance(e, dict) else None
        label = e.get("label") if isinstance(e, dict) else None
        if not isinstance(k, int) or isinstance(k, bool) or label not in LABELS:
            raise MonoscopeError(
                f"{path}: bad rating {e!r}: needs an integer 'feature' and a 'label' in "
                f"{', '.join(LABELS)}"
            )
        ratings[k] = label
    rater = str(data.get("rater") or "").strip() or path.stem
    analysis = data.get("analysis")
    return rater, ratings, analysis if isinstance(analysis, dict) else {}


def _same_featuremap(info: dict[str, Any], summary: dict[str, Any]) -> bool:
    """Whether a ratings file's analysis header names the analysis's feature map: by weights
    fingerprint where both have one, else by the feature map directory's name."""
    recorded = ((summary.get("inputs") or {}).get("featuremap") or {}).get("fingerprint")
    if info.get("fingerprint") and recorded:
        return bool(info["fingerprint"] == recorded)
    if not info.get("featuremap") or not summary.get("featuremap"):
        return True
    return Path(str(info["featuremap"])).name == Path(str(summary["featuremap"])).name


def _confusion(verdict: Sequence[str], rating: Sequence[str]) -> dict[str, dict[str, int]]:
    counts = Counter(zip(verdict, rating, strict=True))
    return {g: {lab: counts[(g, lab)] for lab in LABELS} for g in VERDICT}


def _versus_verdict(
    items: Sequence[int],
    labels: Sequence[str],
    groups: dict[int, str],
    replicates: int,
    seed: int,
) -> dict[str, Any]:
    """Kappa, agreement share and confusion of one set of ratings against the verdict."""
    pairs = [(groups[k], lab) for k, lab in zip(items, labels, strict=True)]
    comparable = [(g, lab) for g, lab in pairs if g in VERDICT]
    other = Counter(g for g, _ in pairs if g not in VERDICT)
    out: dict[str, Any] = {"n": len(comparable), "not_compared": dict(other)}
    if not comparable:
        return {**out, "kappa": None, "agreement": None, "confusion": None}
    g_codes = np.array([LABELS.index(VERDICT[g]) for g, _ in comparable])
    r_codes = np.array([LABELS.index(lab) for _, lab in comparable])
    w = _weights(len(comparable), replicates, seed)
    out["kappa"] = _interval(cohen_kappa(g_codes, r_codes, len(LABELS), w))
    out["agreement"] = _interval((w @ (g_codes == r_codes)) / w.sum(1))
    out["confusion"] = _confusion([g for g, _ in comparable], [lab for _, lab in comparable])
    return out


def agreement(
    analysis: str | Path,
    ratings: Sequence[str | Path],
    out: str | Path,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Path:
    """Write ``out/agree.json``: inter-rater and rater-vs-verdict agreement (module docstring)."""
    analysis = Path(analysis)
    if not ratings:
        raise MonoscopeError("agree needs at least one ratings file")
    if bootstrap < 0:
        raise MonoscopeError(f"--bootstrap must be >= 0, not {bootstrap}")
    table = read_feature_table(analysis / "features.csv")
    summary = read_json(analysis / "summary.json")
    groups = {int(k): str(g) for k, g in zip(table["feature"], table["group"], strict=True)}
    raters: list[str] = []
    rated: list[dict[int, str]] = []
    for path in ratings:
        rater, r, info = read_ratings(path)
        if info.get("n_features") not in (None, len(groups)) or not _same_featuremap(info, summary):
            raise MonoscopeError(
                f"{path}: rated on another analysis ({info.get('featuremap')}, "
                f"{info.get('n_features')} features), not {analysis}"
            )
        unknown = sorted(set(r) - set(groups))
        if unknown:
            raise MonoscopeError(f"{path}: features {unknown[:5]} are not in {analysis}")
        if not r:
            raise MonoscopeError(f"{path}: no ratings")
        name, i = rater, 2
        while name in raters:  # two files of one rater name: keep both, distinctly
            name, i = f"{rater} ({i})", i + 1
        raters.append(name)
        rated.append(r)

    result: dict[str, Any] = {
        "analysis": str(analysis.resolve()),
        "labels": list(LABELS),
        "verdict_map": VERDICT,
        "raters": [{"name": n, "n_rated": len(r)} for n, r in zip(raters, rated, strict=True)],
        "bootstrap": {"replicates": bootstrap, "kind": "items", "level": 0.95, "seed": seed},
        "versions": versions(),
    }
    result["verdict"] = {
        n: _versus_verdict(list(r), list(r.values()), groups, bootstrap, seed)
        for n, r in zip(raters, rated, strict=True)
    }
    if len(rated) >= 2:
        common = sorted(set.intersection(*(set(r) for r in rated)))
        codes = np.array([[LABELS.index(r[k]) for k in common] for r in rated]).reshape(
            len(rated), len(common)
        )
        w = _weights(len(common), bootstrap, seed)
        inter: dict[str, Any] = {"n_items": len(common)}
        if common:
            if len(rated) == 2:
                inter["method"] = "cohen"
                inter["kappa"] = _interval(cohen_kappa(codes[0], codes[1], len(LABELS), w))
            else:
                counts = np.stack([(codes == c).sum(0) for c in range(len(LABELS))], axis=1)
                inter["method"] = "fleiss"
                inter["kappa"] = _interval(fleiss_kappa(counts.astype(float), w))
            inter["all_agree"] = _interval((w @ (codes == codes[0]).all(0)) / w.sum(1))
            inter["pairwise"] = {
                f"{raters[i]} / {raters[j]}": _interval(
                    cohen_kappa(codes[i], codes[j], len(LABELS), w)
                )
                for i, j in combinations(range(len(rated)), 2)
            }
        result["inter_rater"] = inter
        majority = []
        for idx, k in enumerate(common):
            top = Counter(codes[:, idx].tolist()).most_common()
            if len(top) == 1 or top[0][1] > top[1][1]:
                majority.append((k, LABELS[top[0][0]]))
        result["consensus"] = _versus_verdict(
            [k for k, _ in majority], [lab for _, lab in majority], groups, bootstrap, seed
        )
        result["consensus"]["ties_dropped"] = len(common) - len(majority)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "agree.json", result)
    return out / "agree.json"


def describe_agreement(result: dict[str, Any]) -> list[str]:
    """Console lines: inter-rater kappa and each rater's agreement with the verdict."""

    def fmt(e: dict[str, Any] | None) -> str:
        if not e or e.get("value") is None:
            return "n/a"
        ci = e.get("ci")
        return f"{e['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    lines = []
    inter = result.get("inter_rater")
    if inter and inter.get("kappa"):
        name = "Cohen's" if inter["method"] == "cohen" else "Fleiss'"
        lines.append(
            f"between raters: {name} kappa {fmt(inter['kappa'])} ({inter['n_items']} features)"
        )
    for rater, v in result["verdict"].items():
        lines.append(
            f"{rater} vs verdict: kappa {fmt(v['kappa'])}, agreement {fmt(v['agreement'])} "
            f"({v['n']} features)"
        )
    if result.get("consensus"):
        c = result["consensus"]
        lines.append(f"consensus vs verdict: kappa {fmt(c['kappa'])} ({c['n']} features)")
    return lines
