"""Outputs that cannot disagree with their inputs: content fingerprints, checks that an input is
the one an output was made from, and re-hashing for ``doctor --verify`` (docs/integrity.md).

Files are hashed (SHA-256) while they are written, never in a second pass: a store's manifest
records each shard file's digest and size, and ``fingerprint``, the digest of the shard digests
and of ``pairs.jsonl``; a feature map's ``config.json`` records ``weights_sha256`` and the
fingerprint and model of the store it was trained on; an analysis's ``summary.json`` records
both under ``inputs``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._util import MonoscopeError, atomic_write, read_json
from .locks import refuse_if_being_written
from .outputs import kind_of

# ----------------------------------------------------------------------------- hashing


def save_npy_hashed(path: Path, array: np.ndarray) -> tuple[str, int]:
    """Save ``array`` as ``.npy`` atomically; (SHA-256, bytes) of the file, hashed from the
    bytes in memory as they are written (no second pass over the file)."""
    array = np.ascontiguousarray(array)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(array))
    header, data = head.getvalue(), array.data.cast("B")
    sha = hashlib.sha256(header)
    sha.update(data)

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            f.write(header)
            f.write(data)

    atomic_write(path, write)
    return sha.hexdigest(), len(header) + data.nbytes


def write_bytes_hashed(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; its SHA-256."""
    atomic_write(path, lambda p: p.write_bytes(data))
    return hashlib.sha256(data).hexdigest()


def save_safetensors(path: Path, tensors: dict[str, Any]) -> str:
    """Save torch tensors as safetensors atomically (an ``OSError`` on a full disk, not the
    library's own error); the file's SHA-256."""
    from safetensors.torch import save

    return write_bytes_hashed(path, save(tensors))


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def combine(digests: list[str]) -> str:
    """One fingerprint of an ordered list of digests."""
    return "sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()


def append_line(f: Any, line: str, path: Path) -> None:
    """Append one line to ``f`` (a file opened ``"ab", buffering=0``); on failure (a full disk)
    cut the file back to where it was, so no torn line is left, and re-raise naming ``path``."""
    data = (line + "\n").encode()
    pos = os.lseek(f.fileno(), 0, os.SEEK_END)
    try:
        done = 0
        while done < len(data):
            done += f.write(data[done:])
    except OSError as e:
        with contextlib.suppress(OSError):
            os.ftruncate(f.fileno(), pos)
        raise OSError(e.errno, e.strerror, str(path)) from None


# ------------------------------------------------------------------ identities and records


def model_identity(info: Any) -> dict[str, Any]:
    """The part of an encoder's ``info()`` that names the model (not its compute dtype)."""
    info = info if isinstance(info, dict) else {}
    return {k: info.get(k) for k in ("kind", "id", "revision")}


def _model_name(info: Any) -> str:
    m = model_identity(info)
    return f"{m['kind']}:{m['id']}" + (f"@{m['revision']}" if m["revision"] else "")


def store_record(store: Any) -> dict[str, Any]:
    """What an output records about the store it was made from."""
    return {
        "path": str(store.path.resolve()),
        "fingerprint": store.manifest.get("fingerprint"),
        "model": model_identity(store.manifest.get("model")),
        "count": store.count,
    }


def featuremap_record(path: Path) -> dict[str, Any]:
    """What an analysis records about its feature map (from its ``config.json``)."""
    config = _json_object(path / "config.json")
    trained = (config.get("training") or {}).get("store") or {}
    return {
        "path": str(path.resolve()),
        "fingerprint": config.get("weights_sha256"),
        "kind": config.get("kind"),
        "trained_on": {
            "fingerprint": trained.get("fingerprint"),
            "model": model_identity(trained.get("model")) if trained.get("model") else None,
        },
    }


