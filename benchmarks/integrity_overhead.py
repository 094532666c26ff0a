"""What checksums, fingerprints and input checks cost: this checkout vs a baseline commit.

Each workload runs in a fresh child process importing monoscope either from this checkout's
``src`` or from the baseline commit's ``src`` (extracted with ``git archive``); the child times
the workload only (not its imports), in wall-clock and in process CPU time (the steadier of
the two on a shared machine). Rounds alternate baseline / current; medians and the
current/baseline ratios are printed (1.00 = no cost; the goal is <= 1.05).

Workloads:
  write    StoreWriter shards + finish of N synthetic (N, d) float32 pairs (the worst case:
           nothing but writing, so hashing is the largest share it can be)
  embed    ``embed("pocket", jsonl of 64x64 PNGs)`` (the fastest real encoder)
  analyze  ``analyze`` of a synthetic store through a TopK SAE (bootstrap 50)

    python benchmarks/integrity_overhead.py --baseline HEAD~3 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, shutil
from collections import Counter
from pathlib import Path
import numpy as np
import torch
torch.set_num_threads(1)
work, data = sys.argv[1], Path(sys.argv[2])
out = data / f"out-{sys.argv[3]}"
shutil.rmtree(out, ignore_errors=True)
if work == "write":
    from monoscope.store import StoreWriter
    x = np.load(data / "x.npy")
    header = {"model": {"kind": "synthetic"}, "dim": x.shape[1], "normalized": False,
              "source": {"kind": "synthetic"}, "shard_size": 4096}
    t, c = time.perf_counter(), time.process_time()
    w = StoreWriter(out, header)
    for b, lo in enumerate(range(0, len(x), 4096)):
        rows = x[lo:lo + 4096]
        pairs = [{"id": str(lo + i), "caption": "c", "image_ref": "", "labels": {}}
                 for i in range(len(rows))]
        w.add_shard(b, rows, rows[::-1].copy(), pairs, Counter())
    w.end(len(x))
    w.finish()
elif work == "embed":
    from monoscope.embed import embed
    t, c = time.perf_counter(), time.process_time()
    embed("pocket", str(data / "pairs.jsonl"), out, device="cpu", progress=False,
          batch_size=64, shard_size=256)
else:
    from monoscope.analysis.analyze import analyze
    t, c = time.perf_counter(), time.process_time()
    analyze(data / "store", data / "fmap", out, bootstrap=50, device="cpu", progress=False)
print(json.dumps([time.perf_counter() - t, time.process_time() - c]))
"""


def prepare(data: Path, pairs: int, dim: int, images: int) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from monoscope.featuremaps.train import train_featuremap
    from monoscope.store import StoreWriter

    rng = np.random.default_rng(0)
    x = rng.standard_normal((pairs, dim)).astype(np.float32)
    np.save(data / "x.npy", x)
    (data / "img").mkdir()
    lines = []
    for i in range(images):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            data / "img" / f"{i}.png"
        )
        lines.append(json.dumps({"image": f"img/{i}.png", "caption": f"a photo number {i}"}))
    (data / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    header = {
        "model": {"kind": "synthetic"},
        "dim": dim,
        "normalized": False,
        "source": {"kind": "synthetic"},
        "shard_size": 4096,
    }
    from collections import Counter

    w = StoreWriter(data / "store", header)
    for b, lo in enumerate(range(0, pairs, 4096)):
        rows = x[lo : lo + 4096]
        recs = [{"id": str(lo + i), "caption": f"c {lo + i}", "image_ref": "", "labels": {}}
                for i in range(len(rows))]  # fmt: skip
        w.add_shard(b, rows, np.roll(rows, 1, axis=1), recs, Counter())
    w.end(pairs)
    w.finish()
    torch.set_num_threads(1)
    train_featuremap(
        data / "store", "sae-topk", data / "fmap", latents=1024, k=16, steps=50, progress=False
    )


def run_child(src: Path, work: str, data: Path, tag: str) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", CHILD, work, str(data), tag],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="git commit to compare against")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=65536)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--work", nargs="+", default=["write", "embed", "analyze"])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive = tmp / "base.tar"
        subprocess.run(
            ["git", "-C", str(ROOT), "archive", "-o", str(archive), a.baseline, "src"], check=True
        )
        with tarfile.open(archive) as tf:
            tf.extractall(tmp / "base", filter="data")
        sources = {"baseline": tmp / "base" / "src", "current": ROOT / "src"}
        data = tmp / "data"
        data.mkdir()
        t = time.perf_counter()
        prepare(data, a.pairs, a.dim, a.images)
        print(f"data ready in {time.perf_counter() - t:.1f} s; baseline {a.baseline}")
        for work in a.work:
            runs: dict[str, list[list[float]]] = {k: [] for k in sources}
            for r in range(a.rounds):
                order = list(sources) if r % 2 == 0 else list(sources)[::-1]
                for name in order:
                    runs[name].append(run_child(sources[name], work, data, name))
            for i, clock in enumerate(("wall", "cpu")):
                med = {k: statistics.median(x[i] for x in v) for k, v in runs.items()}
                print(
                    f"{work:>8} {clock}: baseline {med['baseline']:.3f} s, current "
                    f"{med['current']:.3f} s, current/baseline "
                    f"{med['current'] / med['baseline']:.3f}  (medians of {a.rounds}; all: "
                    + ", ".join(f"{k} {[round(x[i], 3) for x in v]}" for k, v in runs.items())
                    + ")",
                    flush=True,
                )


if __name__ == "__main__":
    main()
