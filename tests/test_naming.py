from pathlib import Path

import numpy as np

from conftest import ListSource, ToyEncoder
from monoscope.analysis.naming import feature_names, shared_words
from monoscope.embed import embed
from monoscope.store import Store


def test_shared_words_by_hand():
    caps = [
        "woman firefighter: dark skin tone",
        "man firefighter: light skin tone",
        "firefighter",
        "woman astronaut",
    ]
    assert shared_words(caps, min_share=0.6) == "firefighter"
    assert shared_words(caps, min_share=0.5) == "woman firefighter skin tone"
    assert shared_words(["a cat", "a dog"]) == ""


def test_medoid_when_no_word_is_shared(tmp_path: Path):
    captions = {0: "red apple", 1: "green pear", 2: "blue sky", 3: "tall tree"}
    store = Store(
        embed(
            ToyEncoder(),
            ListSource(4, captions=captions),
            tmp_path / "s",
            device="cpu",
            progress=False,
        )
    )
    top = np.array([[0, 1, 2, -1], [3, -1, -1, -1], [0, 1, 2, 3]])
    names = feature_names(store, top, top, np.array(["ImgD", "TextD", "dead"]), m=4)
    e = store.load("text")[:3]
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    medoid = int((e @ e.T).sum(1).argmax())
    assert names[0] == captions[medoid]
    assert names[1] == "tall tree"
    assert names[2] == ""
