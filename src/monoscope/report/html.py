"""Render an analysis directory as one self-contained static HTML report.

Everything is inlined: CSS, JS, plots (SVG) and thumbnails (WebP data URIs, each distinct image
encoded once in a JSON map that a small script assigns to the ``<img>`` elements). A
Content-Security-Policy forbids any non-inline resource, so the page never touches the network.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import logging
import math
import webbrowser
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup
from PIL import Image

from .._util import MonoscopeError, read_json, write_text
from ..data import load_image_ref
from . import plots

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
THUMB_PX = 64
SHOWN_CAPTIONS = 5

GROUP_INFO = {
    "ImgD": ("Image-dominant", "Fire mostly on images. Highest MDS first."),
    "TextD": ("Text-dominant", "Fire mostly on text. Lowest MDS first."),
    "CrossD": (
        "Cross-modal",
        "Fire on both modalities. Strongest in both first (highest min(μ img, μ txt)).",
    ),
}


@dataclass(frozen=True)
class Feature:
    """One row of ``features.csv``."""

    id: int
    alive: bool
    mu_img: float
    mu_txt: float
    mds: float
    group: str
    freq_img: float
    freq_txt: float
    ci: tuple[float, float] | None
    stability: float | None
    name: str


@dataclass(frozen=True)
class Thumb:
    key: str | None  # key into the thumbnail map; None if the image could not be loaded
    caption: str
    value: float


@dataclass(frozen=True)
class Caption:
    text: str
    value: float
    frac: float  # value relative to the feature's strongest caption, for the bar


@dataclass(frozen=True)
class Card:
    feature: Feature
    thumbs: list[Thumb]
    captions: list[Caption]


def _float(s: str | None) -> float:
    return float(s) if s not in (None, "") else math.nan


def read_features(path: Path) -> list[Feature]:
    """Read ``features.csv``; optional columns (CIs, stability, name) may be absent."""
    if not path.is_file():
        raise MonoscopeError(f"{path}: file not found (is this an analysis directory?)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"feature", "alive", "mu_img", "mu_txt", "mds", "group"} - set(
            reader.fieldnames or ()
        )
        if missing:
            raise MonoscopeError(f"{path}: missing columns {', '.join(sorted(missing))}")
        out = []
        for row in reader:
            lo, hi = _float(row.get("mds_ci_low")), _float(row.get("mds_ci_high"))
            stability = _float(row.get("stability"))
            out.append(
                Feature(
                    id=int(row["feature"]),
                    alive=row["alive"].strip().lower() in ("1", "true"),
                    mu_img=_float(row["mu_img"]),
                    mu_txt=_float(row["mu_txt"]),
                    mds=_float(row["mds"]),
                    group=row["group"],
                    freq_img=_float(row.get("freq_img")),
                    freq_txt=_float(row.get("freq_txt")),
                    ci=(lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None,
                    stability=stability if math.isfinite(stability) else None,
                    name=(row.get("name") or "").strip(),
                )
            )
    return out


def select_top(features: Iterable[Feature], group: str, n: int) -> list[Feature]:
    """The ``n`` most characteristic alive features of ``group`` (ties broken by id).

    ImgD: highest MDS; TextD: lowest MDS; CrossD: highest min(mu_img, mu_txt).
    """
    members = [f for f in features if f.alive and f.group == group]
    if group == "ImgD":
        members.sort(key=lambda f: (-f.mds, f.id))
    elif group == "TextD":
        members.sort(key=lambda f: (f.mds, f.id))
    else:
        members.sort(key=lambda f: (-min(f.mu_img, f.mu_txt), f.id))
    return members[:n]


def _read_pairs(path: Path, rows: set[int]) -> dict[int, dict[str, Any]]:
    """The ``pairs.jsonl`` records at ``rows``, streaming (the store may be large)."""
    out: dict[int, dict[str, Any]] = {}
    if not rows:
        return out
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i in rows:
                out[i] = json.loads(line)
                if len(out) == len(rows):
                    break
    return out


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
            self._by_ref[ref] = self._add(ref)
        return self._by_ref[ref]

    def _add(self, ref: str) -> str | None:
        try:
            img = load_image_ref(ref)
            alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            img = img.convert("RGBA" if alpha else "RGB")
            img.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            img.save(buf, format="WEBP", quality=88, method=6)
        except Exception as e:  # a broken image must not break the whole report
            log.warning("thumbnail for %s unavailable: %s", ref, e)
            self.failed += 1
            return None
        data = buf.getvalue()
        digest = hashlib.sha1(data).hexdigest()
        if digest not in self._by_digest:
            key = f"t{len(self.uris)}"
            self._by_digest[digest] = key
            self.uris[key] = "data:image/webp;base64," + base64.b64encode(data).decode("ascii")
        return self._by_digest[digest]


def _valid(idx: np.ndarray, val: np.ndarray, n: int) -> list[tuple[int, float]]:
    return [(int(i), float(v)) for i, v in zip(idx[:n], val[:n], strict=True) if i >= 0]


def _caption(pairs: Mapping[int, Mapping[str, Any]], row: int) -> str:
    rec = pairs.get(row)
    return str(rec.get("caption", "")) if rec else f"pair #{row}"


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
    """``{"a": {"b": 1}}`` -> ``[("a.b", "1")]``, for the details table."""
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
    return format(x, spec) if isinstance(x, int | float) else str(x)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = _fmt
    return env


def _load_top(top_dir: Path) -> dict[str, np.ndarray]:
    top = {}
    for name in ("image_idx", "image_val", "text_idx", "text_val"):
        path = top_dir / f"{name}.npy"
        if not path.is_file():
            raise MonoscopeError(f"{path}: file not found (is this an analysis directory?)")
        top[name] = np.load(path, mmap_mode="r")
    return top


def _cards(
    selected: Mapping[str, list[Feature]],
    top: Mapping[str, np.ndarray],
    pairs: Mapping[int, Mapping[str, Any]],
    thumbnails: Thumbnails,
    thumbs_per_feature: int,
) -> dict[str, list[Card]]:
    cards: dict[str, list[Card]] = {}
    for g, fs in selected.items():
        cards[g] = []
        for f in fs:
            img_top = _valid(top["image_idx"][f.id], top["image_val"][f.id], thumbs_per_feature)
            txt_top = _valid(top["text_idx"][f.id], top["text_val"][f.id], top["text_idx"].shape[1])
            thumbs = []
            for r, v in img_top:
                ref = pairs.get(r, {}).get("image_ref")
                key = thumbnails.key(ref) if isinstance(ref, str) else None
                thumbs.append(Thumb(key, _caption(pairs, r), v))
            vmax = max((v for _, v in txt_top), default=0.0) or 1.0
            captions = [Caption(_caption(pairs, r), v, v / vmax) for r, v in txt_top]
            cards[g].append(Card(f, thumbs, captions))
    return cards


def _figures(features: list[Feature], summary: Mapping[str, Any]) -> list[tuple[str, str, Markup]]:
    """(title, css class, inline SVG) for the distribution section; none without alive features."""
    alive = [f for f in features if f.alive and f.group in plots.GROUPS]
    if not alive:
        return []
    grouping = summary.get("grouping") or {}
    labels = [f.group for f in alive]
    mds = np.array([f.mds for f in alive])
    mu_img, mu_txt = np.array([f.mu_img for f in alive]), np.array([f.mu_txt for f in alive])
    return [
        (
            "MDS distribution",
            "wide",
            Markup(plots.mds_histogram(mds, labels, grouping.get("low"), grouping.get("high"))),
        ),
        ("Group sizes", "", Markup(plots.group_sizes(summary.get("groups") or {}))),
        (
            "Mean activation per feature",
            "",
            Markup(plots.activation_scatter(mu_img, mu_txt, labels)),
        ),
    ]


def render_report(
    analysis_dir: Path,
    out: Path,
    top_features_per_group: int = 12,
    thumbs_per_feature: int = 8,
) -> Path:
    """Write a self-contained HTML report of the analysis in ``analysis_dir`` to ``out``."""
    analysis_dir, out = Path(analysis_dir), Path(out)
    summary = read_json(analysis_dir / "summary.json")
    features = read_features(analysis_dir / "features.csv")
    top = _load_top(analysis_dir / "top")
    n_top = top["image_idx"].shape[0]
    if any(f.id >= n_top for f in features):
        raise MonoscopeError(f"{analysis_dir / 'top'}: fewer rows ({n_top}) than features")

    selected = {g: select_top(features, g, top_features_per_group) for g in plots.GROUPS}
    rows: set[int] = set()
    for f in (f for fs in selected.values() for f in fs):
        rows.update(int(i) for i in top["image_idx"][f.id, :thumbs_per_feature] if i >= 0)
        rows.update(int(i) for i in top["text_idx"][f.id] if i >= 0)

    notices = []
    store = summary.get("store")
    pairs_path = Path(store) / "pairs.jsonl" if store else None
    if pairs_path is not None and pairs_path.is_file():
        pairs = _read_pairs(pairs_path, rows)
    else:
        pairs = {}
        notices.append(
            f"Store not found ({store or 'no path in summary.json'}): no captions or thumbnails."
        )
    thumbnails = Thumbnails()
    cards = _cards(selected, top, pairs, thumbnails, thumbs_per_feature)
    if thumbnails.failed:
        notices.append(f"{thumbnails.failed} thumbnail(s) could not be loaded (see the log).")

    groups = summary.get("groups") or {}
    html = (
        _environment()
        .get_template("report.html.j2")
        .render(
            summary=summary,
            model_name=_model_name(summary.get("model") or {}),
            source_name=_source_name(summary.get("source")),
            details=[
                (section, _flatten(summary.get(section)))
                for section in ("model", "source", "grouping", "versions")
                if summary.get(section)
            ],
            groups=groups,
            group_ci={g: plots.group_ci(groups.get(g) or {}) for g in plots.GROUPS},
            grouping=summary.get("grouping") or {},
            group_info=GROUP_INFO,
            cards=cards,
            figures=_figures(features, summary),
            thumbs=thumbnails.uris,
            shown_captions=SHOWN_CAPTIONS,
            notices=notices,
            analysis_dir=str(analysis_dir.resolve()),
            css=Markup((TEMPLATES / "report.css").read_text(encoding="utf-8")),
            js=Markup((TEMPLATES / "report.js").read_text(encoding="utf-8")),
        )
    )
    write_text(out, html)
    return out


def open_in_browser(path: Path) -> bool:
    """Open a report in the default web browser; False if no browser could be started."""
    return webbrowser.open(Path(path).resolve().as_uri())
