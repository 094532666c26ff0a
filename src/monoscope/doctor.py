"""``monoscope doctor``: validate a store, feature map or analysis directory.

:func:`diagnose` finds out what a directory is and returns its problems, one line each (an empty
list means it is sound). It reads everything it checks (every shard, every row of
``pairs.jsonl``), in bounded memory, and never raises on a damaged artefact.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from ._util import MonoscopeError, read_json
from .artefacts import REQUIRED_COLUMNS, Analysis, read_feature_table
from .locks import writer_of
from .store import FORMAT_VERSION, MODALITIES

CHUNK = 65536  # rows per finite/norm check
TOP_FILES = [f"top/{m}_{kind}.npy" for m in MODALITIES for kind in ("idx", "val")]


def detect(path: str | Path) -> str | None:
    """``store``, ``featuremap``, ``analysis`` or None, from the files in directory ``path``."""
    path = Path(path)
    if (path / "manifest.json").exists() or (path / "progress").is_dir():
        return "store"
    if (path / "config.json").exists() or (path / "checkpoints").is_dir():
        return "featuremap"
    if (path / "summary.json").exists() or (path / "features.csv").exists():
        return "analysis"
    return None


def diagnose(path: str | Path) -> list[str]:
    """The problems of the artefact at ``path``, one line each; ``[]`` when it is sound."""
    path = Path(path)
    if not path.is_dir():
        return [f"{path}: {'not a directory' if path.exists() else 'does not exist'}"]
    holder = writer_of(path)
    if holder:
        return [f"{path}: being written now ({holder}); check it when that command has finished"]
    kind = detect(path)
    if kind is None:
        return [
            f"{path}: not a store, feature map or analysis "
            "(no manifest.json, config.json or summary.json)"
        ]
    check: Callable[[Path], Iterator[str]] = {
        "store": check_store,
        "featuremap": check_featuremap,
        "analysis": check_analysis,
    }[kind]
    problems: list[str] = []
    try:
        problems.extend(check(path))
    except MonoscopeError as e:  # e.g. a JSON file that does not parse
        problems.append(str(e))
    except Exception as e:  # a damaged artefact must give a report, not a traceback
        problems.append(f"{path}: cannot be checked further ({_error(e)})")
    return problems


def check_store(path: Path) -> Iterator[str]:
    """Manifest fields, shard files (shape, dtype, finite rows, unit norms) and pairs.jsonl."""
    if not (path / "manifest.json").exists():
        yield from _check_incomplete_store(path)
        return
    m = _json(path / "manifest.json")
    if m.get("format_version") != FORMAT_VERSION:
        yield (
            f"{path}/manifest.json: format_version {m.get('format_version')!r}, "
            f"expected {FORMAT_VERSION}"
        )
        return
    bad = _bad_fields(
        m,
        {
            "dim": lambda v: _int(v) and v > 0,
            "count": lambda v: _int(v) and v >= 0,
            "records": lambda v: _int(v) and v >= 0,
            "shard_size": lambda v: _int(v) and v > 0,
            "normalized": lambda v: isinstance(v, bool),
            "dtype": lambda v: v == "float32",
            "model": lambda v: isinstance(v, dict),
            "source": lambda v: isinstance(v, dict),
            "skipped": lambda v: isinstance(v, dict) and _int(v.get("count")),
            "shards": lambda v: (
                isinstance(v, list) and all(isinstance(s, dict) and _int(s.get("count")) for s in v)
            ),
        },
    )
    if bad:
        yield f"{path}/manifest.json: missing or invalid fields: {', '.join(bad)}"
        return
    dim, count = m["dim"], m["count"]
    total = sum(s["count"] for s in m["shards"])
    if total != count:
        yield f"{path}/manifest.json: the shard counts add up to {total}, not count {count}"
    if m["records"] != count + m["skipped"]["count"]:
        yield (
            f"{path}/manifest.json: records {m['records']} != count {count} + skipped "
            f"{m['skipped']['count']}"
        )
    for shard in m["shards"]:
        for modality in MODALITIES:
            yield from _check_shard(path, shard, modality, dim, m["normalized"])
    yield from _check_pairs(path / "pairs.jsonl", count)


def _check_incomplete_store(path: Path) -> Iterator[str]:
    header = _json(path / "progress" / "header.json")
    ranks = [_json(p) for p in sorted((path / "progress").glob("rank-*.json"))]
    shards = {int(b): info for r in ranks for b, info in r.get("shards", {}).items()}
    yield (
        f"{path}: incomplete store ({len(shards)} shards of {header.get('shard_size')} records "
        f"committed by {len(ranks)} writer(s)); rerun the same embed command with --resume"
    )
    for b, info in sorted(shards.items()):
        if not (path / "pairs" / f"{b:05d}.jsonl").is_file():
            yield f"{path}: committed shard {b} has no pairs/{b:05d}.jsonl"
        if info.get("count"):
            shard = {m: f"{m}/{b:05d}.npy" for m in MODALITIES} | {"count": info["count"]}
            for modality in MODALITIES:
                yield from _check_shard(path, shard, modality, header.get("dim"), False)


def _check_shard(
    path: Path, shard: dict[str, Any], modality: str, dim: Any, normalized: bool
) -> Iterator[str]:
    file = path / str(shard.get(modality))
    if not file.is_file():
        yield f"{file}: shard file is missing"
        return
    try:
        arr = np.load(file, mmap_mode="r")
    except (OSError, ValueError) as e:
        yield f"{file}: unreadable ({_error(e)})"
        return
    if arr.shape != (shard["count"], dim) or arr.dtype != np.float32:
        yield (
            f"{file}: shape {arr.shape} {arr.dtype}, the manifest says "
            f"({shard['count']}, {dim}) float32"
        )
        return
    nonfinite = off_norm = 0
    for lo in range(0, len(arr), CHUNK):
        x = np.asarray(arr[lo : lo + CHUNK], dtype=np.float64)
        finite = np.isfinite(x).all(axis=1)
        nonfinite += int((~finite).sum())
        if normalized:
            off_norm += int((np.abs(np.linalg.norm(x[finite], axis=1) - 1) > 1e-3).sum())
    if nonfinite:
        yield f"{file}: {nonfinite} rows contain NaN or inf"
    if off_norm:
        yield f"{file}: {off_norm} rows are not unit-norm, but the store is normalized"


def _check_pairs(file: Path, count: int) -> Iterator[str]:
    if not file.is_file():
        yield f"{file}: missing"
        return
    lines, first_bad = 0, None
    with open(file, "rb") as f:
        for lines, raw in enumerate(f, 1):
            if first_bad is None:
                try:
                    row = json.loads(raw)
                    ok = isinstance(row, dict) and {"id", "caption", "image_ref"} <= row.keys()
                except (ValueError, RecursionError):
                    ok = False
                if not ok:
                    first_bad = lines
    if lines != count:
        yield f"{file}: {lines} lines, the manifest's count is {count}"
    if first_bad is not None:
        yield f"{file}: line {first_bad} is not a pair record (id, caption, image_ref)"


def check_featuremap(path: Path) -> Iterator[str]:
    """config.json, model.safetensors (loads, finite, dims) and the training store's dim."""
    from .featuremaps import load_featuremap

    if not (path / "config.json").exists():
        yield (
            f"{path}: incomplete feature map (a checkpoint but no config.json); "
            "rerun the same train command with --resume"
        )
        return
    config = _json(path / "config.json")
    bad = _bad_fields(
        config,
        {
            "kind": lambda v: isinstance(v, str),
            "dim": lambda v: _int(v) and v > 0,
            "n_features": lambda v: _int(v) and v > 0,
            "hparams": lambda v: isinstance(v, dict),
        },
    )
    if bad:
        yield f"{path}/config.json: missing or invalid fields: {', '.join(bad)}"
        return
    try:
        fmap = load_featuremap(path, verify=False)  # checksums: doctor --verify
    except MonoscopeError as e:
        yield str(e)
        return
    except Exception as e:  # safetensors / state-dict errors
        yield f"{path}/model.safetensors: does not load ({_error(e)})"
        return
    if (fmap.dim, fmap.n_features) != (config["dim"], config["n_features"]):
        yield (
            f"{path}/config.json: dim {config['dim']}, n_features {config['n_features']}, "
            f"but the weights give {fmap.dim}, {fmap.n_features}"
        )
    bad_tensors = [k for k, v in fmap.state_dict().items() if not v.isfinite().all()]
    if bad_tensors:
        yield f"{path}/model.safetensors: NaN or inf in {', '.join(bad_tensors)}"
    store = ((config.get("training") or {}).get("store") or {}).get("path")
    if store and (Path(store) / "manifest.json").is_file():
        dim = _json(Path(store) / "manifest.json").get("dim")
        if dim != config["dim"]:
            yield f"{path}: dim {config['dim']}, but its training store {store} has dim {dim}"


