"""The optional inputs of the report: ``words.json`` of the analysis, and the run-level outputs
``ablation/ablation.json``, ``compare/compare.json`` and ``studies/*/`` (read through
:mod:`monoscope.artefacts`), and the paths the report shows (relative to the report).

Run-level outputs are found by convention in the analysis directory's parent (the run
directory) unless given explicitly. Anything unreadable becomes a notice, never an exception:
a report with one section fewer is better than no report.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .._util import MonoscopeError
from ..artefacts import Summary, read_study

log = logging.getLogger(__name__)

STUDY_TITLES = {
    "gender": "Gender",
    "adversarial": "Adversarial robustness",
    "steer": "Modality-specific steering",
    "steering": "Modality-specific steering",
}
STUDY_ORDER = ("gender", "adversarial", "steer", "steering")
SKIP_KEYS = {"settings", "versions", "figures", "paper_finding", "findings", "examples"}
FIGURE_MAX_BYTES = 900_000
FIGURE_MAX_WIDTH = 1600
TABLE_ROWS = 60


@dataclass
class Study:
    """One case study: its figures (inlined) and a compact view of its JSON."""

    key: str
    title: str
    path: str
    findings: list[tuple[str, str, str]] = field(default_factory=list)  # claim, criterion, verdict
    rows: list[tuple[str, str]] = field(default_factory=list)  # label, value
    figures: list[tuple[str, str, int, int]] = field(default_factory=list)  # title, uri, w, h


def read_optional_json(path: Path | None, notices: list[str]) -> dict[str, Any] | None:
    """``path``'s JSON object, or None (with a notice if it exists but is unreadable)."""
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        notices.append(f"{path}: unreadable ({e}); its section is left out.")
        return None
    if not isinstance(data, dict):
        notices.append(f"{path}: not a JSON object; its section is left out.")
        return None
    return data


def read_optional(
    reader: Callable[[Path], dict[str, Any]], path: Path | None, notices: list[str]
) -> dict[str, Any] | None:
    """``reader(path)``, or None (with a notice if ``path`` exists but cannot be read)."""
    if path is None or not path.is_file():
        return None
    try:
        return reader(path)
    except MonoscopeError as e:
        notices.append(f"{e}; its section is left out.")
        return None


