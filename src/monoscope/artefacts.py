"""One typed reader of the analysis artefacts (docs/formats.md), as :class:`~monoscope.store.Store`
is of the store: ``summary.json``, ``features.csv``, ``top/`` and ``histograms.safetensors`` of
an analysis, and the JSON results of ``ablate``, ``compare`` and the case studies.

Every reader checks ``format_version`` and the types of what its callers use, and raises a
one-line :class:`MonoscopeError` naming the file for a missing, old, newer or corrupt artefact,
so callers need no defensive checks. Reading imports neither torch nor a feature map.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ._util import MonoscopeError

SUMMARY_VERSION = 2  # summary.json
ABLATION_VERSION = 1  # ablation.json; files without format_version have the same layout
COMPARE_VERSION = 1  # compare.json; likewise
STUDY_VERSION = 1  # <study>.json of gender, adversarial and steer; likewise
HISTOGRAMS_VERSION = 1  # histograms.safetensors
HISTOGRAMS_FILE = "histograms.safetensors"
FINE_BINS = 64
TOP_NAMES = ("image_idx", "image_val", "text_idx", "text_val")
REQUIRED_COLUMNS = ("feature", "alive", "mu_img", "mu_txt", "mds", "group")
STRING_COLUMNS = frozenset({"group", "name", "vocab_name"})
RERUN = "re-run monoscope analyze"


def read_feature_table(path: str | Path) -> dict[str, np.ndarray]:
    """``features.csv`` as columns: numeric where every cell parses (empty cells NaN), else
    strings; ``group``, ``name`` and ``vocab_name`` always strings."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            names = next(reader, None)
            if names is None:
                raise MonoscopeError(f"{path}: empty file ({RERUN})")
            cols = list(zip(*reader, strict=True)) or [() for _ in names]
    except FileNotFoundError:
        raise MonoscopeError(f"{path}: file not found (is this an analysis directory?)") from None
    except (ValueError, csv.Error, UnicodeDecodeError) as e:
        raise MonoscopeError(f"{path}: not a feature table ({e}); {RERUN}") from None
    out: dict[str, np.ndarray] = {}
    for name, values in zip(names, cols, strict=True):
        if name in STRING_COLUMNS:
            out[name] = np.array(values, dtype=str)
            continue
        try:
            out[name] = np.array([float(v) if v else np.nan for v in values])
        except ValueError:
            out[name] = np.array(values, dtype=str)
    return out


def read_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; a one-line error if it is missing or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MonoscopeError(f"{path}: file not found (is this {what}?)") from None
    except (OSError, ValueError) as e:
        raise MonoscopeError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise MonoscopeError(f"{path}: not a JSON object")
    return data


def _version(data: dict[str, Any], path: Path, current: int, default: int | None) -> int:
    """``format_version`` of ``data``: refused when newer than ``current`` or (with ``default``
    None) missing or older; files without one are read as ``default``."""
    v = data.get("format_version", default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise MonoscopeError(f"{path}: no format_version: written by an older monoscope; {RERUN}")
    if v > current:
        raise MonoscopeError(
            f"{path}: format_version {v} is newer than this monoscope reads ({current}); upgrade"
        )
    if default is None and v < current:
        raise MonoscopeError(
            f"{path}: format_version {v}, this monoscope reads {current}: written by an older "
            f"monoscope; {RERUN}"
        )
    return v


def _dicts(data: dict[str, Any], path: Path, keys: tuple[str, ...]) -> None:
    bad = [k for k in keys if data.get(k) is not None and not isinstance(data[k], dict)]
    if bad:
        raise MonoscopeError(f"{path}: {', '.join(bad)} must be JSON objects; {RERUN}")


def _count(data: dict[str, Any], key: str, path: Path, minimum: int) -> int:
    v = data.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise MonoscopeError(f"{path}: missing or invalid {key} ({v!r}); {RERUN}")
    return v


@dataclass(frozen=True)
class Summary:
    """``summary.json``: the fields readers use, typed (absent sections as ``{}``), and ``raw``."""

    raw: dict[str, Any]
    n_features: int
    n_pairs: int
    grouping: dict[str, Any]
    groups: dict[str, Any]
    metrics: dict[str, Any]
    featuremap_metrics: dict[str, Any]
    inputs: dict[str, Any]
    warnings: list[str]
    store: str | None
    featuremap: str | None

    @classmethod
    def read(cls, path: Path) -> Summary:
        data = read_object(path, "an analysis")
        _version(data, path, SUMMARY_VERSION, None)
        sections = ("grouping", "groups", "metrics", "featuremap_metrics", "inputs", "mds")
        _dicts(data, path, sections)
        warnings = data.get("warnings") or []
        if not isinstance(warnings, list):
            raise MonoscopeError(f"{path}: warnings must be a list; {RERUN}")
        grouping, groups, metrics, featuremap_metrics, inputs = (
            {**(data.get(k) or {})} for k in sections[:-1]
        )
        return cls(
            data,
            _count(data, "n_features", path, 1),
            _count(data, "n_pairs", path, 0),
            grouping,
            groups,
            metrics,
            featuremap_metrics,
            inputs,
            [str(w) for w in warnings],
            _str_or_none(data.get("store")),
            _str_or_none(data.get("featuremap")),
        )

    def get(self, key: str, default: Any = None) -> Any:
        """A raw field of ``summary.json``."""
        return self.raw.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]


def _str_or_none(v: Any) -> str | None:
    return str(v) if v else None


@dataclass(frozen=True)
class Histograms:
    """Exact activation histograms of the analysis pass: (K, bins) counts of non-zero image and
    caption activations in equal bins over ``(0, edge]`` per feature (0 for one that never
    fires)."""

    image: np.ndarray
    text: np.ndarray
    edge: np.ndarray
    n_pairs: int


