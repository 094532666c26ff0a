"""The embedding store: paired image/text embeddings, row-aligned by pair, sharded on disk.

Layout of a store directory::

    manifest.json        model, dim, count, dtype, normalised?, shards, source, skipped, versions
    image/00000.npy      (n, d) float32 image embeddings of shard 0 (memory-mappable)
    text/00000.npy       (n, d) float32 text embeddings of shard 0
    pairs.jsonl          one line per stored pair, in row order: id, caption, image_ref, labels

Shard b holds the pairs kept from source records [b * shard_size, (b + 1) * shard_size), so
the shards of a store are a pure function of the source, whichever process wrote them. While
writing, each shard is committed on its own (arrays, then ``pairs/BBBBB.jsonl``, then the
writer's ``progress/rank-RRRRR.json``, each atomically); an interrupted writer resumes at its
first uncommitted shard, and data-parallel writers (one per rank) fill disjoint shards of the
same directory. :meth:`StoreWriter.finish` merges the progress files into ``manifest.json`` and
the per-shard pair files into ``pairs.jsonl``; only then is the store ``complete``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ._util import MonoscopeError, atomic_write, read_json, versions, write_json
from .integrity import combine, save_npy_hashed
from .locks import refuse_if_being_written
from .outputs import prepare_out

FORMAT_VERSION = 2
MODALITIES = ("image", "text")
_HEADER_KEYS = ("model", "dim", "normalized", "source", "shard_size")


class StoreWriter:
    """Write the shards of one rank of a store; resumable after interruption.

    Args:
        path: the store directory.
        header: manifest fields fixed for the whole store (``model``, ``dim``, ``normalized``,
            ``source``, ``shard_size``); on resume they must match the existing store.
        resume: continue an incomplete store instead of refusing to touch it.
        overwrite: replace an existing store (rank 0 only).
        rank, world: this writer's rank and the number of writers; rank r writes the shards
            b with b % world == r.
    """

    def __init__(
        self,
        path: str | Path,
        header: dict[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
        rank: int = 0,
        world: int = 1,
    ):
        self.path = Path(path)
        self.rank, self.world = rank, world
        self.header = {k: header[k] for k in _HEADER_KEYS}
        header_path = self.path / "progress" / "header.json"
        manifest = self.path / "manifest.json"
        if rank == 0:
            prepare_out(self.path, "store", overwrite)
        exists = manifest.exists() or header_path.exists()
        if exists and overwrite and rank == 0:
            _remove_store_files(self.path)
            exists = False
        if exists and not (resume or overwrite or rank != 0):  # other ranks join rank 0's
            state = "a complete" if manifest.exists() else "an incomplete"
            raise MonoscopeError(
                f"{self.path}: {state} store already exists; pass --resume to continue it "
                "or --overwrite to replace it"
            )
        if exists:
            old = read_json(manifest if manifest.exists() else header_path)
            for key in _HEADER_KEYS:
                if old.get(key) != self.header[key]:
                    raise MonoscopeError(
                        f"{self.path}: cannot resume: '{key}' differs from the existing store "
                        f"({old.get(key)!r} != {self.header[key]!r})"
                    )
        self.complete = manifest.exists()
        if self.complete:
            return
        for sub in (*MODALITIES, "pairs", "progress"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        if rank == 0 and not header_path.exists():
            write_json(header_path, self.header)
        self._progress_path = self.path / "progress" / f"rank-{rank:05d}.json"
        self.progress: dict[str, Any] = (
            read_json(self._progress_path)
            if self._progress_path.exists()
            else {"rank": rank, "world": world, "shards": {}, "end": None}
        )
        if self.progress["world"] != world:
            raise MonoscopeError(
                f"{self.path}: cannot resume with {world} processes; the run used "
                f"{self.progress['world']}"
            )

    def done(self, shard: int) -> bool:
        """Whether shard ``shard`` was committed by an earlier run."""
        return str(shard) in self.progress["shards"]

    def mine(self, shard: int) -> bool:
        return shard % self.world == self.rank

    def add_shard(
        self,
        shard: int,
        image: np.ndarray,
        text: np.ndarray,
        pairs: list[dict[str, Any]],
        skipped: Counter[str],
    ) -> None:
        """Commit shard ``shard``: its kept rows and the skip counts of its source records."""
        n = len(pairs)
        if image.shape != (n, self.header["dim"]) or text.shape != image.shape:
            raise ValueError(
                f"shard shapes disagree: image {image.shape}, text {text.shape}, {n} pairs, "
                f"store dim {self.header['dim']}"
            )
        name = f"{shard:05d}"
        info: dict[str, Any] = {"count": n, "skipped": dict(+skipped)}
        if n:  # checksums are computed while the bytes are written, not in a second pass
            for m, arr in (("image", image), ("text", text)):
                digest, size = save_npy_hashed(
                    self.path / m / f"{name}.npy", np.ascontiguousarray(arr, np.float32)
                )
                info[f"{m}_sha256"], info[f"{m}_bytes"] = digest, size
        lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)
        atomic_write(self.path / "pairs" / f"{name}.jsonl", lambda p: p.write_text(lines, "utf-8"))
        self.progress["shards"][str(shard)] = info
        write_json(self._progress_path, self.progress)

    def end(self, records: int) -> None:
        """Record that the source ended after ``records`` records (this rank is finished)."""
        self.progress["end"] = records
        write_json(self._progress_path, self.progress)

    def finish(self) -> Path:
        """Merge every rank's shards into ``manifest.json`` + ``pairs.jsonl`` (call once, after
        all ranks called :meth:`end`)."""
        parts = [read_json(p) for p in sorted((self.path / "progress").glob("rank-*.json"))]
        worlds = {p["world"] for p in parts}
        if (
            len(parts) != self.world
            or worlds != {self.world}
            or any(p["end"] is None for p in parts)
        ):
            raise MonoscopeError(f"{self.path}: not every writer has finished; rerun with --resume")
        records = parts[0]["end"]
        n_shards = -(-records // self.header["shard_size"])
        shards = {int(b): info for p in parts for b, info in p["shards"].items()}
        missing = sorted(set(range(n_shards)) - set(shards))
        if missing:
            raise MonoscopeError(
                f"{self.path}: shards {missing[:5]} are missing; rerun with --resume"
            )
        skipped: Counter[str] = Counter()
        entries = []
        for b in range(n_shards):
            skipped.update(shards[b]["skipped"])
            if shards[b]["count"]:
                entries.append(
                    {
                        "image": f"image/{b:05d}.npy",
                        "text": f"text/{b:05d}.npy",
                        "count": shards[b]["count"],
                        **{k: v for k, v in shards[b].items() if k.endswith(("_sha256", "_bytes"))},
                    }
                )

        if not entries:
            raise MonoscopeError(
                f"no pair could be embedded ({sum(skipped.values())} skipped: {dict(skipped)})"
            )
        if len({p["end"] for p in parts}) != 1:
            raise MonoscopeError(f"{self.path}: writers disagree on the length of the source")

        digest, seen = hashlib.sha256(), dict[str, int]()

        def merge(tmp: Path) -> None:
            with open(tmp, "wb") as out:
                for b in range(n_shards):
                    with open(self.path / "pairs" / f"{b:05d}.jsonl", "rb") as f:
                        data = f.read()
                    _check_ids(data, seen, len(seen))
                    digest.update(data)
                    out.write(data)

        atomic_write(self.path / "pairs.jsonl", merge)
        pairs_sha = digest.hexdigest()
        shard_digests = [e.get(f"{m}_sha256", "") for e in entries for m in MODALITIES]
        manifest = {
            "format_version": FORMAT_VERSION,
            **self.header,
            "dtype": "float32",
            "count": sum(e["count"] for e in entries),
            "records": records,
            "skipped": {"count": sum(skipped.values()), "reasons": dict(skipped)},
            "shards": entries,
            "pairs_sha256": pairs_sha,
            "pairs_bytes": (self.path / "pairs.jsonl").stat().st_size,
            "fingerprint": combine([*shard_digests, pairs_sha]) if all(shard_digests) else None,
            "writers": self.world,
            "versions": versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(self.path / "manifest.json", manifest)
        shutil.rmtree(self.path / "pairs")
        shutil.rmtree(self.path / "progress")
        for m in MODALITIES:  # temporary files of writes a killed writer never finished
            for tmp in (self.path / m).glob(".*.tmp"):
                tmp.unlink()
        self.complete = True
        return self.path


def _check_ids(data: bytes, seen: dict[str, int], row: int) -> None:
    """Refuse a pair id that an earlier row already has (``seen``: id -> row). ``data`` is
    JSON lines (no raw newline inside a record), parsed as one array: one C call per shard."""
    records = json.loads(b"[" + data.rstrip(b"\n").replace(b"\n", b",") + b"]") if data else []
    for i, pid in enumerate((r["id"] for r in records), row):
        if pid in seen:
            raise MonoscopeError(
                f"pair id {pid!r} occurs twice (stored rows {seen[pid]} and {i}); ids must be "
                "unique: fix the data and rerun embed with --overwrite"
            )
        seen[pid] = i


def _remove_store_files(path: Path) -> None:
    for m in MODALITIES:
        for f in (path / m).glob("*.npy"):
            f.unlink()
    for name in ("manifest.json", "pairs.jsonl"):
        (path / name).unlink(missing_ok=True)
    for sub in ("pairs", "progress"):
        shutil.rmtree(path / sub, ignore_errors=True)


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
        refuse_if_being_written(self.path, "store")
        if not (self.path / "manifest.json").is_file():
            if (self.path / "progress").is_dir():
                raise MonoscopeError(
                    f"{self.path}: the store is incomplete (interrupted embed?); "
                    "rerun embed with --resume"
                )
            raise MonoscopeError(f"{self.path}: not a store (no manifest.json)")
        self.manifest: dict[str, Any] = read_json(self.path / "manifest.json")
        if not isinstance(self.manifest, dict):
            raise MonoscopeError(f"{self.path}/manifest.json: not a JSON object")
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise MonoscopeError(
                f"{self.path}: store format {self.manifest.get('format_version')} is not "
                f"supported (expected {FORMAT_VERSION})"
            )
        self._check_cheap()
        self.dim: int = int(self.manifest["dim"])
        self.count: int = int(self.manifest["count"])
        starts = np.cumsum([0] + [s["count"] for s in self.manifest["shards"]])
        self._starts = starts[:-1].tolist()

    def _check_cheap(self) -> None:
        """Fields, shard counts and file sizes (one stat per file) against the manifest."""
        m, where = self.manifest, f"{self.path}/manifest.json"
        shards = m.get("shards")
        ok = (
            _is_int(m.get("dim"), 1)
            and _is_int(m.get("count"), 0)
            and isinstance(shards, list)
            and all(isinstance(s, dict) and _is_int(s.get("count"), 1) for s in shards)
        )
        if not ok or not isinstance(shards, list):
            raise MonoscopeError(f"{where}: missing or invalid dim, count or shards (damaged?)")
        if sum(s["count"] for s in shards) != m["count"]:
            raise MonoscopeError(f"{where}: the shard counts do not add up to count {m['count']}")
        sized = [
            (s.get(f"{k}_bytes"), self.path / str(s.get(k))) for s in shards for k in MODALITIES
        ]
        sized.append((m.get("pairs_bytes"), self.path / "pairs.jsonl"))
        for size, file in sized:
            if size is not None and (not file.is_file() or file.stat().st_size != size):
                state = f"{file.stat().st_size} bytes" if file.is_file() else "missing"
                raise MonoscopeError(
                    f"{file}: {state}, the manifest says {size} bytes: the store was changed "
                    "after it was written; re-embed it (monoscope embed ... --overwrite)"
                )

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
        """The pair records in row order (checked against the manifest's checksum)."""
        file = self.path / "pairs.jsonl"
        try:
            data = file.read_bytes()
        except OSError as e:
            raise MonoscopeError(f"{file}: unreadable ({e.strerror})") from None
        recorded = self.manifest.get("pairs_sha256")
        if recorded and hashlib.sha256(data).hexdigest() != recorded:
            raise MonoscopeError(
                f"{file}: its checksum differs from the manifest's: the pairs were changed after "
                "the store was written; re-embed it (monoscope embed ... --overwrite)"
            )
        rows = []
        for n, line in enumerate(data.splitlines(), 1):
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                row = None
            if not isinstance(row, dict) or "id" not in row or "caption" not in row:
                raise MonoscopeError(f"{file}: line {n} is not a pair record (damaged?)")
            rows.append(row)
        if len(rows) != self.count:
            raise MonoscopeError(
                f"{self.path}: pairs.jsonl has {len(rows)} rows, the manifest says {self.count}"
            )
        if len({str(r["id"]) for r in rows}) != len(rows):
            raise MonoscopeError(f"{file}: a pair id occurs twice (a duplicated line?)")
        return rows


def _is_int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low