class Portable:
    """Paths as the report shows them: relative to the report's directory, never absolute
    (so a report names nothing of the machine it was made on)."""

    def __init__(
        self, report: Path, analysis: Path, summary: Summary, others: Iterable[Path | None]
    ) -> None:
        self.base = report.resolve().parent
        self.analysis = analysis.resolve()
        inputs = summary.inputs
        named = [
            summary.store,
            summary.featuremap,
            *((inputs.get(k) or {}).get("path") for k in ("store", "featuremap")),
            *others,
        ]
        roots = {self.analysis, self.analysis.parent, self.base}
        roots.update(Path(str(p)).resolve() for p in named if p)
        ordered = sorted((r for r in roots if r.parent != r), key=lambda r: -len(str(r)))
        self._pattern = re.compile("|".join(re.escape(str(r)) + r"(?![\w.-])" for r in ordered))

    def path(self, path: str | Path) -> str:
        """``path`` relative to the report's directory."""
        return os.path.relpath(Path(path).resolve(), self.base)

    def text(self, text: str) -> str:
        """``text`` with the absolute paths it names made relative."""
        if os.path.isabs(text) and len(text) > 1 and "\n" not in text:
            return self.path(text)
        return self._pattern.sub(lambda m: self.path(m.group(0)), text)

    def json(self, obj: Any) -> Any:
        """A JSON-like object with every string passed through :meth:`text`."""
        if isinstance(obj, Mapping):
            return {k: self.json(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.json(v) for v in obj]
        return self.text(obj) if isinstance(obj, str) else obj


def _json_in(path: Path | str | None, name: str) -> Path | None:
    """``path`` itself if it is a file, else ``path/name``."""
    if path is None:
        return None
    path = Path(path)
    return path if path.is_file() or path.suffix == ".json" else path / name


def resolve_inputs(
    analysis_dir: Path,
    ablation: str | Path | None,
    compare: str | Path | None,
    studies: Iterable[str | Path],
    discover: bool,
    notices: list[str],
) -> tuple[Path | None, Path | None, list[Path]]:
    """The ablation and compare JSON files and the study directories to show.

    Explicit arguments win; missing ones are looked up in the run directory (the analysis
    directory's parent) when ``discover``. ``studies`` may name study directories, their JSON
    files, or a parent directory holding several studies.
    """
    run = analysis_dir.resolve().parent
    abl = _json_in(ablation, "ablation.json")
    cmp_ = _json_in(compare, "compare.json")
    for given, found, what in ((ablation, abl, "ablation"), (compare, cmp_, "compare")):
        if given is not None and (found is None or not found.is_file()):
            notices.append(f"{what} results not found at {given}; that section is left out.")
    if discover:
        if ablation is None and (run / "ablation" / "ablation.json").is_file():
            abl = run / "ablation" / "ablation.json"
        if compare is None and (run / "compare" / "compare.json").is_file():
            cmp_ = run / "compare" / "compare.json"
    dirs: list[Path] = []
    wanted = [Path(s) for s in studies]
    if not wanted and discover and (run / "studies").is_dir():
        wanted = [run / "studies"]
    for s in wanted:
        s = s.parent if s.is_file() else s
        if not s.is_dir():
            notices.append(f"study results not found at {s}; left out.")
        elif _is_study(s):
            dirs.append(s)
        else:
            dirs += sorted((d for d in s.iterdir() if d.is_dir() and _is_study(d)), key=_order)
    unique = list(dict.fromkeys(d.resolve() for d in dirs))
    return abl if abl and abl.is_file() else None, cmp_ if cmp_ and cmp_.is_file() else None, unique


def _is_study(path: Path) -> bool:
    return any(path.glob("*.json")) or any(path.glob("*.png"))


def _order(path: Path) -> tuple[int, str]:
    name = path.name.lower()
    return (STUDY_ORDER.index(name) if name in STUDY_ORDER else len(STUDY_ORDER), name)


def _mapping(x: Any) -> Mapping[Any, Any]:
    """``x`` if it is a mapping, else an empty one."""
    return x if isinstance(x, Mapping) else {}


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def fmt_number(x: float) -> str:
    if isinstance(x, int) or (float(x).is_integer() and abs(x) < 1e15):
        return f"{int(x):,}"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _mean_ci(v: Mapping[str, Any]) -> str | None:
    """``"0.81 [0.78, 0.84]"`` for ``{"mean": .., "ci": [lo, hi]}``-like mappings."""
    for mean_key in ("mean", "value", "diff", "drop", "accuracy"):
        if _finite(v.get(mean_key)):
            ci = v.get("ci", v.get("drop_ci"))
            text = fmt_number(v[mean_key])
            if isinstance(ci, Sequence) and len(ci) == 2 and all(_finite(c) for c in ci):
                text += f"  [{fmt_number(ci[0])}, {fmt_number(ci[1])}]"
            return text
    return None


def numeric_rows(data: Mapping[str, Any], depth: int = 4) -> list[tuple[str, str]]:
    """Flatten a study's JSON into (label, value) rows: numbers, and mean/CI entries as one
    row; settings, figures and long lists are skipped."""
    rows: list[tuple[str, str]] = []

    def walk(obj: Any, path: list[str]) -> None:
        if len(rows) >= TABLE_ROWS * 4:
            return
        if _finite(obj):
            rows.append((" › ".join(path), fmt_number(obj)))
        elif isinstance(obj, Mapping):
            compact = _mean_ci(obj)
            if compact is not None and path:
                rows.append((" › ".join(path), compact))
                return
            if len(path) >= depth:
                return
            for k, v in obj.items():
                if not path and k in SKIP_KEYS:
                    continue
                walk(v, [*path, str(k)])

    walk(data, [])
    return rows


def findings(data: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(claim, criterion, verdict) for every entry with a ``verdict`` under ``paper_finding``
    or ``findings`` (a study's honest check of the paper's claim)."""
    out = []
    for key in ("paper_finding", "findings"):
        block = data.get(key)
        if not isinstance(block, Mapping):
            continue
        if isinstance(block.get("verdict"), str):
            block = {key: block}
        for claim, entry in block.items():
            if isinstance(entry, Mapping) and isinstance(entry.get("verdict"), str):
                label = str(entry.get("claim", claim)).replace("_", " ")
                out.append((label, str(entry.get("criterion", "")), entry["verdict"]))
    return out


def _humanise(stem: str, study: str) -> str:
    words = re.sub(r"[_\-]+", " ", stem).strip()
    if words.lower().startswith(study.lower() + " "):
        words = words[len(study) + 1 :]
    return words[:1].upper() + words[1:]


def figure_uri(path: Path) -> tuple[str, int, int]:
    """A data URI of a PNG figure (downscaled or WebP-encoded only when very large)."""
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if len(data) <= FIGURE_MAX_BYTES and w <= FIGURE_MAX_WIDTH:
            return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), w, h
        img = img.convert("RGBA")
        if w > FIGURE_MAX_WIDTH:
            img = img.resize((FIGURE_MAX_WIDTH, round(h * FIGURE_MAX_WIDTH / w)))
        buf = io.BytesIO()
        img.save(buf, format="WEBP", quality=90, method=4)
        w, h = img.size
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), w, h


def load_study(path: Path, notices: list[str]) -> Study:
    """A study directory: every PNG figure (in the order its JSON lists them, then by name) and
    the numbers and verdicts of its JSON."""
    key = path.name
    study = Study(key, STUDY_TITLES.get(key.lower(), _humanise(key, "")), str(path))
    jsons = sorted(path.glob("*.json"), key=lambda p: (p.stem != key, p.name))
    data = read_optional(read_study, jsons[0], notices) if jsons else None
    if data is not None:
        study.findings = findings(data)
        study.rows = numeric_rows(data)
    listed = [str(f) for f in (data or {}).get("figures", []) if isinstance(f, str)]
    pngs = sorted(path.glob("*.png"), key=lambda p: (p.name not in listed, _listed(p, listed)))
    for png in pngs:
        try:
            uri, w, h = figure_uri(png)
        except Exception as e:  # one broken figure must not break the report
            notices.append(f"{png}: unreadable figure ({e}).")
            continue
        study.figures.append((_humanise(png.stem, key), uri, w, h))
    return study


def _listed(p: Path, listed: list[str]) -> tuple[int, str]:
    return (listed.index(p.name) if p.name in listed else 0, p.name)


def load_words(analysis_dir: Path, notices: list[str]) -> dict[str, Any] | None:
    """``words.json`` of the analysis, if present, with unusable parts dropped."""
    data = read_optional_json(analysis_dir / "words.json", notices)
    if data is None:
        return None
    groups, classes, feats = (_mapping(data.get(k)) for k in ("groups", "word_classes", "features"))
    clean_feats: dict[str, list[list[Any]]] = {}
    for k, words in feats.items():
        if isinstance(words, list):
            pairs = [
                [str(w[0]), round(float(w[1]), 3)]
                for w in words
                if isinstance(w, Sequence) and len(w) >= 2 and _finite(w[1])
            ]
            if pairs:
                clean_feats[str(k)] = pairs
    clean_groups = {
        g: [w for w in ws if isinstance(w, Mapping) and "word" in w and _finite(w.get("mean_drop"))]
        for g, ws in groups.items()
        if isinstance(ws, list)
    }
    for g, ws in clean_groups.items():  # words seen once are noise when there are others
        repeated = [w for w in ws if not isinstance(w.get("n"), int) or w["n"] >= 2]
        clean_groups[g] = repeated if len(repeated) >= 8 else ws
    return {
        "tagger": str(data.get("tagger", "?")),
        "groups": {g: ws for g, ws in clean_groups.items() if ws},
        "word_classes": {g: c for g, c in classes.items() if isinstance(c, Mapping)},
        "features": clean_feats,
    }