def check_analysis(path: Path) -> Iterator[str]:
    """Files present, summary.json (format_version), features.csv rows, top arrays, the
    histograms, and the store and feature map it names."""
    missing = [f for f in ("features.csv", "summary.json", *TOP_FILES) if not (path / f).is_file()]
    if missing:
        yield f"{path}: missing {', '.join(missing)}"
    if "summary.json" in missing:
        return
    analysis = Analysis(path)
    summary = analysis.summary.raw  # a MonoscopeError (old, newer, corrupt) is the problem
    bad = _bad_fields(
        summary,
        {
            "n_features": lambda v: _int(v) and v > 0,
            "n_pairs": lambda v: _int(v) and v >= 0,
            "top_kept": lambda v: _int(v) and v > 0,
        },
    )
    if bad:
        yield f"{path}/summary.json: missing or invalid fields: {', '.join(bad)}"
        return
    k, n, kept = summary["n_features"], summary["n_pairs"], summary["top_kept"]
    yield from _check_grouping(path, summary)
    if "features.csv" not in missing:
        yield from _check_features_csv(path / "features.csv", k)
    for name in TOP_FILES:
        if name not in missing:
            yield from _check_top(path / name, k, kept, n)
    try:
        _ = analysis.histograms
    except MonoscopeError as e:
        yield str(e)
    store, fmap = summary.get("store"), summary.get("featuremap")
    store_dim = fmap_dim = None
    if store:
        if not (Path(store) / "manifest.json").is_file():
            yield f"{path}: its store {store} does not exist (moved or deleted?)"
        else:
            manifest = _json(Path(store) / "manifest.json")
            store_dim = manifest.get("dim")
            if manifest.get("count") != n:
                yield f"{path}: n_pairs {n}, but its store {store} has {manifest.get('count')}"
    if fmap:
        if not (Path(fmap) / "config.json").is_file():
            yield f"{path}: its feature map {fmap} does not exist (moved or deleted?)"
        else:
            config = _json(Path(fmap) / "config.json")
            fmap_dim = config.get("dim")
            if config.get("n_features") != k:
                yield (
                    f"{path}: n_features {k}, but its feature map {fmap} has "
                    f"{config.get('n_features')}"
                )
    if store_dim is not None and fmap_dim is not None and store_dim != fmap_dim:
        yield f"{path}: its store has dim {store_dim} but its feature map dim {fmap_dim}"


