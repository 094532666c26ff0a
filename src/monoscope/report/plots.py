"""Report plots, drawn with matplotlib's Agg-backed ``Figure`` and returned as inline SVG.

Dense marks (scatter points, per-feature CI segments) are rasterised inside the SVG so a plot
of thousands of features stays a few tens of kilobytes; axes and text stay vector.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

GROUPS = ("ImgD", "TextD", "CrossD")
VERDICTS = (*GROUPS, "undetermined", "rare")
# Okabe-Ito, colour-blind safe.
GROUP_COLORS = {
    "ImgD": "#E69F00",
    "TextD": "#0072B2",
    "CrossD": "#009E73",
    "undetermined": "#b7b7b7",
    "rare": "#dcdcdc",
    "dead": "#999999",
}
ALL_COLOR = "#39424e"
# Okabe-Ito again, for series that are not groups (compared analyses), in a distinct order.
SERIES_COLORS = ("#000000", "#D55E00", "#56B4E9", "#CC79A7", "#E69F00", "#0072B2", "#009E73")
SERIES_STYLES = ("-", "--", "-.", ":")
INK, MUTED = "#39424e", "#7b8592"

MPL_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 10,
    "axes.edgecolor": "#9aa3ad",
    "axes.labelcolor": "#39424e",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": "#5b6573",
    "ytick.color": "#5b6573",
    "figure.facecolor": "none",
    "axes.facecolor": "none",
}


def _svg(fig: Figure, prefix: str) -> str:
    """Serialise ``fig`` as an SVG fragment for inlining in HTML.

    Drops the XML prolog, metadata and namespace declarations (HTML does not need them, and
    they are the only URLs matplotlib writes), namespaces every id with ``prefix`` so several
    plots can share one page, and leaves sizing to CSS via the viewBox.
    """
    buf = io.StringIO()
    with mpl.rc_context({"svg.hashsalt": prefix}):
        fig.savefig(buf, format="svg", dpi=150, metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    svg = re.sub(r'\s(width|height)="[\d.]+pt"', "", svg, count=2)
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r'(url\(#|href="#)([^")]+)', rf"\1{prefix}-\2", svg)
    return svg.replace("<svg", f'<svg role="img" class="plot" id="{prefix}"', 1).strip()


def _finite(x: Any) -> TypeGuard[int | float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _thresholds(ax: Any, low: float | None, high: float | None, axis: str = "x") -> None:
    """Dashed grouping thresholds, labelled at the top (x) or right (y) of the axes."""
    for x, name in ((low, "low"), (high, "high")):
        if not _finite(x):
            continue
        if axis == "x":
            ax.axvline(x, color=INK, linestyle=(0, (4, 3)), linewidth=1, zorder=3)
            ax.annotate(
                f"{name} {x:.2f}",
                (x, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -2),
                textcoords="offset points",
                va="top",
                fontsize=8,
                color=INK,
            )
        else:  # a rising curve: label "low" on the right and "high" on the left, off the data
            right = name == "low"
            ax.axhline(x, color=INK, linestyle=(0, (4, 3)), linewidth=1, zorder=3)
            ax.annotate(
                f"{name} {x:.2f}",
                (1.0 if right else 0.0, x),
                xycoords=("axes fraction", "data"),
                xytext=(-3 if right else 3, 2),
                textcoords="offset points",
                ha="right" if right else "left",
                va="bottom",
                fontsize=8,
                color=INK,
            )


def mds_histogram(
    mds: np.ndarray, groups: Sequence[str], low: float | None, high: float | None
) -> str:
    """Histogram of MDS over alive features, stacked by group, with the grouping thresholds."""
    groups_arr = np.asarray(groups)
    with mpl.rc_context(MPL_STYLE):
        fig = Figure(figsize=(5.8, 3.0), layout="constrained")
        ax = fig.add_subplot()
        bins = np.linspace(0.0, 1.0, 41)
        present = [g for g in VERDICTS if np.any(groups_arr == g)]
        ax.hist(
            [mds[groups_arr == g] for g in present],
            bins=bins.tolist(),
            stacked=True,
            color=[GROUP_COLORS[g] for g in present],
            label=[f"{g} ({int(np.sum(groups_arr == g))})" for g in present],
            edgecolor="white",
            linewidth=0.5,
        )
        _thresholds(ax, low, high)
        ax.set_xlim(0, 1)
        ax.set_xlabel("MDS  (0 = text only, 1 = image only)")
        ax.set_ylabel("features")
        if present:
            ax.legend(
                frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, fontsize=8
            )
        return _svg(fig, "plot-mds")


def mds_intervals(
    mds: np.ndarray,
    ci_low: np.ndarray,
    ci_high: np.ndarray,
    groups: Sequence[str],
    low: float | None,
    high: float | None,
) -> str:
    """Every alive feature's MDS with its 95% interval, features ranked by MDS."""
    groups_arr = np.asarray(groups)
    order = np.argsort(mds, kind="stable")
    x = np.empty(len(order))
    x[order] = np.arange(len(order))
    with mpl.rc_context(MPL_STYLE):
        fig = Figure(figsize=(3.4, 3.0), layout="constrained")
        ax = fig.add_subplot()
        for g in VERDICTS:
            sel = (groups_arr == g) & np.isfinite(ci_low) & np.isfinite(ci_high)
            if np.any(sel):
                ax.vlines(
                    x[sel],
                    ci_low[sel],
                    ci_high[sel],
                    color=GROUP_COLORS[g],
                    alpha=0.45,
                    linewidth=max(0.4, min(2.0, 300 / max(len(x), 1))),
                    rasterized=True,
                )
            sel = groups_arr == g
            if np.any(sel):
                ax.scatter(x[sel], mds[sel], s=2.5, color=GROUP_COLORS[g], lw=0, rasterized=True)
        _thresholds(ax, low, high, axis="y")
        ax.set_ylim(0, 1)
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_xlabel("alive features, ranked by MDS")
        ax.set_ylabel("MDS and 95% CI")
        return _svg(fig, "plot-mds-ci")


