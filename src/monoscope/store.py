"""The embedding store: paired image/text embeddings, row-aligned by pair, sharded on disk.

Layout of a store directory::

    manifest.json        model, dim, count, dtype, normalised?, shards, source, skipped, versions
    image/00000.npy      (n, d) float32 image embeddings of shard 0 (memory-mappable)
    text/00000.npy       (n, d) float32 text embeddings of shard 0
    pairs.jsonl          one line per stored pair, in row order: id, caption, image_ref, labels

Writing is atomic per shard: the shard's arrays are renamed into place, its pair lines are
appended to ``pairs.jsonl``, and only then is the manifest (which records the shards and the
byte length of ``pairs.jsonl``) replaced. An interrupted writer therefore leaves a consistent
prefix; :class:`StoreWriter` with ``resume=True`` truncates any unrecorded tail and continues.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ._util import MonoscopeError, read_json, save_npy, versions, write_json

FORMAT_VERSION = 1
MODALITIES = ("image", "text")


class StoreWriter:
    """Append shards to a store; resumable after interruption.

    Args:
        path: the store directory.
        header: manifest fields fixed for the whole store (``model``, ``dim``, ``normalized``,
            ``source``, ``shard_size``); on resume they must match the existing manifest.
        resume: continue an incomplete store instead of refusing to touch it.
        overwrite: replace an existing store.
    """

    def __init__(
        self,
        path: str | Path,
        header: dict[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
    ):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if manifest_path.exists() and not overwrite:
            old = read_json(manifest_path)
            if not resume:
                state = "complete" if old.get("complete") else "incomplete"
                raise MonoscopeError(
                    f"{self.path}: a {state} store already exists; pass --resume to continue it "
                    "or --overwrite to replace it"
                )
            for key in ("model", "dim", "normalized", "source", "shard_size"):
                if old.get(key) != header.get(key):
                    raise MonoscopeError(
                        f"{self.path}: cannot resume: '{key}' differs from the existing store "
                        f"({old.get(key)!r} != {header.get(key)!r})"
                    )
            self.manifest = old
            self.manifest["complete"] = False
        else:
            if overwrite and self.path.exists():
                _remove_store_files(self.path)
            self.manifest = {
                "format_version": FORMAT_VERSION,
                "complete": False,
                **header,
                "dtype": "float32",
                "count": 0,
                "consumed": 0,
                "skipped": {"count": 0, "reasons": {}},
                "shards": [],
                "pairs_bytes": 0,
                "versions": versions(),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
        for m in MODALITIES:
            (self.path / m).mkdir(parents=True, exist_ok=True)
        pairs = self.path / "pairs.jsonl"
        pairs.touch()
        with open(pairs, "r+b") as f:  # drop lines of a shard that never reached the manifest
            f.truncate(self.manifest["pairs_bytes"])
        write_json(manifest_path, self.manifest)

    @property
    def consumed(self) -> int:
        """Number of source records already handled (stored or skipped)."""
        return int(self.manifest["consumed"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    def add_shard(
        self,
        image: np.ndarray,
        text: np.ndarray,
        pairs: list[dict[str, Any]],
        consumed: int,
        skipped: Counter[str],
    ) -> None:
        """Write one shard and commit it, with the source position and skip counts so far."""
        n, d = image.shape
        if text.shape != (n, d) or len(pairs) != n or d != self.manifest["dim"]:
            raise ValueError(
                f"shard shapes disagree: image {image.shape}, text {text.shape}, "
                f"{len(pairs)} pairs, store dim {self.manifest['dim']}"
            )
        index = len(self.manifest["shards"])
        names = {m: f"{m}/{index:05d}.npy" for m in MODALITIES}
        save_npy(self.path / names["image"], np.ascontiguousarray(image, dtype=np.float32))
        save_npy(self.path / names["text"], np.ascontiguousarray(text, dtype=np.float32))
        lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs).encode()
        with open(self.path / "pairs.jsonl", "ab") as f:
            f.write(lines)
        self.manifest["shards"].append({**names, "count": n})
        self.manifest["count"] += n
        self.manifest["pairs_bytes"] += len(lines)
        self._set_progress(consumed, skipped)
        write_json(self.path / "manifest.json", self.manifest)

    def finish(self, consumed: int, skipped: Counter[str]) -> Path:
        """Mark the store complete."""
        self._set_progress(consumed, skipped)
        self.manifest["complete"] = True
        write_json(self.path / "manifest.json", self.manifest)
        return self.path

    def _set_progress(self, consumed: int, skipped: Counter[str]) -> None:
        self.manifest["consumed"] = consumed
        self.manifest["skipped"] = {"count": sum(skipped.values()), "reasons": dict(skipped)}


def _remove_store_files(path: Path) -> None:
    for m in MODALITIES:
        for f in (path / m).glob("*.npy"):
            f.unlink()
    for name in ("manifest.json", "pairs.jsonl"):
        (path / name).unlink(missing_ok=True)


@dataclass(frozen=True)
class Shard:
    index: int
    start: int
    image: np.ndarray
    text: np.ndarray


class Store:
    """Read a complete store. Arrays are memory-mapped; nothing is loaded until used."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "manifest.json").is_file():
            raise MonoscopeError(f"{self.path}: not a store (no manifest.json)")
        self.manifest: dict[str, Any] = read_json(self.path / "manifest.json")
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise MonoscopeError(
                f"{self.path}: store format {self.manifest.get('format_version')} is not "
                f"supported (expected {FORMAT_VERSION})"
            )
        if not self.manifest.get("complete"):
            raise MonoscopeError(
                f"{self.path}: the store is incomplete (interrupted embed?); rerun embed with --resume"
            )
        self.dim: int = int(self.manifest["dim"])
        self.count: int = int(self.manifest["count"])
        starts = np.cumsum([0] + [s["count"] for s in self.manifest["shards"]])
        self._starts = starts[:-1].tolist()

    def __len__(self) -> int:
        return self.count

    @property
    def n_shards(self) -> int:
        return len(self.manifest["shards"])

    def shard(self, index: int) -> Shard:
        """Memory-mapped arrays of one shard, validated against the manifest."""
        info = self.manifest["shards"][index]
        arrays = {}
        for m in MODALITIES:
            file = self.path / info[m]
            try:
                arr = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise MonoscopeError(f"{file}: unreadable shard ({e})") from None
            if arr.shape != (info["count"], self.dim) or arr.dtype != np.float32:
                raise MonoscopeError(
                    f"{file}: shape {arr.shape} {arr.dtype} does not match the manifest "
                    f"({info['count']}, {self.dim}) float32"
                )
            arrays[m] = arr
        return Shard(index, self._starts[index], arrays["image"], arrays["text"])

    def shards(self) -> Iterator[Shard]:
        for i in range(self.n_shards):
            yield self.shard(i)

    def load(self, modality: str) -> np.ndarray:
        """All embeddings of one modality as one (N, d) array (for stores that fit in memory)."""
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}")
        if self.count == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([getattr(s, modality) for s in self.shards()])

    def rows(self, modality: str, index: np.ndarray) -> np.ndarray:
        """Gather rows by global index (any shape; -1 entries give zero rows)."""
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}")
        flat = np.asarray(index, dtype=np.int64).reshape(-1)
        if flat.size and (flat.max() >= self.count or flat.min() < -1):
            raise IndexError(f"row index out of range for a store of {self.count} rows")
        out = np.zeros((flat.size, self.dim), np.float32)
        shard_of = np.searchsorted(self._starts, flat, side="right") - 1
        for i in np.unique(shard_of[flat >= 0]):
            sel = (shard_of == i) & (flat >= 0)
            out[sel] = getattr(self.shard(int(i)), modality)[flat[sel] - self._starts[i]]
        return out.reshape(*np.shape(index), self.dim)

    def pairs(self) -> list[dict[str, Any]]:
        """The pair records in row order."""
        with open(self.path / "pairs.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        if len(rows) != self.count:
            raise MonoscopeError(
                f"{self.path}: pairs.jsonl has {len(rows)} rows, the manifest says {self.count}"
            )
        return rows
