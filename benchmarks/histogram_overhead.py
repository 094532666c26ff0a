"""The exact activation histograms' share of the analysis pass.

Builds a synthetic store (d = 512, unit rows) and a random TopK SAE with 8,192 latents (as
``analysis_streaming.py``), then times, side by side in one run, the histogram accumulator
alone on the feature map's codes (batches of 4,096 pairs; encoding excluded: the pass encodes
once for every accumulator) and the whole default ``analyze`` (which includes it), and prints
the ratio.

    python benchmarks/histogram_overhead.py --pairs 32768
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from analysis_streaming import make_featuremap, make_store

from monoscope.analysis.analyze import analyze
from monoscope.analysis.histograms import HistogramAccumulator
from monoscope.featuremaps import load_featuremap
from monoscope.store import Store


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
        hist, t_hist = HistogramAccumulator(fmap.n_features), 0.0
        with torch.inference_mode():
            for shard in store.shards():
                for lo in range(0, len(shard.image), 4096):
                    codes = [
                        fmap.encode(torch.from_numpy(arr[lo : lo + 4096].copy()), m)
                        for m, arr in (("image", shard.image), ("text", shard.text))
                    ]
                    t0 = time.perf_counter()
                    hist.update(*codes)
                    t_hist += time.perf_counter() - t0
        t0 = time.perf_counter()
        analyze(store, path, Path(tmp) / "analysis", device="cpu", progress=False)
        t_all = time.perf_counter() - t0
    print(f"N={a.pairs:,}: histograms {t_hist:.2f} s, whole analysis {t_all:.1f} s")
    print(f"histograms / analysis = {t_hist / t_all:.3f}")


if __name__ == "__main__":
    main()