def group_ci(entry: Mapping[str, Any]) -> tuple[float, float] | None:
    """A group-size CI from ``{"ci": [lo, hi]}`` or ``{"ci": {"low": .., "high": ..}}``."""
    ci = entry.get("ci")
    if isinstance(ci, Mapping):
        ci = (ci.get("low"), ci.get("high"))
    if isinstance(ci, Sequence) and len(ci) == 2 and all(_finite(v) for v in ci):
        return float(ci[0]), float(ci[1])
    return None


def group_sizes(groups: Mapping[str, Mapping[str, Any]]) -> str:
    """Horizontal bars of verdict counts (undetermined and rare included); for the three
    groups, a diamond at the estimated number of features in the region between its bounds
    (``estimate``/``ci``; older summaries: whiskers of ``ci`` around the count)."""
    names = [g for g in VERDICTS if g in groups]
    counts = [float(groups[g].get("count", 0)) for g in names]
    total = sum(counts) or 1.0
    with mpl.rc_context(MPL_STYLE):
        fig = Figure(figsize=(3.6, 0.5 + 0.5 * len(names)), layout="constrained")
        ax = fig.add_subplot()
        y = np.arange(len(names))[::-1]
        ax.barh(y, counts, color=[GROUP_COLORS[g] for g in names], height=0.62)
        right_max = 1.0
        for yi, g, c in zip(y, names, counts, strict=True):
            ci = group_ci(groups[g])
            est = groups[g].get("estimate")
            centre = float(est) if _finite(est) else c
            if ci is not None:
                ax.errorbar(
                    centre,
                    yi,
                    xerr=[[max(centre - ci[0], 0.0)], [max(ci[1] - centre, 0.0)]],
                    color=INK,
                    capsize=3,
                    linewidth=1,
                    marker="D" if _finite(est) else None,
                    markersize=4,
                    markerfacecolor="white",
                )
            right = max(c, ci[1] if ci else c)
            right_max = max(right_max, right)
            ax.annotate(
                f"{int(c)}  ({100 * c / total:.0f}%)",
                (right, yi),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=9,
                color=INK,
            )
        ax.set_yticks(y, names)
        ax.set_xlabel("features (◇ estimate and bounds)")
        ax.set_xlim(0, right_max * 1.45)
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
        return _svg(fig, "plot-groups")


