"""Render an analysis directory as one self-contained static HTML report.

Everything is inlined: CSS, JS, plots (SVG) and thumbnails (WebP data URIs, each distinct image
encoded once in a JSON map). The feature explorer is data, not markup: every alive feature is
one entry of a compact JSON block (numbers, top pairs as indices into one caption table,
histogram counts), rendered client-side one page of cards at a time, so thousands of features
cost nothing until they are looked at. A Content-Security-Policy forbids any non-inline
resource, so the page never touches the network.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
import os
import time
import webbrowser
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup
from PIL import Image

from .._util import MonoscopeError, write_text
from ..artefacts import (
    REQUIRED_COLUMNS,
    Analysis,
    Summary,
    read_ablation,
    read_compare,
    read_feature_table,
)
from ..data import load_image_ref
from ..integrity import check_analysis_current, check_pairs_file
from . import plots
from .histograms import Histograms, activation_histograms
from .inputs import (
    Portable,
    Study,
    load_study,
    load_words,
    read_optional,
    resolve_inputs,
)
from .rating import rating_context
from .vocab import vocabulary_view

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
THUMB_PX = 64
SHOWN_CAPTIONS = 5
PAGE_SIZE = 48
WIDE_FIGURE_PX = 640  # study figures wider than a half-page column span the whole page
CSS_FILES = ("report.css", "extras.css")
JS_FILES = ("report.js", "rating.js")

GROUP_INFO = {
    "ImgD": ("Image-dominant", "Fire mostly on images."),
    "TextD": ("Text-dominant", "Fire mostly on captions."),
    "CrossD": ("Cross-modal", "Fire on both modalities."),
    "undetermined": ("Undetermined", "The evidence does not decide their group."),
    "rare": ("Rare", "Fire on too few pairs for a verdict."),
}
# features.csv columns shipped to the explorer, under short keys.
NUMERIC_COLUMNS = {
    "mds": "mds",
    "mu_img": "mi",
    "mu_txt": "mt",
    "freq_img": "fi",
    "freq_txt": "ft",
    "embsim_img": "ei",
    "embsim_txt": "et",
    "lift_img": "li",
    "lift_txt": "lt",
    "ms_img": "si",
    "ms_txt": "st",
    "xcorr": "xc",
    "confidence": "cf",
    "q_value": "q",
}


@dataclass(frozen=True)
class Feature:
    """One row of ``features.csv``; ``extra`` holds the optional metric columns."""

    id: int
    alive: bool
    mu_img: float
    mu_txt: float
    mds: float
    group: str
    freq_img: float
    freq_txt: float
    ci: tuple[float, float] | None
    confidence: float | None
    name: str
    extra: dict[str, float] = field(default_factory=dict, compare=False, hash=False)


def read_features(path: Path) -> list[Feature]:
    """``features.csv`` as :class:`Feature` rows; optional columns (CIs, confidence, metrics,
    name) may be absent."""
    table = read_feature_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table]
    if missing:
        raise MonoscopeError(f"{path}: missing columns {', '.join(missing)}")
    return features_of(table)


def features_of(table: Mapping[str, np.ndarray]) -> list[Feature]:
    """The rows of a feature table (:func:`monoscope.artefacts.read_feature_table`)."""
    n = len(table["feature"])
    nan = np.full(n, np.nan)

    def col(name: str) -> list[float]:
        v = table.get(name, nan)
        return (v if v.dtype.kind == "f" else nan).tolist()

    lo, hi, conf = col("mds_ci_low"), col("mds_ci_high"), col("confidence")
    extra_cols = [
        c for c in NUMERIC_COLUMNS if c in table and c not in Feature.__dataclass_fields__
    ]
    extras = {c: col(c) for c in extra_cols}
    names = table["name"].tolist() if "name" in table else [""] * n
    cols = zip(
        table["feature"].tolist(),
        table["alive"].tolist(),
        col("mu_img"),
        col("mu_txt"),
        col("mds"),
        table["group"].tolist(),
        col("freq_img"),
        col("freq_txt"),
        strict=True,
    )
    return [
        Feature(
            id=int(k),
            alive=alive == 1,
            mu_img=mu_i,
            mu_txt=mu_t,
            mds=mds,
            group=group,
            freq_img=f_i,
            freq_txt=f_t,
            ci=(lo[i], hi[i]) if math.isfinite(lo[i]) and math.isfinite(hi[i]) else None,
            confidence=conf[i] if math.isfinite(conf[i]) else None,
            name=names[i].strip(),
            extra={c: extras[c][i] for c in extra_cols},
        )
        for i, (k, alive, mu_i, mu_t, mds, group, f_i, f_t) in enumerate(cols)
    ]


def select_top(features: Iterable[Feature], group: str, n: int | None) -> list[Feature]:
    """The ``n`` (all if None) most characteristic alive features of ``group``, ties by id.

    ImgD: highest MDS; TextD: lowest MDS; CrossD: highest min(mu_img, mu_txt).
    """
    members = [f for f in features if f.alive and f.group == group]
    if group == "ImgD":
        members.sort(key=lambda f: (-f.mds, f.id))
    elif group == "TextD":
        members.sort(key=lambda f: (f.mds, f.id))
    else:
        members.sort(key=lambda f: (-min(f.mu_img, f.mu_txt), f.id))
    return members if n is None else members[:n]


def choose_features(features: Sequence[Feature], cap: int | None) -> list[Feature]:
    """The alive features shown in the explorer: all, or at most ``cap`` split over the groups
    in proportion to their sizes (each group's most characteristic first), in id order."""
    alive = [f for f in features if f.alive and f.group in plots.VERDICTS]
    if cap is None or len(alive) <= cap:
        return alive
    chosen: list[Feature] = []
    for g in plots.VERDICTS:
        members = select_top(alive, g, None)
        chosen += members[: round(cap * len(members) / len(alive))]
    return sorted(chosen[:cap], key=lambda f: f.id)


def _read_pairs(path: Path, rows: set[int]) -> dict[int, dict[str, Any]]:
    """The ``pairs.jsonl`` records at ``rows``, streaming (the store may be large)."""
    out: dict[int, dict[str, Any]] = {}
    if not rows:
        return out
    last = max(rows)
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i in rows:
                try:
                    out[i] = json.loads(line)
                except ValueError:
                    raise MonoscopeError(
                        f"{path}: line {i + 1} is not a pair record (damaged? see monoscope "
                        "doctor --verify)"
                    ) from None
                if len(out) == len(rows):
                    break
            if i >= last:
                break
    return out


def _encode_thumbnail(ref: str, size: int) -> bytes:
    img = load_image_ref(ref)
    alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    img = img.convert("RGBA" if alpha else "RGB")
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="WEBP", quality=86, method=4)
    return buf.getvalue()


