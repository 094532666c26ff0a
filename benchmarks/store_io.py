"""Store I/O: ``StoreWriter`` / ``Store`` MB/s vs raw ``np.save`` / ``np.load`` of the same arrays.

Writes N pairs of d-dimensional float32 embeddings (both modalities) in shards of S rows through
the store (atomic per-shard commits, pair records, progress files, manifest merge) and as plain
``.npy`` files of the same shards; then reads them back whole (``Store.load`` of each modality
vs ``np.load`` + concatenate) and stream them shard by shard (``Store.shards`` vs ``np.load``
with ``mmap_mode="r"``, summing each shard so every byte is touched). Runs are interleaved and
repeated; medians and store/raw ratios are printed. MB counts embedding bytes only. Reads come
from the page cache for both sides.

    python benchmarks/store_io.py --pairs 131072 --dim 512 --shard-size 4096
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from monoscope.store import MODALITIES, Store, StoreWriter


def store_write(path: Path, shards: list[dict[str, np.ndarray]], shard_size: int) -> None:
    header = {
        "model": {"kind": "synthetic"},
        "dim": shards[0]["image"].shape[1],
        "normalized": False,
        "source": {"kind": "synthetic"},
        "shard_size": shard_size,
    }
    w = StoreWriter(path, header)
    start = 0
    for b, s in enumerate(shards):
        n = len(s["image"])
        pairs = [
            {"id": str(start + i), "caption": "", "image_ref": "", "labels": {}} for i in range(n)
        ]
        w.add_shard(b, s["image"], s["text"], pairs, Counter())
        start += n
    w.end(start)
    w.finish()


def raw_write(path: Path, shards: list[dict[str, np.ndarray]], shard_size: int) -> None:
    for m in MODALITIES:
        (path / m).mkdir(parents=True, exist_ok=True)
        for b, s in enumerate(shards):
            np.save(path / m / f"{b:05d}.npy", s[m])


def store_read(path: Path) -> list[np.ndarray]:
    store = Store(path)
    return [store.load(m) for m in MODALITIES]


def raw_read(path: Path) -> list[np.ndarray]:
    return [
        np.concatenate([np.load(f) for f in sorted((path / m).glob("*.npy"))]) for m in MODALITIES
    ]


def store_stream(path: Path) -> float:
    return float(sum(s.image.sum() + s.text.sum() for s in Store(path).shards()))


def raw_stream(path: Path) -> float:
    return float(
        sum(
            np.load(f, mmap_mode="r").sum()
            for m in MODALITIES
            for f in sorted((path / m).glob("*.npy"))
        )
    )


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=131072)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, d, size = args.pairs, args.dim, args.shard_size
    shards = [
        {m: rng.standard_normal((min(size, n - lo), d), dtype=np.float32) for m in MODALITIES}
        for lo in range(0, n, size)
    ]
    mb = 2 * n * d * 4 / 1e6
    tmp = Path(tempfile.mkdtemp(prefix="monoscope-store-io-"))
    store, raw = tmp / "store", tmp / "raw"
    times: dict[str, list[float]] = {}
    runs = {
        "write": {
            "store": lambda: store_write(store, shards, size),
            "raw": lambda: raw_write(raw, shards, size),
        },
        "read": {"store": lambda: store_read(store), "raw": lambda: raw_read(raw)},
        "stream": {"store": lambda: store_stream(store), "raw": lambda: raw_stream(raw)},
    }
    for r in range(args.repeats):
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(raw, ignore_errors=True)
        for op, sides in runs.items():
            for side in sorted(sides, reverse=r % 2 == 1):  # alternate who goes first
                times.setdefault(f"{op} {side}", []).append(timed(sides[side]))
    for a, b in zip(store_read(store), raw_read(raw), strict=True):
        np.testing.assert_array_equal(a, b)
    shutil.rmtree(tmp)
    print(f"{n} pairs x {d} dims x 2 modalities float32 = {mb:.0f} MB, shards of {size} rows")
    print(f"{'':<8}{'store MB/s':>12}{'raw MB/s':>10}{'ratio':>7}{'store pairs/s':>15}")
    for op in runs:
        s, r = (mb / statistics.median(times[f"{op} {k}"]) for k in ("store", "raw"))
        print(f"{op:<8}{s:>12.0f}{r:>10.0f}{s / r:>7.3f}{s / mb * n:>15,.0f}")


if __name__ == "__main__":
    main()
