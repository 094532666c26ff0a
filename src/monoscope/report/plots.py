"""Report plots, drawn with matplotlib's Agg-backed ``Figure`` and returned as inline SVG."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

GROUPS = ("ImgD", "TextD", "CrossD")
# Okabe-Ito, colour-blind safe.
GROUP_COLORS = {"ImgD": "#E69F00", "TextD": "#0072B2", "CrossD": "#009E73", "dead": "#999999"}

_RC = {
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


def mds_histogram(
    mds: np.ndarray, groups: Sequence[str], low: float | None, high: float | None
) -> str:
    """Histogram of MDS over alive features, stacked by group, with the grouping thresholds."""
    groups_arr = np.asarray(groups)
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(5.8, 3.0), layout="constrained")
        ax = fig.add_subplot()
        bins = np.linspace(0.0, 1.0, 41)
        present = [g for g in GROUPS if np.any(groups_arr == g)]
        ax.hist(
            [mds[groups_arr == g] for g in present],
            bins=bins,
            stacked=True,
            color=[GROUP_COLORS[g] for g in present],
            label=[f"{g} ({int(np.sum(groups_arr == g))})" for g in present],
            edgecolor="white",
            linewidth=0.5,
        )
        for x, name in ((low, "low"), (high, "high")):
            if x is not None and np.isfinite(x):
                ax.axvline(x, color="#39424e", linestyle=(0, (4, 3)), linewidth=1)
                ax.annotate(
                    f"{name} {x:.2f}",
                    (x, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(3, -2),
                    textcoords="offset points",
                    va="top",
                    fontsize=8,
                    color="#39424e",
                )
        ax.set_xlim(0, 1)
        ax.set_xlabel("MDS  (0 = text only, 1 = image only)")
        ax.set_ylabel("features")
        if present:
            ax.legend(
                frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, fontsize=8
            )
        return _svg(fig, "plot-mds")


def group_ci(entry: Mapping[str, Any]) -> tuple[float, float] | None:
    """A group-size CI from ``{"ci": [lo, hi]}`` or ``{"ci": {"low": .., "high": ..}}``."""
    ci = entry.get("ci")
    if isinstance(ci, Mapping):
        ci = (ci.get("low"), ci.get("high"))
    if isinstance(ci, Sequence) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci):
        return float(ci[0]), float(ci[1])
    return None


def group_sizes(groups: Mapping[str, Mapping[str, Any]]) -> str:
    """Horizontal bars of group counts, with CI whiskers where the summary has them."""
    names = [g for g in GROUPS if g in groups]
    counts = [float(groups[g].get("count", 0)) for g in names]
    total = sum(counts) or 1.0
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(3.4, 2.9), layout="constrained")
        ax = fig.add_subplot()
        y = np.arange(len(names))[::-1]
        ax.barh(y, counts, color=[GROUP_COLORS[g] for g in names], height=0.62)
        for yi, g, c in zip(y, names, counts, strict=True):
            ci = group_ci(groups[g])
            if ci is not None:
                ax.errorbar(
                    c,
                    yi,
                    xerr=[[max(c - ci[0], 0.0)], [max(ci[1] - c, 0.0)]],
                    color="#39424e",
                    capsize=3,
                    linewidth=1,
                )
            right = max(c, ci[1] if ci else c)
            ax.annotate(
                f"{int(c)}  ({100 * c / total:.0f}%)",
                (right, yi),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=9,
                color="#39424e",
            )
        ax.set_yticks(y, names)
        ax.set_xlabel("features")
        ax.set_xlim(0, max(counts + [1.0]) * 1.4)
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
        return _svg(fig, "plot-groups")


def activation_scatter(mu_img: np.ndarray, mu_txt: np.ndarray, groups: Sequence[str]) -> str:
    """Mean image vs mean text activation per alive feature (log-log), coloured by group."""
    groups_arr = np.asarray(groups)
    positive = np.concatenate([mu_img[mu_img > 0], mu_txt[mu_txt > 0]])
    floor = float(positive.min()) / 2 if positive.size else 1e-6
    x, y = np.maximum(mu_txt, floor), np.maximum(mu_img, floor)
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(3.4, 2.9), layout="constrained")
        ax = fig.add_subplot()
        for g in GROUPS:
            sel = groups_arr == g
            if np.any(sel):
                ax.scatter(
                    x[sel],
                    y[sel],
                    s=18,
                    color=GROUP_COLORS[g],
                    alpha=0.85,
                    edgecolors="white",
                    linewidths=0.4,
                    rasterized=True,
                )
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color="#9aa3ad", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("mean text activation")
        ax.set_ylabel("mean image activation")
        return _svg(fig, "plot-scatter")