def _scatter_groups(ax: Any, x: np.ndarray, y: np.ndarray, groups_arr: np.ndarray) -> None:
    n = len(x)
    size = 18 if n < 300 else 9 if n < 2000 else 5
    for g in VERDICTS:
        sel = groups_arr == g
        if np.any(sel):
            ax.scatter(
                x[sel],
                y[sel],
                s=size,
                color=GROUP_COLORS[g],
                alpha=0.8,
                edgecolors="white",
                linewidths=0.3,
                rasterized=True,
                label=g,
            )


def activation_scatter(mu_img: np.ndarray, mu_txt: np.ndarray, groups: Sequence[str]) -> str:
    """Mean image vs mean text activation per alive feature (log-log), coloured by group."""
    groups_arr = np.asarray(groups)
    positive = np.concatenate([mu_img[mu_img > 0], mu_txt[mu_txt > 0]])
    floor = float(positive.min()) / 2 if positive.size else 1e-6
    x, y = np.maximum(mu_txt, floor), np.maximum(mu_img, floor)
    with mpl.rc_context(MPL_STYLE):
        fig = Figure(figsize=(3.4, 3.0), layout="constrained")
        ax = fig.add_subplot()
        _scatter_groups(ax, x, y, groups_arr)
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color="#9aa3ad", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("mean text activation")
        ax.set_ylabel("mean image activation")
        return _svg(fig, "plot-scatter")


def frequency_scatter(
    mds: np.ndarray,
    freq_img: np.ndarray,
    freq_txt: np.ndarray,
    groups: Sequence[str],
    low: float | None,
    high: float | None,
) -> str:
    """MDS against activation frequency (share of samples of either modality where the feature
    fires; log scale), coloured by group, with the grouping thresholds."""
    groups_arr = np.asarray(groups)
    freq = (np.nan_to_num(freq_img) + np.nan_to_num(freq_txt)) / 2
    positive = freq[freq > 0]
    floor = float(positive.min()) / 2 if positive.size else 1e-6
    with mpl.rc_context(MPL_STYLE):
        fig = Figure(figsize=(3.4, 3.0), layout="constrained")
        ax = fig.add_subplot()
        _scatter_groups(ax, mds, np.maximum(freq, floor), groups_arr)
        _thresholds(ax, low, high)
        ax.set_xlim(0, 1)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(
            mpl.ticker.FuncFormatter(lambda v, _: f"{100 * v:.3g}%" if v > 0 else "0")
        )
        ax.set_xlabel("MDS")
        ax.set_ylabel("activation frequency")
        return _svg(fig, "plot-freq")


def compare_overlay(
    entries: Sequence[Mapping[str, Any]], bins: Sequence[float], current: str | None = None
) -> str:
    """Overlaid MDS densities of several analyses (``compare.json``); ``current`` is drawn
    thickest (the analysis this report is about)."""
    edges = np.asarray(bins, dtype=float)
    with mpl.rc_context(MPL_STYLE):
        fig = Figure(figsize=(5.8, 3.0), layout="constrained")
        ax = fig.add_subplot()
        for i, e in enumerate(entries):
            hist = np.asarray(e.get("mds_histogram") or [], dtype=float)
            if hist.size != edges.size - 1:
                continue
            ax.stairs(
                hist,
                edges,
                color=SERIES_COLORS[i % len(SERIES_COLORS)],
                linestyle=SERIES_STYLES[i % len(SERIES_STYLES)],
                linewidth=2.4 if e.get("name") == current else 1.5,
                label=f"{e.get('name', '?')}  (n={_count(e.get('n_alive'))})",
            )
        ax.set_xlim(float(edges[0]), float(edges[-1]))
        ax.set_ylim(bottom=0)
        ax.set_xlabel("MDS  (0 = text only, 1 = image only)")
        ax.set_ylabel("density of alive features")
        ax.legend(frameon=False, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3)
        return _svg(fig, "plot-compare")


def _count(x: Any) -> str:
    return f"{int(x):,}" if _finite(x) else "?"


def _ci(entry: Any) -> tuple[float, float, float] | None:
    """(mean, lo, hi) of a ``{"mean", "ci": [lo, hi]}`` entry, or None."""
    if not isinstance(entry, Mapping) or not _finite(entry.get("mean")):
        return None
    mean = float(entry["mean"])
    ci = entry.get("ci")
    if isinstance(ci, Sequence) and len(ci) == 2 and all(_finite(v) for v in ci):
        return mean, float(ci[0]), float(ci[1])
    return mean, mean, mean