class Analysis:
    """An analysis directory, read lazily; every accessor raises a one-line MonoscopeError for a
    missing, old or corrupt file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise MonoscopeError(f"{self.path}: not an analysis directory (does not exist)")

    @cached_property
    def summary(self) -> Summary:
        return Summary.read(self.path / "summary.json")

    @cached_property
    def features(self) -> dict[str, np.ndarray]:
        """``features.csv`` as numpy columns (see :func:`read_feature_table`), with the required
        columns present and one row per feature of the summary."""
        file = self.path / "features.csv"
        table = read_feature_table(file)
        missing = [c for c in REQUIRED_COLUMNS if c not in table]
        if missing:
            raise MonoscopeError(f"{file}: missing columns {', '.join(missing)}; {RERUN}")
        rows, k = len(table["feature"]), self.summary.n_features
        if rows != k:
            raise MonoscopeError(f"{file}: {rows} rows, summary.json says n_features {k}")
        bad = [c for c in REQUIRED_COLUMNS if c != "group" and table[c].dtype.kind != "f"]
        if bad:
            raise MonoscopeError(f"{file}: non-numeric column {', '.join(bad)}; {RERUN}")
        return table

    @property
    def groups(self) -> np.ndarray:
        """(K,) each feature's group (ImgD, TextD, CrossD, undetermined, rare or dead)."""
        return self.features["group"]

    @cached_property
    def top(self) -> dict[str, np.ndarray]:
        """``top/{image,text}_{idx,val}.npy`` (memory-mapped), each (K, top_kept)."""
        out = {}
        for name in TOP_NAMES:
            file = self.path / "top" / f"{name}.npy"
            try:
                arr = np.load(file, mmap_mode="r")
            except FileNotFoundError:
                raise MonoscopeError(f"{file}: file not found; {RERUN}") from None
            except (OSError, ValueError) as e:
                raise MonoscopeError(f"{file}: unreadable ({e}); {RERUN}") from None
            kind = "iu" if name.endswith("idx") else "f"
            if (
                arr.ndim != 2
                or arr.shape[0] != self.summary.n_features
                or arr.dtype.kind not in kind
            ):
                raise MonoscopeError(
                    f"{file}: shape {arr.shape} {arr.dtype}, expected ({self.summary.n_features}, "
                    f"top_kept) {'integers' if kind == 'iu' else 'floats'}; {RERUN}"
                )
            out[name] = arr
        if len({a.shape for a in out.values()}) != 1:
            raise MonoscopeError(f"{self.path / 'top'}: arrays of different shapes; {RERUN}")
        return out

    @cached_property
    def histograms(self) -> Histograms | None:
        """The activation histograms, or None for an analysis made before they were written."""
        file = self.path / HISTOGRAMS_FILE
        if not file.is_file():
            return None
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(file, "np") as f:
                meta = f.metadata() or {}
                arrays = {k: f.get_tensor(k) for k in ("image", "text", "exponent")}
        except (SafetensorError, OSError, KeyError, ValueError) as e:
            raise MonoscopeError(f"{file}: unreadable ({e}); {RERUN}") from None
        version = meta.get("format_version", "")
        if not version.isdigit() or int(version) != HISTOGRAMS_VERSION:
            raise MonoscopeError(
                f"{file}: format_version {version!r}, this monoscope reads {HISTOGRAMS_VERSION}"
            )
        k = self.summary.n_features
        image, text, exponent = arrays["image"], arrays["text"], arrays["exponent"]
        if image.shape != text.shape or image.ndim != 2 or image.shape[0] != k:
            raise MonoscopeError(f"{file}: shape {image.shape}, expected ({k}, bins); {RERUN}")
        fired = (image.sum(1) + text.sum(1)) > 0
        edge = np.where(fired, np.exp2(np.where(fired, exponent, 0).astype(np.float64)), 0.0)
        return Histograms(image, text, edge, int(meta.get("n_pairs", "0")))


def read_result(path: Path, what: str, current: int, keys: tuple[str, ...]) -> dict[str, Any]:
    """A run-level JSON result (``what``: ablation, comparison or study) with its
    ``format_version`` checked and ``keys`` present."""
    data = read_object(path, f"{'an' if what[0] in 'aeiou' else 'a'} {what}")
    _version(data, path, current, 0)
    missing = [k for k in keys if k not in data]
    if missing:
        raise MonoscopeError(f"{path}: not {what} results (no {', '.join(missing)})")
    return data


def read_ablation(path: Path) -> dict[str, Any]:
    """``ablation.json``: ``baseline`` {metric: value}, ``removals`` {group: {...}}, ..."""
    data = read_result(path, "ablation", ABLATION_VERSION, ("baseline", "removals"))
    _dicts(data, path, ("baseline", "removals", "settings", "left_out"))
    return data


def read_compare(path: Path) -> dict[str, Any]:
    """``compare.json``: ``analyses`` [...], ``mds_bins``, ``win_rate`` {metric: {...}}, ..."""
    data = read_result(path, "comparison", COMPARE_VERSION, ("analyses", "win_rate"))
    _dicts(data, path, ("win_rate",))
    if not isinstance(data["analyses"], list):
        raise MonoscopeError(f"{path}: analyses must be a list")
    return data


def read_study(path: Path) -> dict[str, Any]:
    """A case study's JSON summary (``gender.json``, ``adversarial.json``, ``steer.json``)."""
    data = read_result(path, "study", STUDY_VERSION, ())
    _dicts(data, path, ("paper_finding", "settings"))
    return data