class Thumbnails:
    """Thumbnails as data URIs, loaded once per image ref and stored once per distinct content."""

    def __init__(self, size: int = THUMB_PX) -> None:
        self.size = size
        self.uris: dict[str, str] = {}
        self.failed = 0
        self._by_ref: dict[str, str | None] = {}
        self._by_digest: dict[str, str] = {}

    def key(self, ref: str) -> str | None:
        """The map key of the thumbnail for ``ref``, or None if it cannot be loaded."""
        if ref not in self._by_ref:
            self.add_many([ref])
        return self._by_ref[ref]

    def add_many(self, refs: Iterable[str], workers: int = min(8, os.cpu_count() or 1)) -> None:
        """Load ``refs`` (decoding in threads), registering them in the given order."""
        todo = list(dict.fromkeys(r for r in refs if r not in self._by_ref))
        if not todo:
            return

        def load(ref: str) -> bytes | Exception:
            try:
                return _encode_thumbnail(ref, self.size)
            except Exception as e:  # a broken image must not break the whole report
                return e

        if len(todo) > 16 and workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(load, todo))
        else:
            results = [load(r) for r in todo]
        for ref, data in zip(todo, results, strict=True):
            if isinstance(data, Exception):
                log.warning("thumbnail for %s unavailable: %s", ref, data)
                self.failed += 1
                self._by_ref[ref] = None
                continue
            digest = hashlib.sha1(data).hexdigest()
            if digest not in self._by_digest:
                key = f"t{len(self.uris)}"
                self._by_digest[digest] = key
                self.uris[key] = "data:image/webp;base64," + base64.b64encode(data).decode()
            self._by_ref[ref] = self._by_digest[digest]


