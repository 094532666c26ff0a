"""The share of the analysis pass taken by the modality-gap and the histogram accumulators.

Builds a synthetic store (d = 512, unit rows) and a random TopK SAE with 8,192 latents (as
``analysis_streaming.py``), then times, side by side in one run, each accumulator alone on the
same batches of 4,096 pairs as ``analyze`` feeds it (the gap: 200 Poisson replicates over the
embeddings; the histograms: the map's codes as sparse entries, encoding excluded since the pass
encodes once for every accumulator) and the whole default ``analyze`` (which includes both),
and prints each share.

    python benchmarks/accumulator_share.py --pairs 32768
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
from monoscope.analysis.histograms import HistogramAccumulator
from monoscope.analysis.sparse import SparseCodes
from monoscope.featuremaps import load_featuremap
from monoscope.store import Store

BATCH = 4096


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pairs", type=int, default=32768)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(make_store(Path(tmp) / "store", a.pairs))
        path = make_featuremap(Path(tmp) / "fmap")
        fmap = load_featuremap(path).eval()
        gap, hist = GapAccumulator(DIM, 200, 0), HistogramAccumulator(fmap.n_features)
        seconds = {"gap": 0.0, "histograms": 0.0}
        with torch.inference_mode():
            for shard in store.shards():
                for lo in range(0, len(shard.image), BATCH):
                    img, txt = shard.image[lo : lo + BATCH], shard.text[lo : lo + BATCH]
                    t0 = time.perf_counter()
                    gap.update(img, txt)
                    seconds["gap"] += time.perf_counter() - t0
                    codes = [
                        SparseCodes.from_dense(fmap.encode(torch.from_numpy(x.copy()), m))
                        for m, x in (("image", img), ("text", txt))
                    ]
                    t0 = time.perf_counter()
                    hist.update(*codes)
                    seconds["histograms"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        gap.result()
        seconds["gap"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        analyze(store, path, Path(tmp) / "analysis", device="cpu", progress=False)
        t_all = time.perf_counter() - t0
    print(f"N={a.pairs:,}: whole analysis {t_all:.1f} s")
    for name, t in seconds.items():
        print(f"{name}: {t:.2f} s, share of the analysis {t / t_all:.3f}")


if __name__ == "__main__":
    main()