METRIC_TITLES = {
    "embsim_img": "EmbSim · images",
    "embsim_txt": "EmbSim · captions",
    "ms_img": "MS · images",
    "ms_txt": "MS · captions",
    "xcorr": "cross-modal corr.",
}


def metric_panels(metrics: Mapping[str, Any]) -> str | None:
    """Per-group means with 95% CIs of each monosemanticity metric (one small panel each);
    EmbSim panels show the random m-set mean (dashed) and 95th percentile (dotted)."""
    keys = [k for k in METRIC_TITLES if isinstance(metrics.get(k), Mapping)]
    rows = [*GROUPS, "all"]
    if not keys:
        return None
    with mpl.rc_context(MPL_STYLE):
        fig = Figure(figsize=(1.9 * len(keys) + 0.6, 2.5), layout="constrained")
        axes = fig.subplots(1, len(keys), sharey=True, squeeze=False)[0]
        y = np.arange(len(rows))[::-1]
        for ax, key in zip(axes, keys, strict=True):
            for yi, g in zip(y, rows, strict=True):
                v = _ci(metrics[key].get(g))
                if v is None:
                    continue
                color = GROUP_COLORS.get(g, ALL_COLOR)
                ax.errorbar(
                    v[0],
                    yi,
                    xerr=[[v[0] - v[1]], [v[2] - v[0]]],
                    fmt="o",
                    color=color,
                    ms=5,
                    capsize=2.5,
                    linewidth=1.4,
                )
            short = key.rsplit("_", 1)[-1]
            rand = metrics.get(f"random_embsim_{short}") if key.startswith("embsim") else None
            if isinstance(rand, Mapping):
                for k, style in (("mean", (0, (4, 3))), ("p95", ":")):
                    if _finite(rand.get(k)):
                        ax.axvline(rand[k], color=MUTED, linestyle=style, linewidth=1)
            ax.set_title(METRIC_TITLES[key], fontsize=9, color=INK)
            ax.tick_params(axis="y", length=0)
            ax.margins(x=0.25)
            ax.locator_params(axis="x", nbins=4)
        first = metrics[keys[0]]
        labels = [
            f"{g} (n={first[g]['n']})"
            if isinstance(first.get(g), Mapping) and "n" in first[g]
            else g
            for g in rows
        ]
        axes[0].set_yticks(y, labels)  # how many features each mean averages
        axes[0].set_ylim(-0.6, len(rows) - 0.4)
        return _svg(fig, "plot-metrics")


