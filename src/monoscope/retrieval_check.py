"""A fresh store's own retrieval: does the encoder match its images to their captions at all?

After embedding, a seeded sample of up to ``SAMPLE`` pairs with distinct captions is scored
in-batch: the share of sampled images whose own caption is the most similar of the sample's
captions (image→text recall@1; ties count as misses), and the same text→image. The result is
recorded in the store's manifest (``retrieval_check``). Features of an encoder that cannot tell
its pairs apart say little about its modalities, so a warning is given when the built-in pocket
model, trained on emoji only, scores below ``POCKET_MIN_R1`` on other data.

Why 0.5 (measured with ``scripts/pocket_retrieval_check.py``; 256 pairs, chance 0.004): the
pocket model scores 0.98 on the emoji it was trained on and 0.92 on its held-out skin-tone
variants, but 0.008 on coloured shapes captioned by colour, shape, size and position, 0.014 on
72 rendered words (chance 0.014) and 0.008 on noise images: on data unlike emoji it is at
chance, and 0.5 lies far from both.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ._util import write_json
from .featuremaps.metrics import recall_at_1
from .store import Store

SAMPLE = 256
POCKET_MIN_R1 = 0.5
MIN_WARN_SAMPLE = 8  # below this many distinct captions, in-batch recall is too coarse to judge


def retrieval_check(
    store: Store, sample: int = SAMPLE, seed: int = 0, among: np.ndarray | None = None
) -> dict[str, Any]:
    """In-batch recall@1 of a seeded sample of pairs with distinct captions (module docstring),
    drawn from the rows ``among`` (default: all)."""
    pairs = store.pairs()
    among = np.arange(len(pairs)) if among is None else np.asarray(among, np.int64)
    _, first = np.unique(
        np.array([pairs[i]["caption"] for i in among], dtype=str), return_index=True
    )
    rows = among[first]
    rows = np.sort(np.random.default_rng(seed).choice(rows, min(sample, rows.size), False))
    i2t, t2i = recall_at_1(store.rows("image", rows), store.rows("text", rows))
    return {
        "i2t@1": round(i2t, 4),
        "t2i@1": round(t2i, 4),
        "n_pairs": int(rows.size),
        "chance": round(1.0 / max(rows.size, 1), 4),
        "seed": seed,
        "what": "in-batch recall@1 over a seeded sample of pairs with distinct captions",
    }


def record_retrieval_check(path: Any) -> dict[str, Any]:
    """Run :func:`retrieval_check` on the store at ``path``, record it in its manifest, and warn
    when the pocket model scores below ``POCKET_MIN_R1``."""
    store = Store(path)
    check = retrieval_check(store)
    manifest = {**store.manifest, "retrieval_check": check}
    write_json(store.path / "manifest.json", manifest)
    model = store.manifest.get("model") or {}
    if (
        model.get("kind") == "pocket"
        and check["n_pairs"] >= MIN_WARN_SAMPLE
        and check["i2t@1"] < POCKET_MIN_R1
    ):
        warnings.warn(
            f"the pocket model matches only {check['i2t@1']:.0%} of {check['n_pairs']} sampled "
            f"images to their own caption (chance {check['chance']:.1%}; 98% on the emoji it "
            "was trained on): this data is unlike emoji and its features will say little; use "
            "a CLIP model, e.g. --model openai/clip-vit-base-patch32",
            stacklevel=2,
        )
    return check
