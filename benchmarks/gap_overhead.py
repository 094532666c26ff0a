"""The modality gap's share of the analysis pass.

Builds a synthetic store (d = 512, unit rows) and a random TopK SAE with 8,192 latents (as
``analysis_streaming.py``), then times, side by side in one run, the gap accumulator alone
(200 Poisson replicates, batches of 4,096 pairs: what ``analyze`` adds) and the whole default
``analyze`` (which includes it), and prints the ratio.

    python benchmarks/gap_overhead.py --pairs 32768
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from analysis_streaming import DIM, make_featuremap, make_store

from monoscope.analysis.analyze import analyze
from monoscope.analysis.gap import GapAccumulator
from monoscope.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pairs", type=int, default=32768)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(make_store(Path(tmp) / "store", a.pairs))
        fmap = make_featuremap(Path(tmp) / "fmap")
        t0 = time.perf_counter()
        gap = GapAccumulator(DIM, 200, 0)
        for shard in store.shards():
            for lo in range(0, len(shard.image), 4096):
                gap.update(shard.image[lo : lo + 4096], shard.text[lo : lo + 4096])
        gap.result()
        t_gap = time.perf_counter() - t0
        t0 = time.perf_counter()
        analyze(store, fmap, Path(tmp) / "analysis", device="cpu", progress=False)
        t_all = time.perf_counter() - t0
    print(f"N={a.pairs:,}: gap {t_gap:.2f} s, whole analysis {t_all:.1f} s")
    print(f"gap / analysis = {t_gap / t_all:.3f}")


if __name__ == "__main__":
    main()
