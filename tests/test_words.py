import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ToyEncoder
from monoscope.analysis.analyze import analyze
from monoscope.analysis.words import lexicon_class, occlusions, word_drivers
from monoscope.featuremaps.identity import IdentityMap
from monoscope.store import Store


def test_occlusions_by_hand():
    assert occlusions("woman firefighter: dark skin tone") == [
        ("woman", "firefighter: dark skin tone"),
        ("firefighter", "woman : dark skin tone"),
        ("dark", "woman firefighter: skin tone"),
        ("skin", "woman firefighter: dark tone"),
        ("tone", "woman firefighter: dark skin"),
    ]


def test_lexicon_classes():
    assert [lexicon_class(w) for w in ("left", "red", "surfing", "apple", "of")] == [
        "spatial",
        "adjective",
        "verb",
        "noun",
        "other",
    ]


def test_word_drivers_matches_direct_occlusion(small_store: Path, tmp_path: Path):
    fmap = IdentityMap(8)
    analysis = analyze(small_store, fmap, tmp_path / "a", device="cpu", progress=False)
    store = Store(small_store)
    word_drivers(
        store,
        fmap,
        analysis,
        ToyEncoder(),
        groups=("TextD", "CrossD"),
        top_features=3,
        captions_per_feature=2,
    )
    result = json.loads((analysis / "words.json").read_text())
    assert result["tagger"] in ("lexicon", "spacy")
    assert set(result["word_classes"]) <= {"TextD", "CrossD"}
    for shares in result["word_classes"].values():
        assert sum(shares.values()) == pytest.approx(1.0)
    # recompute one feature's drop for the word "caption" by hand
    k, words = next(iter(result["features"].items()))
    k = int(k)
    top = np.load(analysis / "top" / "text_idx.npy")[k, :2]
    enc = ToyEncoder()
    drops = []
    for row in top[top >= 0]:
        caption = store.pairs()[row]["caption"]
        full, cut = enc.encode_texts([caption, caption.replace("caption ", "")])
        full, cut = full / full.norm(), cut / cut.norm()
        a, b = fmap.encode(torch.stack([full, cut]))[:, k].tolist()
        if a > 0:
            drops.append((a - b) / a)
    got = dict(words)
    assert got["caption"] == pytest.approx(np.mean(drops), abs=1e-3)
