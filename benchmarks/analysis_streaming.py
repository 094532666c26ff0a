"""Analysis throughput and memory vs the number of pairs, side by side with a baseline commit.

Builds synthetic stores of N pairs (d = 512, unit rows) and a random TopK SAE with 8,192
latents (k = 32), then runs ``analyze`` with each version's own defaults (here: evidence
verdicts with Fieller intervals, top-50 heaps, EmbSim m-sweep with 1,000 random sets, MS,
cross-modal correlation, modality gap with 200 replicates) in a fresh child process, importing
monoscope either from this checkout's ``src`` or from the baseline commit's ``src`` (extracted
with ``git archive``). Rounds alternate which version runs first. It prints every run's wall
time, pairs/s and peak RSS, then per N the medians, the per-round speed ratios and their
median, and the peak-RSS ratio across sizes (memory must not grow with N). ``--no-baseline``
times this checkout only.

    python benchmarks/analysis_streaming.py --sizes 65536 --rounds 3
    python benchmarks/analysis_streaming.py --sizes 16384 131072 --no-baseline
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
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from monoscope.featuremaps.sae import TopKSAE
from monoscope.store import StoreWriter

ROOT = Path(__file__).resolve().parents[1]
DIM, LATENTS, K, SHARD = 512, 8192, 32, 65536
BASELINE = "9ae740f"  # the last commit before the sparse analysis pass's predecessors

CHILD = r"""
import json, resource, sys, time
import torch
if sys.argv[4] != "0":
    torch.set_num_threads(int(sys.argv[4]))
from monoscope.analysis.analyze import analyze
t = time.perf_counter()
analyze(sys.argv[1], sys.argv[2], sys.argv[3], device="cpu", progress=False)
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


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


def run_child(src: Path, store: Path, fmap: Path, out: Path, threads: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(store), str(fmap), str(out), str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def baseline_src(commit: str, tmp: Path) -> Path:
    archive = tmp / "base.tar"
    subprocess.run(
        ["git", "-C", str(ROOT), "archive", "-o", str(archive), commit, "src"], check=True
    )
    with tarfile.open(archive) as tf:
        tf.extractall(tmp / "base", filter="data")
    return tmp / "base" / "src"


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[65536])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", default=BASELINE, help="git commit to compare against")
    ap.add_argument("--no-baseline", action="store_true", help="time this checkout only")
    ap.add_argument(
        "--threads", type=int, default=0, help="CPU threads per run (torch and BLAS; 0: defaults)"
    )
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = {"current": ROOT / "src"}
        if not a.no_baseline:
            sources = {"baseline": baseline_src(a.baseline, tmp), **sources}
        fmap = make_featuremap(tmp / "fmap")
        print(
            f"baseline {a.baseline if not a.no_baseline else '-'}; threads "
            f"{a.threads or torch.get_num_threads()}; load average {load()}"
        )
        results: dict[tuple[int, str], list[dict[str, float]]] = {}
        for n in a.sizes:
            store = make_store(tmp / f"store{n}", n)
            for r in range(a.rounds):
                order = list(sources) if r % 2 == 0 else list(sources)[::-1]
                for name in order:
                    res = run_child(
                        sources[name], store, fmap, tmp / f"out-{name}-{n}-{r}", a.threads
                    )
                    results.setdefault((n, name), []).append(res)
                    print(
                        f"N={n:>9,} round {r + 1} {name:>8}: {res['wall_s']:7.1f} s  "
                        f"{n / res['wall_s']:7.0f} pairs/s  peak RSS {res['peak_rss_mb']:6.0f} MB"
                        f"  (load {load()})",
                        flush=True,
                    )
        print("\nmedians:")
        for n in a.sizes:
            med = {s: statistics.median(x["wall_s"] for x in results[n, s]) for s in sources}
            rss = {s: statistics.median(x["peak_rss_mb"] for x in results[n, s]) for s in sources}
            line = ", ".join(
                f"{s} {med[s]:.1f} s = {n / med[s]:.0f} pairs/s, {rss[s]:.0f} MB" for s in sources
            )
            if "baseline" in sources:
                ratios = [
                    b["wall_s"] / c["wall_s"]
                    for b, c in zip(results[n, "baseline"], results[n, "current"], strict=True)
                ]
                line += (
                    f"; speed-up per round {', '.join(f'{x:.2f}' for x in ratios)}, "
                    f"median {statistics.median(ratios):.2f}"
                )
            print(f"N={n:>9,}: {line}")
        if len(a.sizes) > 1:
            (n0, n1), cur = (a.sizes[0], a.sizes[-1]), "current"
            t0, t1 = (statistics.median(x["wall_s"] for x in results[n, cur]) for n in (n0, n1))
            m0, m1 = (
                statistics.median(x["peak_rss_mb"] for x in results[n, cur]) for n in (n0, n1)
            )
            print(
                f"current: time ratio {t1 / t0:.2f} for size ratio {n1 / n0:.2f}; "
                f"peak-RSS ratio {m1 / m0:.2f}"
            )
        print(f"load average at the end {load()}")


if __name__ == "__main__":
    main()