def _model_name(model: Mapping[str, Any]) -> str:
    for k in ("id", "name", "model_id", "model", "spec"):
        if isinstance(model.get(k), str):
            return model[k]
    return "unknown model"


def _source_name(source: Any) -> str:
    if isinstance(source, str):
        return source
    if isinstance(source, Mapping):
        for k in ("name", "spec", "kind", "path"):
            if isinstance(source.get(k), str):
                return source[k]
    return "unknown data"


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``{"a": {"b": 1}}`` -> ``[("a.b", "1")]``, for the details tables."""
    if isinstance(obj, Mapping):
        out: list[tuple[str, str]] = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(obj, float):
        return [(prefix, f"{obj:.6g}")]
    return [(prefix, json.dumps(obj) if isinstance(obj, list) else str(obj))]


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool):
        return str(x)
    return format(x, spec) if isinstance(x, int | float) else str(x)


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = _fmt
    env.tests["num"] = _is_num
    return env


def _json_script(obj: Any) -> Markup:
    """Compact JSON that is safe inside ``<script type="application/json">``."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028")):
        text = text.replace(a, b)
    return Markup(text.replace("\u2029", "\\u2029"))


def _num_or_none(x: Any) -> float | None:
    return float(x) if _is_num(x) else None


def _int_or_none(x: Any) -> int | None:
    return int(x) if _is_num(x) and float(x).is_integer() else None


def _round(x: float, sig: int = 4) -> float | None:
    return float(f"{x:.{sig}g}") if x is not None and math.isfinite(x) else None


def _fm_metric(fm: Mapping[str, Any], key: str, part: str = "overall") -> float | None:
    """A feature-map metric: ``fm[part][key]`` (metrics.json layout) or a flat ``fm[key]``."""
    section = fm.get(part)
    if isinstance(section, Mapping) and _is_num(section.get(key)):
        return float(section[key])
    return float(fm[key]) if part == "overall" and _is_num(fm.get(key)) else None


def _explorer(
    chosen: Sequence[Feature],
    top: Mapping[str, np.ndarray],
    pairs: Mapping[int, Mapping[str, Any]],
    thumbnails: Thumbnails,
    hist: Histograms,
    words: Mapping[str, Any] | None,
    thumbs_per_feature: int,
    captions_per_feature: int,
) -> dict[str, Any]:
    """The explorer's JSON: columns of per-feature numbers, top pairs as indices into one
    ``pairs`` table of [caption, thumbnail key], histogram counts and driving words."""
    ids = [f.id for f in chosen]

    def top_of(k: int, modality: str, n: int) -> list[tuple[int, float]]:
        idx, val = top[f"{modality}_idx"][k, :n], top[f"{modality}_val"][k, :n]
        pick = zip(idx.tolist(), val.tolist(), strict=True)
        return [(i, float(v)) for i, v in pick if i >= 0 and i in pairs]

    img_top = [top_of(k, "image", thumbs_per_feature) for k in ids]
    txt_top = [top_of(k, "text", captions_per_feature) for k in ids]
    thumbnails.add_many(
        str(pairs[r]["image_ref"])
        for rows in img_top
        for r, _ in rows
        if isinstance(pairs[r].get("image_ref"), str)
    )
    table: dict[int, int] = {}
    pair_list: list[list[Any]] = []

    def index(row: int, with_image: bool) -> int:
        if row not in table:
            table[row] = len(pair_list)
            pair_list.append([str(pairs[row].get("caption", "")), None])
        entry = pair_list[table[row]]
        if with_image and entry[1] is None:
            ref = pairs[row].get("image_ref")
            entry[1] = thumbnails.key(ref) if isinstance(ref, str) else None
        return table[row]

    cols: dict[str, list[Any]] = {"id": ids, "g": [plots.VERDICTS.index(f.group) for f in chosen]}
    cols["lo"] = [_round(f.ci[0]) if f.ci else None for f in chosen]
    cols["hi"] = [_round(f.ci[1]) if f.ci else None for f in chosen]
    for column, short in NUMERIC_COLUMNS.items():
        if column in ("confidence",):
            values = [f.confidence for f in chosen]
        elif column in Feature.__dataclass_fields__:
            values = [getattr(f, column) for f in chosen]
        else:
            values = [f.extra.get(column, math.nan) for f in chosen]
        rounded = [_round(v) if v is not None else None for v in values]
        if any(v is not None for v in rounded):
            cols[short] = rounded
    if not any(v is not None for v in cols["lo"]):
        del cols["lo"], cols["hi"]

    img = [[index(r, True) for r, _ in rows] for rows in img_top]
    txt = [[index(r, False) for r, _ in rows] for rows in txt_top]
    imgv = [[_round(v, 3) for _, v in rows] for rows in img_top]
    txtv = [[_round(v, 3) for _, v in rows] for rows in txt_top]

    feature_words = (words or {}).get("features") or {}
    return {
        "groups": list(plots.VERDICTS),
        "cols": cols,
        "name": [f.name for f in chosen],
        "img": img,
        "imgv": imgv,
        "txt": txt,
        "txtv": txtv,
        "pairs": pair_list,
        "hist": {
            "img": hist.image[ids].tolist(),
            "txt": hist.text[ids].tolist(),
            "hi": [_round(float(v), 3) for v in hist.hi[ids]],
            "source": hist.source,
            "n": hist.n_pairs,
        },
        "words": {str(k): feature_words[str(k)] for k in ids if str(k) in feature_words},
    }