def check_featuremap_for_store(fmap_path: Path, store: Any, force: bool) -> str | None:
    """Refuse a feature map trained on another model's embeddings (unless ``force``); a note
    when it was trained on other data of the same model, or nothing is recorded."""
    trained = featuremap_record(fmap_path)["trained_on"]
    here = model_identity(store.manifest.get("model"))
    if trained["model"] is None:
        return "the feature map records no training store; its model is not checked"
    if trained["model"] != here:
        note = (
            f"the feature map {fmap_path} was trained on embeddings of "
            f"{_model_name(trained['model'])}, the store {store.path} holds {_model_name(here)}"
        )
        if force:
            return note + " (--force)"
        raise MonoscopeError(
            f"{note}; train a feature map on this store (monoscope train --store {store.path}) "
            "or pass --force"
        )
    fp = store.manifest.get("fingerprint")
    if trained["fingerprint"] and fp and trained["fingerprint"] != fp:
        return (
            "the feature map was trained on other data of the same model "
            f"(store {trained['fingerprint'][:19]}), analysed on store {fp[:19]}"
        )
    return None


def check_finished(out: Path, method: str, hparams: dict[str, Any], store: Any) -> None:
    """Refuse ``train --resume`` on a finished map that another command made (other method,
    hyper-parameters or store), instead of returning it as if it were the one asked for."""
    config = _json_object(out / "config.json")
    training = config.get("training") or {}
    asked = {"method": method, "hparams": json.loads(json.dumps(hparams))}
    have = {"method": training.get("method"), "hparams": config.get("hparams")}
    for key in asked:
        if asked[key] != have[key]:
            raise MonoscopeError(
                f"{out}: the finished feature map has {key} {have[key]!r}, not {asked[key]!r}; "
                "pass --overwrite to train it anew"
            )
    rec = (training.get("store") or {}).get("fingerprint")
    fp = store.manifest.get("fingerprint")
    if rec and fp and rec != fp:
        raise MonoscopeError(
            f"{out}: the finished feature map was trained on another store (fingerprint "
            f"{rec[:19]}), not {store.path} ({fp[:19]}); pass --overwrite to train it anew"
        )


def analysis_inputs(store: Any, fmap_path: Path | None, note: str | None) -> dict[str, Any]:
    """The ``inputs`` (and ``notes``) entries of an analysis's summary.json."""
    out: dict[str, Any] = {
        "inputs": {
            "store": store_record(store),
            "featuremap": featuremap_record(fmap_path) if fmap_path else None,
        }
    }
    if note:
        out["notes"] = [note]
    return out


def check_analysis_matches(
    analysis: Path, store: Any | None = None, fmap_path: Path | None = None
) -> dict[str, Any]:
    """Refuse an analysis that was not made from ``store`` / the feature map at ``fmap_path``
    (recorded fingerprints differ); returns its summary ({} when there is none to check)."""
    refuse_if_being_written(analysis, "analysis")
    if not (analysis / "summary.json").is_file():
        return {}
    summary = _json_object(analysis / "summary.json")
    inputs = summary.get("inputs") or {}
    rebuild = f"rerun monoscope analyze with --out {analysis} --overwrite"
    if store is not None:
        rec = (inputs.get("store") or {}).get("fingerprint")
        fp = store.manifest.get("fingerprint")
        if rec and fp and rec != fp:
            raise MonoscopeError(
                f"{analysis}: stale analysis: it was made from a store with fingerprint "
                f"{rec[:19]}, but {store.path} has {fp[:19]} (re-embedded?); {rebuild}"
            )
    if fmap_path is not None:
        rec = (inputs.get("featuremap") or {}).get("fingerprint")
        fp = _json_object(fmap_path / "config.json").get("weights_sha256")
        if rec and fp and rec != fp:
            raise MonoscopeError(
                f"{analysis}: stale analysis: it was made from another feature map than "
                f"{fmap_path} (weights {rec[:12]} != {fp[:12]}); {rebuild}"
            )
    return summary