def _number(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_grouping(path: Path, summary: dict[str, Any]) -> Iterator[str]:
    """Thresholds inside [0, 1] and in order."""
    grouping = summary.get("grouping")
    if isinstance(grouping, dict):
        low, high = grouping.get("low"), grouping.get("high")
        if not (_number(low) and _number(high) and 0 <= low <= high <= 1):
            yield (
                f"{path}: grouping thresholds low {low}, high {high} are not inside [0, 1] "
                "(re-run monoscope analyze)"
            )


def _check_features_csv(file: Path, k: int) -> Iterator[str]:
    try:
        table = read_feature_table(file)
    except MonoscopeError as e:
        yield str(e)
        return
    rows = len(next(iter(table.values()), ()))
    absent = [c for c in REQUIRED_COLUMNS if c not in table]
    if absent:
        yield f"{file}: no column {', '.join(absent)}"
    if rows != k:
        yield f"{file}: {rows} rows, summary.json says n_features {k}"


def _check_top(file: Path, k: int, kept: int, n: int) -> Iterator[str]:
    try:
        arr = np.load(file, mmap_mode="r")
    except (OSError, ValueError) as e:
        yield f"{file}: unreadable ({_error(e)})"
        return
    if arr.shape != (k, kept):
        yield f"{file}: shape {arr.shape}, expected ({k}, {kept}) (n_features, top_kept)"
        return
    if file.name.endswith("_idx.npy"):
        if arr.dtype.kind not in "iu":
            yield f"{file}: dtype {arr.dtype}, expected integers"
        elif arr.size and (arr.min() < -1 or arr.max() >= n):
            yield f"{file}: row indices outside [-1, {n})"
    elif arr.dtype.kind != "f" or not np.isfinite(arr).all():
        yield f"{file}: values are not finite floats"


def _json(file: Path) -> dict[str, Any]:
    data = read_json(file)  # MonoscopeError names the file; diagnose reports it
    if not isinstance(data, dict):
        raise MonoscopeError(f"{file}: not a JSON object")
    return data


def _bad_fields(obj: dict[str, Any], rules: dict[str, Callable[[Any], bool]]) -> list[str]:
    return [key for key, ok in rules.items() if key not in obj or not ok(obj[key])]


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _error(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
