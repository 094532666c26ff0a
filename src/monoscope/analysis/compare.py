"""Compare analyses of several models or feature maps side by side (METHOD.md §7)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations
from pathlib import Path
from typing import Any

import numpy as np

from .._util import MonoscopeError, atomic_write, versions, write_json
from ..artefacts import COMPARE_VERSION, Analysis
from ..integrity import check_analysis_current
from ..locks import locked
from ..outputs import prepare_out
from .centring import centring_effects
from .evidence import RARE, UNDETERMINED
from .mds import GROUPS
from .monosemanticity import win_rate

COMPARED = ("embsim_img", "embsim_txt", "ms_img", "ms_txt", "xcorr")


def _name(summary: dict[str, Any], path: Path) -> str:
    model = (summary.get("model") or {}).get("id", "?")
    return f"{Path(str(model)).name}/{summary.get('featuremap_kind', '?')} ({path.name})"


@locked()
def compare(
    analyses: Sequence[str | Path],
    out: str | Path,
    names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``out/compare.json`` and ``out/mds.png``: group sizes, MDS distributions, metric
    means with CIs, and the WinRate (AUC) of each per-feature metric between every two
    analyses (``P(feature of A scores higher than a feature of B)``); for every analysis
    without ``--center`` and one with it, what centring changed
    (:func:`~monoscope.analysis.centring.centring_effect`)."""
    paths = [Path(a) for a in analyses]
    prepare_out(Path(out), "comparison", overwrite)
    if len(paths) < 2:
        raise MonoscopeError("compare needs at least two analysis directories")
    if names is not None and len(names) != len(paths):
        raise MonoscopeError(f"--names has {len(names)} entries for {len(paths)} analyses")
    summaries = [check_analysis_current(p) for p in paths]  # refuses stale analyses
    tables = [Analysis(p).features for p in paths]
    labels = list(names) if names else [_name(s, p) for s, p in zip(summaries, paths, strict=True)]
    if len(set(labels)) != len(labels):
        raise MonoscopeError(f"analysis names must be distinct: {labels}; pass --names")
    bins = np.linspace(0, 1, 21)
    entries = []
    for label, s, t, p in zip(labels, summaries, tables, paths, strict=True):
        alive = t["alive"] == 1
        hist, _ = np.histogram(t["mds"][alive], bins=bins, density=True)
        entries.append(
            {
                "name": label,
                "path": str(p.resolve()),
                "model": s.get("model"),
                "featuremap_kind": s.get("featuremap_kind"),
                "n_features": s.get("n_features"),
                "n_alive": s.get("n_alive"),
                "groups": s.get("groups"),
                "group_shares": _shares(s, "count", (*GROUPS, UNDETERMINED, RARE)),
                "estimated_shares": _shares(s, "estimate", GROUPS),
                "grouping": s.get("grouping"),
                "metrics": {m: (s.get("metrics") or {}).get(m, {}).get("all") for m in COMPARED},
                "mds_histogram": hist.tolist(),
            }
        )
    wins: dict[str, dict[str, float]] = {m: {} for m in COMPARED}
    for (i, a), (j, b) in permutations(enumerate(tables), 2):
        for m in COMPARED:
            if m in a and m in b:
                wins[m][f"{labels[i]} > {labels[j]}"] = win_rate(
                    a[m][a["alive"] == 1], b[m][b["alive"] == 1]
                )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _plot(entries, bins, out / "mds.png")
    write_json(
        out / "compare.json",
        {
            "format_version": COMPARE_VERSION,
            "analyses": entries,
            "mds_bins": bins.tolist(),
            "win_rate": wins,
            "centring": centring_effects(labels, summaries, tables),
            "versions": versions(),
        },
    )
    return out


def _shares(summary: dict[str, Any], key: str, labels: tuple[str, ...]) -> dict[str, Any]:
    """Share of alive features per label (``count``: verdicts; ``estimate``: the estimated
    number whose MDS lies in the region); labels an older analysis lacks are left out."""
    n_alive = max(summary["n_alive"], 1)
    groups = summary.get("groups") or {}
    return {g: groups[g][key] / n_alive for g in labels if key in (groups.get(g) or {})}


def _plot(entries: list[dict[str, Any]], bins: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    centres = (bins[:-1] + bins[1:]) / 2
    for e in entries:
        ax.step(centres, e["mds_histogram"], where="mid", label=e["name"], lw=1.8)
    ax.set_xlabel("MDS (0 = text only, 1 = image only)")
    ax.set_ylabel("density of alive features")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