def _figures(
    features: list[Feature], summary: Mapping[str, Any]
) -> list[tuple[str, str, Markup, str]]:
    """(title, css class, inline SVG, caption) of the modality map; none without alive
    features."""
    alive = [f for f in features if f.alive and f.group in plots.VERDICTS]
    if not alive:
        return []
    grouping = summary.get("grouping") or {}
    low, high = grouping.get("low"), grouping.get("high")
    labels = [f.group for f in alive]
    mds = np.array([f.mds for f in alive])
    mu_img, mu_txt = np.array([f.mu_img for f in alive]), np.array([f.mu_txt for f in alive])
    figs = [
        (
            "MDS distribution by group",
            "span2 wide",
            Markup(plots.mds_histogram(mds, labels, low, high)),
            "Dashed lines: the grouping thresholds.",
        ),
        (
            "Group sizes",
            "",
            Markup(plots.group_sizes(summary.get("groups") or {})),
            "Bars: confident verdicts, undetermined and rare features. Diamonds: the estimated "
            "number of alive features whose MDS lies in each group's region; whiskers: from the "
            "features whose 95% interval lies in the region to those whose interval reaches it.",
        ),
    ]
    if any(f.ci for f in alive):
        lo = np.array([f.ci[0] if f.ci else np.nan for f in alive])
        hi = np.array([f.ci[1] if f.ci else np.nan for f in alive])
        figs.append(
            (
                "MDS with 95% CI, per feature",
                "",
                Markup(plots.mds_intervals(mds, lo, hi, labels, low, high)),
                "Each feature's 95% Fieller interval, features ranked by MDS.",
            )
        )
    freq_img = np.array([f.freq_img for f in alive])
    freq_txt = np.array([f.freq_txt for f in alive])
    if np.isfinite(freq_img).any() or np.isfinite(freq_txt).any():
        figs.append(
            (
                "MDS vs activation frequency",
                "",
                Markup(plots.frequency_scatter(mds, freq_img, freq_txt, labels, low, high)),
                "Frequency: share of images and captions on which the feature fires.",
            )
        )
    figs.append(
        (
            "Mean activation per modality",
            "",
            Markup(plots.activation_scatter(mu_img, mu_txt, labels)),
            "Dotted: equal means (MDS = 0.5).",
        )
    )
    return figs