def check_analysis_current(analysis: Path) -> dict[str, Any]:
    """Refuse an analysis whose recorded store or feature map changed on disk since (those
    that no longer exist are not checked); returns its summary."""
    refuse_if_being_written(analysis, "analysis")
    summary = _json_object(analysis / "summary.json")
    if not isinstance(summary.get("inputs"), dict):
        return summary
    inputs = summary.get("inputs") or {}
    store_path = Path((inputs.get("store") or {}).get("path") or "/nonexistent")
    fmap_path = Path((inputs.get("featuremap") or {}).get("path") or "/nonexistent")
    store = None
    if (store_path / "manifest.json").is_file():
        from .store import Store

        store = Store(store_path)
    fmap = fmap_path if (fmap_path / "config.json").is_file() else None
    return check_analysis_matches(analysis, store, fmap)


def check_pairs_file(store_path: Path) -> None:
    """Refuse a ``pairs.jsonl`` whose checksum differs from its store's manifest (for readers
    that stream it instead of loading it through :meth:`Store.pairs`)."""
    if not (store_path / "manifest.json").is_file():
        return
    manifest = _json_object(store_path / "manifest.json")
    recorded, file = manifest.get("pairs_sha256"), store_path / "pairs.jsonl"
    if recorded and file.is_file() and sha256_file(file) != recorded:
        raise MonoscopeError(
            f"{file}: its checksum differs from the manifest's: the pairs were changed after "
            "the store was written; re-embed it (monoscope embed ... --overwrite)"
        )


def _json_object(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise MonoscopeError(f"{path}: not a JSON object")
    return data


# ------------------------------------------------------------------------------ verify


def verify(path: Path) -> list[str]:
    """Re-hash the files of the store, feature map or analysis at ``path`` (an analysis: its
    store and feature map) against the recorded checksums; the first difference, or []."""
    kind = kind_of(path)
    try:
        if kind == "store":
            return _verify_store(path)
        if kind == "featuremap":
            return _verify_featuremap(path)
        if kind == "analysis":
            check_analysis_current(path)
            inputs = _json_object(path / "summary.json").get("inputs") or {}
            for key, check in (("store", _verify_store), ("featuremap", _verify_featuremap)):
                where = Path((inputs.get(key) or {}).get("path") or "/nonexistent")
                if where.is_dir():
                    problems = check(where)
                    if problems:
                        return problems
            return []
    except MonoscopeError as e:
        return [str(e)]
    return [f"{path}: nothing to verify (not a complete store, feature map or analysis)"]


def _verify_store(path: Path) -> list[str]:
    m = _json_object(path / "manifest.json")
    rebuild = "re-embed it (monoscope embed ... --overwrite)"
    digests = []
    for shard in m.get("shards") or []:
        for modality in ("image", "text"):
            recorded, file = shard.get(f"{modality}_sha256"), path / str(shard.get(modality))
            if not recorded:
                return [f"{path}: no checksums recorded (an older store); {rebuild} to verify it"]
            if not file.is_file():
                return [f"{file}: missing; {rebuild}"]
            if sha256_file(file) != recorded:
                return [f"{file}: checksum differs from the manifest (changed on disk); {rebuild}"]
            digests.append(recorded)
    pairs = path / "pairs.jsonl"
    if not pairs.is_file() or sha256_file(pairs) != m.get("pairs_sha256"):
        return [f"{pairs}: checksum differs from the manifest (changed on disk); {rebuild}"]
    if combine([*digests, m["pairs_sha256"]]) != m.get("fingerprint"):
        return [f"{path}/manifest.json: fingerprint does not match its shard checksums; {rebuild}"]
    return []


def _verify_featuremap(path: Path) -> list[str]:
    recorded = _json_object(path / "config.json").get("weights_sha256")
    weights = path / "model.safetensors"
    if not recorded:
        return [f"{path}: no weights checksum recorded; retrain it to verify it"]
    if not weights.is_file():
        return [f"{weights}: missing"]
    if sha256_file(weights) != recorded:
        return [
            f"{weights}: checksum differs from config.json (changed on disk); retrain it "
            "(monoscope train ... --overwrite)"
        ]
    return []
