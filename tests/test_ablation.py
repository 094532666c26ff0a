import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ListSource, ToyEncoder
from monoscope.analysis.ablation import (
    ablate,
    paired_drop,
    remove_features,
    retrieval_hits,
    zero_shot_hits,
)
from monoscope.analysis.analyze import analyze, read_feature_table
from monoscope.featuremaps.identity import IdentityMap
from monoscope.store import Store


def _identity_analysis(store: Path | Store, tmp_path: Path) -> tuple[Path, Path]:
    """Raw dimensions of ``store`` as a feature map, and their analysis (``std`` rule)."""
    fmap_dir = IdentityMap(8).save(tmp_path / "f")
    return fmap_dir, analyze(
        store, fmap_dir, tmp_path / "a", rule="std", device="cpu", progress=False
    )


def test_remove_features_identity_by_hand():
    g = IdentityMap(3)
    x = torch.tensor([[1.0, -2.0, 3.0]])
    removed = np.zeros(6, bool)
    assert torch.equal(remove_features(g, x, "image", removed), x)
    removed[[0, 4]] = True  # +dim0 and -dim1
    assert remove_features(g, x, "image", removed).tolist() == [[0.0, 0.0, 3.0]]
    removed[:] = False
    removed[3] = True  # -dim0 is inactive on this x: nothing changes
    assert remove_features(g, x, "text", removed).tolist() == [[1.0, -2.0, 3.0]]


def test_remove_features_keeps_reconstruction_error():
    class Linear(IdentityMap):  # decoder that loses half of every coordinate
        def decode(self, z, modality=None):
            return 0.5 * super().decode(z, modality)

    g = Linear(2)
    x = torch.tensor([[2.0, 4.0]])
    removed = np.array([True, False, False, False])
    # contribution of +dim0 through the lossy decoder is 0.5 * 2 = 1
    assert remove_features(g, x, "image", removed).tolist() == [[1.0, 4.0]]


def test_retrieval_hits_by_hand():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    txt = torch.tensor([[1.0, 0.1], [1.0, 0.0], [0.0, 1.0]])
    hits = retrieval_hits(img, txt, ks=(1, 2))
    # image 0: text 1 (cos 1.0) beats its text 0 (0.995): rank 1
    # image 1: texts 2 (1.0) and 0 (0.0995) beat its text 1 (0.0): rank 2
    # image 2: text 0 (0.774) beats its text 2 (0.707); text 1 ties (0.707), a tie is a miss
    assert hits["i2t@1"].tolist() == [False, False, False]
    assert hits["i2t@2"].tolist() == [True, False, False]


def test_zero_shot_and_paired_drop():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert zero_shot_hits(img, classes, np.array([0, 1, 1])).tolist() == [True, True, False]
    drop, ci = paired_drop(np.array([1, 1, 0, 1]), np.array([1, 1, 0, 1]))
    assert drop == 0 and ci == [0.0, 0.0]
    drop, _ = paired_drop(np.array([1, 1, 1, 1]), np.array([0, 1, 0, 1]))
    assert drop == 0.5


def test_ablate_end_to_end_with_identity(small_store: Path, tmp_path: Path):
    fmap_dir, analysis = _identity_analysis(small_store, tmp_path)
    out = ablate(
        small_store,
        fmap_dir,
        tmp_path / "abl",
        analysis=analysis,
        model=ToyEncoder(),
        label_keys=["parity"],
        control_seeds=2,
        device="cpu",
    )
    result = json.loads((out / "ablation.json").read_text())
    assert result["format_version"] == 1
    s = Store(small_store)
    hits = retrieval_hits(torch.from_numpy(s.load("image")), torch.from_numpy(s.load("text")))
    assert result["baseline"]["i2t@1"] == pytest.approx(hits["i2t@1"].mean())
    groups = read_feature_table(analysis / "features.csv")["group"]
    img_d = groups == "ImgD"
    expected = remove_features(IdentityMap(8), torch.from_numpy(s.load("image")), "image", img_d)
    expected_txt = remove_features(IdentityMap(8), torch.from_numpy(s.load("text")), "text", img_d)
    hits = retrieval_hits(expected, expected_txt)
    removal = result["removals"]["ImgD"]
    assert removal["n_features"] == int(img_d.sum())
    assert removal["metrics"]["i2t@1"]["value"] == pytest.approx(hits["i2t@1"].mean())
    assert (
        set(removal["control"])
        == set(removal["metrics"])
        == {"i2t@1", "i2t@5", "t2i@1", "t2i@5", "zeroshot/parity"}
    )
    lo, hi = removal["metrics"]["t2i@5"]["drop_ci"]
    assert lo <= removal["metrics"]["t2i@5"]["drop"] <= hi


def test_one_recall_definition_ties_are_misses():
    """Feature-map metrics and ablation count recall the same way: a tie is a miss."""
    from monoscope.featuremaps.metrics import recall_at_1

    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # images 0 and 1 identical
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    hits = retrieval_hits(img, txt, ks=(1,))
    assert hits["i2t@1"].tolist() == [False, False, True]  # 0 and 1 tie with each other
    assert recall_at_1(img, txt) == (hits["i2t@1"].mean(), hits["t2i@1"].mean())


def test_ablate_defaults_find_the_class_labels(small_store: Path, tmp_path: Path):
    """Without ``label_keys`` every label that can serve as classes is used (here: parity)."""
    fmap_dir, analysis = _identity_analysis(small_store, tmp_path)
    out = ablate(
        small_store,
        fmap_dir,
        tmp_path / "abl",
        analysis=analysis,
        model=ToyEncoder(),
        control_seeds=1,
        device="cpu",
    )
    settings = json.loads((out / "ablation.json").read_text())["settings"]
    assert settings["label_keys"] == ["parity"] and settings["templates"] == ["a photo of {}"]


def test_ablate_without_class_labels_warns_and_measures_retrieval(tmp_path: Path):
    from monoscope.embed import embed

    class Unlabelled(ListSource):
        def __iter__(self):
            for pair in super().__iter__():
                yield dataclasses.replace(pair, labels={"split": "train"})

    store = embed(ToyEncoder(), Unlabelled(20), tmp_path / "s", device="cpu", progress=False)
    fmap_dir, analysis = _identity_analysis(store, tmp_path)
    with pytest.warns(UserWarning, match=r"no label can serve .*\['split'\]\); only retrieval"):
        out = ablate(
            store,
            fmap_dir,
            tmp_path / "abl",
            analysis=analysis,
            model=ToyEncoder(),
            control_seeds=1,
            device="cpu",
        )
    result = json.loads((out / "ablation.json").read_text())
    assert set(result["baseline"]) == {"i2t@1", "i2t@5", "t2i@1", "t2i@5"}