def _overview(summary: Summary) -> dict[str, Any]:
    """Numbers for the overview tiles, each with the sample it was measured on."""
    fm, metrics = summary.featuremap_metrics, summary.metrics
    skipped = summary.get("skipped")
    n_skipped = skipped.get("count") if isinstance(skipped, Mapping) else skipped
    reasons = skipped.get("reasons") if isinstance(skipped, Mapping) else None
    retrieval = fm.get("retrieval")
    if not isinstance(retrieval, Mapping):
        retrieval = {}
    return {
        "n_skipped": n_skipped if _is_num(n_skipped) else None,
        "skip_reasons": dict(reasons) if isinstance(reasons, Mapping) else {},
        "fvu": _fm_metric(fm, "fvu"),
        "fvu_img": _fm_metric(fm, "fvu", "image"),
        "fvu_txt": _fm_metric(fm, "fvu", "text"),
        "l0": _fm_metric(fm, "l0"),
        "l0_img": _fm_metric(fm, "l0", "image"),
        "l0_txt": _fm_metric(fm, "l0", "text"),
        "dead": _num_or_none(fm.get("dead_fraction")),
        "dead_window": _int_or_none(fm.get("dead_window")),
        "never_active": _num_or_none(fm.get("never_active_fraction")),
        "retrieval_feature": retrieval.get("feature"),
        "retrieval_original": retrieval.get("original"),
        "retrieval_pairs": _int_or_none(retrieval.get("pairs")),
        "above_p95_img": metrics.get("share_above_random_p95_img"),
        "above_p95_txt": metrics.get("share_above_random_p95_txt"),
    }


def _details(summary: Summary, portable: Portable) -> list[tuple[str, list]]:
    """Settings-and-provenance tables (paths relative to the report)."""
    settings = {
        k: summary.get(k)
        for k in ("mds", "grouping", "intervals", "top_m", "top_kept", "seed", "n_pairs")
        if summary.get(k) is not None
    }
    if "evaluator" in summary.metrics:
        settings["evaluator"] = summary.metrics["evaluator"]
    tables = [
        ("model", summary.get("model")),
        ("data", summary.get("source")),
        ("analysis settings", settings),
        ("feature map metrics", summary.featuremap_metrics),
        ("skipped records", summary.get("skipped")),
        ("versions", summary.get("versions")),
        (
            "paths (relative to this report)",
            {
                "analysis": portable.path(portable.analysis),
                "store": portable.path(summary.store) if summary.store else "?",
                "feature map": portable.path(summary.featuremap) if summary.featuremap else "?",
            },
        ),
    ]
    return [(title, _flatten(portable.json(obj))) for title, obj in tables if obj]


