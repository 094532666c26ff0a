"""How often a feature's vocabulary name occurs in its own top captions, against random terms.

For every alive feature of an analysis named with ``analyze --vocab``: does its vocabulary
name occur (as a substring, lower case) in one of the captions of its top-10 samples (top
images for ImgD, top captions otherwise)? The same for a random term of the vocabulary, as
the chance level. Prints one line per group.

    python scripts/vocabulary_check.py runs/demo/analysis
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from monoscope.analysis.analyze import read_feature_table
from monoscope.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("analysis", type=Path)
    ap.add_argument("--m", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    table = read_feature_table(a.analysis / "features.csv")
    summary = json.loads((a.analysis / "summary.json").read_text())
    terms = json.loads((a.analysis / "vocabulary" / "vocabulary.json").read_text())["terms"]
    captions = [p["caption"].lower() for p in Store(summary["store"]).pairs()]
    top = {m: np.load(a.analysis / "top" / f"{m}_idx.npy")[:, : a.m] for m in ("image", "text")}
    rng = np.random.default_rng(a.seed)
    for g in sorted(set(table["group"]) - {"dead"}):
        ids = np.flatnonzero(table["group"] == g)
        rows = top["image" if g == "ImgD" else "text"][ids]
        hit = chance = 0
        for k, r in zip(ids, rows, strict=True):
            caps = [captions[j] for j in r if j >= 0]
            hit += any(table["vocab_name"][k] in c for c in caps)
            chance += any(terms[rng.integers(len(terms))] in c for c in caps)
        print(
            f"{g}: vocabulary name in its top-{a.m} captions for {hit}/{len(ids)} "
            f"({hit / len(ids):.0%}); a random term {chance}/{len(ids)} ({chance / len(ids):.0%})"
        )


if __name__ == "__main__":
    main()
