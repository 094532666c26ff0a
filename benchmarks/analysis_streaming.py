"""Analysis throughput and memory vs the number of pairs (streaming: memory must not grow).

Builds synthetic stores of N pairs (d = 512, unit rows) and a random TopK SAE with 8,192
latents, then runs ``analyze`` (default settings: evidence verdicts with Fieller intervals,
EmbSim m-sweep, MS, correlations) on each in a fresh subprocess, reporting wall time, pairs/s and peak RSS.

    python benchmarks/analysis_streaming.py --sizes 100000 400000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from monoscope.analysis.analyze import analyze
from monoscope.featuremaps.sae import TopKSAE
from monoscope.store import StoreWriter

DIM, LATENTS, K, SHARD = 512, 8192, 32, 65536


def make_store(path: Path, n: int, seed: int = 0, dim: int = DIM) -> Path:
    """A synthetic store of n unit-norm pairs (text = image + noise) in shards of 65,536."""
    rng = np.random.default_rng(seed)
    shard = min(n, SHARD)
    header = {
        "model": {"kind": "synthetic"},
        "dim": dim,
        "normalized": True,
        "source": {"kind": "synthetic", "n": n},
        "shard_size": shard,
    }
    w = StoreWriter(path, header)
    for b, lo in enumerate(range(0, n, shard)):
        m = min(shard, n - lo)
        img = rng.standard_normal((m, dim), dtype=np.float32)
        txt = img + rng.standard_normal((m, dim), dtype=np.float32)
        img /= np.linalg.norm(img, axis=1, keepdims=True)
        txt /= np.linalg.norm(txt, axis=1, keepdims=True)
        pairs = [
            {"id": str(lo + i), "caption": "", "image_ref": "", "labels": {}} for i in range(m)
        ]
        w.add_shard(b, img, txt, pairs, Counter())
    w.end(n)
    return w.finish()


def make_featuremap(path: Path) -> Path:
    torch.manual_seed(0)
    sae = TopKSAE(DIM, LATENTS, k=K)
    with torch.no_grad():
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(LATENTS, DIM), dim=1))
        sae.W_enc.copy_(sae.W_dec.T)
    return sae.save(path)


def child(store: str, fmap: str, out: str) -> None:
    t0 = time.perf_counter()
    analyze(store, fmap, out, device="cpu", progress=False)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_rss_mb": peak_mb}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000])
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        fmap = make_featuremap(Path(tmp) / "fmap")
        rows = []
        for n in a.sizes:
            store = make_store(Path(tmp) / f"store{n}", n)
            res = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(store),
                    str(fmap),
                    str(Path(tmp) / f"analysis{n}"),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append((n, r["wall_s"], n / r["wall_s"], r["peak_rss_mb"]))
            print(
                f"N={n:>9,}  {r['wall_s']:7.1f} s  {n / r['wall_s']:8.0f} pairs/s  "
                f"peak RSS {r['peak_rss_mb']:7.0f} MB",
                flush=True,
            )
        if len(rows) > 1:
            (n0, t0, _, m0), (n1, t1, _, m1) = rows[0], rows[-1]
            print(
                f"time ratio {t1 / t0:.2f} for size ratio {n1 / n0:.2f}; memory ratio {m1 / m0:.2f}"
            )


if __name__ == "__main__":
    main()