def _ablation_view(ablation: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ablation section of an ``ablation.json`` (:func:`monoscope.artefacts.read_ablation`)."""
    removals = ablation["removals"]
    svg = plots.ablation_bars(ablation)
    if svg is None:
        return None
    names: list[str] = list(ablation["baseline"])
    rows = []
    for g in plots.GROUPS:
        rem = removals.get(g) or {}
        if not rem.get("metrics"):
            continue
        cells = []
        for name in names:
            m = (rem.get("metrics") or {}).get(name) or {}
            c = (rem.get("control") or {}).get(name) or {}
            cells.append((m.get("drop"), m.get("drop_ci"), c.get("drop"), c.get("drop_ci")))
        rows.append((g, rem.get("n_features"), cells))
    settings = ablation.get("settings") or {}
    return {
        "svg": Markup(svg),
        "names": [plots._metric_label(n) for n in names],
        "baseline": [ablation["baseline"][n] for n in names],
        "rows": rows,
        "settings": settings,
        "left_out": {k: v for k, v in (ablation.get("left_out") or {}).items() if v},
    }


def _compare_view(compare: Mapping[str, Any], analysis_dir: Path) -> dict[str, Any] | None:
    """The comparison panels of a ``compare.json`` (:func:`monoscope.artefacts.read_compare`)."""
    entries = [e for e in compare["analyses"] if isinstance(e, Mapping)]
    if not entries:
        return None
    here = str(analysis_dir.resolve())
    current = next((e.get("name") for e in entries if str(e.get("path")) == here), None)
    bins = compare.get("mds_bins") or np.linspace(0, 1, 21).tolist()
    wins = compare["win_rate"]
    metrics = [m for m in plots.METRIC_TITLES if isinstance(wins.get(m), Mapping) and wins[m]]
    names = [str(e.get("name")) for e in entries]
    keys = [f"{a} > {b}" for i, a in enumerate(names) for b in names[i + 1 :]]
    keys = [k for k in keys if any(k in wins[m] for m in metrics)]
    if not keys:  # names that do not match the keys: show them as they are
        keys = list(dict.fromkeys(k for m in metrics for k in wins[m]))
    return {
        "svg": Markup(plots.compare_overlay(entries, bins, current)),
        "entries": entries,
        "current": current,
        "win_pairs": keys,
        "win_rows": [(plots.METRIC_TITLES[m], [wins[m].get(k) for k in keys]) for m in metrics],
    }


def render_report(
    analysis_dir: str | Path,
    out: str | Path,
    *,
    ablation: str | Path | None = None,
    compare: str | Path | None = None,
    studies: Iterable[str | Path] = (),
    discover: bool = True,
    agree: str | Path | None = None,
    exact_histograms: bool = True,
    max_features: int | None = None,
    thumbs_per_feature: int = 8,
    captions_per_feature: int = 10,
) -> Path:
    """Write a self-contained HTML report of the analysis in ``analysis_dir`` to ``out``.

    Args:
        analysis_dir: the output of ``analyze`` (``summary.json``, ``features.csv``, ``top/``;
            ``words.json`` is shown when present).
        out: the HTML file to write.
        ablation: ``ablation.json`` or the directory holding it (default: ``<run>/ablation``,
            where ``<run>`` is the parent of ``analysis_dir``).
        compare: ``compare.json`` or its directory (default: ``<run>/compare``).
        studies: study directories (or a directory of them); default: ``<run>/studies/*``.
        agree: ``agree.json`` of ``monoscope agree`` or its directory (default:
            ``<run>/agree``), shown beside the blind rating mode.
        discover: look for ablation, compare and studies in ``<run>`` when not given.
        exact_histograms: show the exact activation histograms of the analysis pass
            (``histograms.safetensors``); otherwise, or for an analysis made before they were
            written, histograms of the top-m values.
        max_features: cap on the features in the explorer (default: every alive feature),
            shared among the groups in proportion to their sizes.
        thumbs_per_feature: top images shown per feature.
        captions_per_feature: top captions kept per feature.
    """
    t0 = time.perf_counter()
    analysis_dir, out = Path(analysis_dir), Path(out)
    check_analysis_current(analysis_dir)  # refuses an analysis whose store changed since
    analysis = Analysis(analysis_dir)
    summary = analysis.summary
    features = features_of(analysis.features)
    top = analysis.top
    notices: list[str] = []
    abl_path, cmp_path, study_dirs = resolve_inputs(
        analysis_dir, ablation, compare, studies, discover, notices
    )
    portable = Portable(out, analysis_dir, summary, [abl_path, cmp_path, *study_dirs])

    chosen = choose_features(features, max_features)
    n_alive = sum(1 for f in features if f.alive and f.group in plots.VERDICTS)
    notices.extend(f"Warning: {w}." for w in summary.warnings)
    if len(chosen) < n_alive:
        notices.append(
            f"The explorer shows {len(chosen):,} of {n_alive:,} alive features "
            "(the most characteristic of each group)."
        )
    rows: set[int] = set()
    for f in chosen:
        rows.update(int(i) for i in top["image_idx"][f.id, :thumbs_per_feature] if i >= 0)
        rows.update(int(i) for i in top["text_idx"][f.id, :captions_per_feature] if i >= 0)
    store = summary.store
    pairs_path = Path(store) / "pairs.jsonl" if store else None
    if pairs_path is not None and pairs_path.is_file():
        check_pairs_file(pairs_path.parent)  # captions must be the ones the analysis saw
        pairs = _read_pairs(pairs_path, rows)
    else:
        pairs = {}
        notices.append(
            f"Store not found ({store or 'no path in summary.json'}): no captions or thumbnails."
        )
    words = load_words(analysis_dir, notices)
    hist = activation_histograms(analysis.histograms if exact_histograms else None, dict(top))
    thumbnails = Thumbnails()
    explorer = _explorer(
        chosen, top, pairs, thumbnails, hist, words, thumbs_per_feature, captions_per_feature
    )
    explorer["page"] = PAGE_SIZE
    explorer.update(vocabulary_view(analysis_dir, [f.id for f in chosen], notices))
    grouping, metrics = summary.grouping, summary.metrics
    explorer["thresholds"] = [_num_or_none(grouping.get(k)) for k in ("low", "high")]
    explorer["p95"] = [
        _num_or_none((metrics.get(f"random_embsim_{m}") or {}).get("p95")) for m in ("img", "txt")
    ]
    if thumbnails.failed:
        notices.append(f"{thumbnails.failed} thumbnail(s) could not be loaded (see the log).")

    abl = read_optional(read_ablation, abl_path, notices)
    if abl and (abl.get("settings") or {}).get("inputs", summary.get("inputs")) != summary.get(
        "inputs"
    ):
        notices.append(f"{abl_path}: made from other inputs than this analysis; left out.")
        abl = None
    cmp_ = read_optional(read_compare, cmp_path, notices)
    study_views: list[Study] = [load_study(d, notices) for d in study_dirs]
    for study in study_views:
        study.path = portable.path(study.path)
    extras = rating_context(analysis_dir, chosen, explorer, summary.raw, agree, discover, notices)
    if extras.get("agree"):
        extras["agree"]["path"] = portable.path(extras["agree"]["path"])
    groups = summary.groups
    sweep = metrics.get("m_sweep") if isinstance(metrics.get("m_sweep"), Mapping) else {}
    metric_svg = plots.metric_panels(metrics) if metrics else None
    sweep_svg = plots.m_sweep(sweep, metrics) if sweep else None

    html = (
        _environment()
        .get_template("report.html.j2")
        .render(
            summary=summary,
            model_name=portable.text(_model_name(summary.get("model") or {})),
            source_name=portable.text(_source_name(summary.get("source"))),
            overview=_overview(summary),
            details=_details(summary, portable),
            groups=groups,
            group_ci={g: plots.group_ci(groups.get(g) or {}) for g in plots.GROUPS},
            grouping=grouping,
            group_info=GROUP_INFO,
            group_colors=plots.GROUP_COLORS,
            figures=_figures(features, summary.raw),
            metrics=metrics,
            metric_svg=Markup(metric_svg) if metric_svg else None,
            sweep_svg=Markup(sweep_svg) if sweep_svg else None,
            ablation=_ablation_view(abl) if abl else None,
            ablation_path=portable.path(abl_path) if abl_path else None,
            compare=_compare_view(cmp_, analysis_dir) if cmp_ else None,
            compare_path=portable.path(cmp_path) if cmp_path else None,
            centring=(cmp_ or {}).get("centring") or [],
            vocab_source=explorer.get("vocab_source"),
            rating_json=_json_script(portable.json(extras["rating"])),
            **extras,
            words=words,
            studies=study_views,
            wide_figure_px=WIDE_FIGURE_PX,
            n_explorer=len(chosen),
            hist_source=hist.source,
            hist_n=hist.n_pairs,
            explorer_json=_json_script(explorer),
            thumbs_json=_json_script(thumbnails.uris),
            summary_json=_json_script(_jsonable(portable.json(summary.raw))),
            notices=[portable.text(n) for n in notices],
            analysis_dir=portable.path(analysis_dir),
            css=Markup("\n".join((TEMPLATES / n).read_text(encoding="utf-8") for n in CSS_FILES)),
            js=Markup("\n".join((TEMPLATES / n).read_text(encoding="utf-8") for n in JS_FILES)),
        )
    )
    write_text(out, html)
    log.info("report: %s (%.1f MB, %.1f s)", out, len(html) / 1e6, time.perf_counter() - t0)
    return out


def _jsonable(obj: Any) -> Any:
    """``obj`` with non-finite floats as None (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def open_in_browser(path: str | Path) -> bool:
    """Open a report in the default web browser; False if no browser could be started."""
    try:
        return webbrowser.open(Path(path).resolve().as_uri())
    except webbrowser.Error:  # e.g. a BROWSER variable naming no runnable browser
        return False