def m_sweep(sweep: Mapping[str, Any], metrics: Mapping[str, Any] | None = None) -> str | None:
    """EmbSim of the top-m sets against m, per group with 95% CI bands, for both modalities;
    the random m-set mean (which does not depend on m) as a dotted line."""
    try:
        ms = sorted(sweep, key=int)
    except (TypeError, ValueError):
        return None
    panels = [
        (key, title)
        for key, title in (("embsim_img", "images"), ("embsim_txt", "captions"))
        if any(isinstance((sweep[m] or {}).get(key), Mapping) for m in ms)
    ]
    if len(ms) < 2 or not panels:
        return None
    metrics = metrics or {}
    with mpl.rc_context(MPL_STYLE):
        fig = Figure(figsize=(5.8, 3.0), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        x = np.array([int(m) for m in ms], dtype=float)
        for ax, (key, title) in zip(axes, panels, strict=True):
            for g in (*GROUPS, "all"):
                vals = [_ci(((sweep[m] or {}).get(key) or {}).get(g)) for m in ms]
                keep = [i for i, v in enumerate(vals) if v is not None]
                if not keep:
                    continue
                arr = np.array([vals[i] for i in keep])
                color = GROUP_COLORS.get(g, ALL_COLOR)
                style = ":" if g == "all" else "-"
                ax.fill_between(x[keep], arr[:, 1], arr[:, 2], color=color, alpha=0.15, lw=0)
                ax.plot(x[keep], arr[:, 0], style, color=color, marker="o", ms=3.5, label=g)
            rand = metrics.get(f"random_embsim_{key.rsplit('_', 1)[-1]}")
            if isinstance(rand, Mapping) and _finite(rand.get("mean")):
                ax.axhline(rand["mean"], color=MUTED, linestyle=(0, (4, 3)), linewidth=1)
                ax.annotate(
                    "random",
                    (1.0, rand["mean"]),
                    xycoords=("axes fraction", "data"),
                    xytext=(-2, 2),
                    textcoords="offset points",
                    ha="right",
                    fontsize=7.5,
                    color=MUTED,
                )
            ax.set_xscale("log")
            ax.set_xticks(x, [str(int(v)) for v in x])
            ax.minorticks_off()
            ax.set_xlabel("m (top-m set size)")
            ax.set_title(title, fontsize=9, color=INK)
        axes[0].set_ylabel("EmbSim (95% CI)")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper center", ncols=4, frameon=False, fontsize=8)
        return _svg(fig, "plot-msweep")


def _metric_label(name: str) -> str:
    if name.startswith("zeroshot/"):
        return f"zero-shot · {name.split('/', 1)[1]}"
    m = re.fullmatch(r"(i2t|t2i)@(\d+)", name)
    if m:
        return f"{'image→text' if m[1] == 'i2t' else 'text→image'} R@{m[2]}"
    return name


def ablation_bars(ablation: Mapping[str, Any]) -> str | None:
    """Drop of each metric after removing each group (solid) and after removing random
    same-size sets (hatched control), with 95% CI whiskers; one small panel per metric."""
    removals = ablation.get("removals") or {}
    baseline = ablation.get("baseline") or {}
    names: list[str] = []
    for g in GROUPS:
        for name in (removals.get(g) or {}).get("metrics") or {}:
            if name not in names:
                names.append(name)
    present = [g for g in GROUPS if (removals.get(g) or {}).get("metrics")]
    if not names or not present:
        return None
    ncols = len(names) if len(names) <= 6 else 4
    nrows = math.ceil(len(names) / ncols)
    with mpl.rc_context(MPL_STYLE):
        fig = Figure(figsize=(1.95 * ncols + 0.4, 2.35 * nrows + 0.35), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        x = np.arange(len(present))
        w = 0.38
        for ax, name in zip(axes, names, strict=False):
            for i, g in enumerate(present):
                rem = removals[g]
                for dx, entry, control in (
                    (-w / 2, (rem.get("metrics") or {}).get(name), False),
                    (w / 2, (rem.get("control") or {}).get(name), True),
                ):
                    if not isinstance(entry, Mapping) or not _finite(entry.get("drop")):
                        continue
                    drop = float(entry["drop"])
                    ax.bar(
                        x[i] + dx,
                        drop,
                        w,
                        color="white" if control else GROUP_COLORS[g],
                        edgecolor=GROUP_COLORS[g],
                        hatch="////" if control else None,
                        linewidth=1.0,
                    )
                    ci = entry.get("drop_ci")
                    if isinstance(ci, Sequence) and len(ci) == 2 and all(_finite(v) for v in ci):
                        ax.errorbar(
                            x[i] + dx,
                            drop,
                            yerr=[[max(drop - ci[0], 0)], [max(ci[1] - drop, 0)]],
                            color=INK,
                            capsize=2,
                            linewidth=0.9,
                        )
            ax.axhline(0, color="#9aa3ad", linewidth=0.8)
            base = baseline.get(name)
            title = _metric_label(name) + (f"\nbaseline {base:.3f}" if _finite(base) else "")
            ax.set_title(title, fontsize=8.5, color=INK)
            ax.set_xticks(x, present, fontsize=8.5)
            ax.tick_params(axis="x", length=0)
            ax.locator_params(axis="y", nbins=4)
        for ax in axes[len(names) :]:
            ax.set_visible(False)
        for ax in axes[::ncols]:
            ax.set_ylabel("drop", fontsize=9)
        handles = [
            mpl.patches.Patch(facecolor="#c9ced6", edgecolor=INK, label="group removed"),
            mpl.patches.Patch(
                facecolor="white", edgecolor=INK, hatch="////", label="random same-size set"
            ),
        ]
        fig.legend(
            handles=handles, loc="outside upper center", ncols=2, frameon=False, fontsize=8.5
        )
        return _svg(fig, "plot-ablation")
