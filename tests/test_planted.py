"""Planted ground truth: the generator's structure, the scores, and a reduced benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monoscope.analysis.planted import (
    PlantedTruth,
    macro_f1,
    make_planted,
    run_planted_benchmark,
    score_featuremap,
)
from monoscope.featuremaps.identity import IdentityMap


def test_generator_structure():
    image, text, truth = make_planted(dim=16, n_atoms=40, n_pairs=3000, seed=0, normalize=False)
    assert image.shape == text.shape == (3000, 16) and image.dtype == np.float32
    assert np.allclose(np.linalg.norm(truth.atoms, axis=1), 1)
    assert [int((truth.groups == g).sum()) for g in ("CrossD", "ImgD", "TextD")] == [20, 10, 10]
    img_only, txt_only = truth.groups == "ImgD", truth.groups == "TextD"
    shared = truth.groups == "CrossD"
    assert not truth.codes_text[:, img_only].any() and not truth.codes_image[:, txt_only].any()
    assert truth.codes_image[:, img_only].any() and truth.codes_text[:, txt_only].any()
    on_i, on_t = truth.codes_image[:, shared] > 0, truth.codes_text[:, shared] > 0
    assert np.array_equal(on_i, on_t)  # shared atoms fire in both modalities of a pair
    corr = np.corrcoef(
        np.log(truth.codes_image[:, shared][on_i]), np.log(truth.codes_text[:, shared][on_t])
    )[0, 1]
    assert corr == pytest.approx(0.8, abs=0.05)
    assert 2 < (truth.codes_image > 0).sum(1).mean() < 10  # sparse
    codes_gap = (truth.codes_image.mean(0) - truth.codes_text.mean(0)) @ truth.atoms
    gap = image.mean(0) - text.mean(0) - codes_gap  # the rest is the offset (+ noise)
    assert np.linalg.norm(gap - truth.offset) < 0.05 * np.linalg.norm(truth.offset)
    again = make_planted(dim=16, n_atoms=40, n_pairs=3000, seed=0, normalize=False)
    assert np.array_equal(again[0], image)
    assert not np.array_equal(make_planted(dim=16, n_atoms=40, n_pairs=3000, seed=1)[0], image)
    unit, _, _ = make_planted(dim=16, n_atoms=40, n_pairs=50)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)


def test_macro_f1_hand_computed():
    truth = np.array(["ImgD", "ImgD", "TextD", "CrossD"])
    pred = np.array(["ImgD", "CrossD", "TextD", "CrossD"])
    # ImgD: tp 1 fn 1 -> 2/3; TextD: 1; CrossD: tp 1 fp 1 -> 2/3
    assert macro_f1(truth, pred) == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert macro_f1(truth, np.array(["dead"] * 4)) == 0


def test_scores_of_a_map_built_from_the_truth():
    """A map whose directions are the atoms scores mmcs 1; identity scores far lower."""
    d = 8
    atoms = np.eye(d)[:6]
    groups = np.array(["CrossD", "CrossD", "ImgD", "ImgD", "TextD", "TextD"])
    truth = PlantedTruth(atoms, groups, np.zeros(d), np.zeros((1, 6)), np.zeros((1, 6)))
    rng = np.random.default_rng(0)
    codes_i = rng.random((200, 6)) * np.array([1, 1, 1, 1, 0, 0])
    codes_t = rng.random((200, 6)) * np.array([1, 1, 0, 0, 1, 1])
    image, text = (codes_i @ atoms).astype(np.float32), (codes_t @ atoms).astype(np.float32)
    scores = score_featuremap(IdentityMap(d), image, text, truth)  # axes == atoms here
    assert scores["atom_recovery_mmcs"] == pytest.approx(1)
    assert scores["group_macro_f1"] == pytest.approx(1)
    # the modality-specific atoms fire in one modality only: every rule recovers the groups,
    # including the sign-flip test (200 pairs give tiny p-values)
    assert scores["group_macro_f1_by_rule"] == pytest.approx(
        {"std": 1.0, "fixed": 1.0, "quantile": 1.0, "test": 1.0}
    )


def test_reduced_benchmark_meets_targets(tmp_path):
    report = run_planted_benchmark(
        tmp_path,
        seed=0,
        dim=64,
        atoms=128,
        n_pairs=6000,
        methods=["identity", "sae-topk", "sae-batchtopk"],
        steps=400,
        batch_size=512,
    )
    saved = json.loads((tmp_path / "planted.json").read_text())
    assert saved["methods"].keys() == report["methods"].keys()
    assert saved["settings"]["dim"] == 64
    scores = report["methods"]
    for method in ("sae-topk", "sae-batchtopk"):
        assert scores[method]["atom_recovery_mmcs"] >= 0.9, scores[method]
        assert scores[method]["group_macro_f1"] >= 0.9, scores[method]
    assert scores["identity"]["atom_recovery_mmcs"] < 0.7
    assert scores["identity"]["group_macro_f1"] < 0.7
