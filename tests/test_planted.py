"""Planted ground truth: the generator's structure and geometry, the scores, and a reduced
benchmark."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from monoscope.analysis.planted import (
    PROFILES,
    PlantedWorld,
    geometry,
    macro_f1,
    make_planted,
    match_atoms,
    matched_f1,
    planted_k,
    run_planted_benchmark,
    score_featuremap,
)
from monoscope.featuremaps.identity import IdentityMap


def test_easy_generator_structure():
    image, text, truth = make_planted(dim=16, n_atoms=40, n_pairs=3000, seed=0, normalize=False)
    assert image.shape == text.shape == (3000, 16) and image.dtype == np.float32
    assert np.allclose(np.linalg.norm(truth.atoms, axis=1), 1)
    assert [int((truth.groups == g).sum()) for g in ("CrossD", "ImgD", "TextD")] == [20, 10, 10]
    img_only, txt_only = truth.groups == "ImgD", truth.groups == "TextD"
    shared = truth.groups == "CrossD"
    assert not truth.codes_text[:, img_only].any() and not truth.codes_image[:, txt_only].any()
    assert truth.codes_image[:, img_only].any() and truth.codes_text[:, txt_only].any()
    on_i, on_t = truth.codes_image[:, shared] > 0, truth.codes_text[:, shared] > 0
    assert np.array_equal(on_i, on_t)  # balanced atoms fire in both modalities of a pair
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


def test_clip_profile_matches_published_clip_geometry():
    image, text, truth = make_planted(dim=128, n_pairs=20000, profile="clip")
    g = geometry(image, text)
    assert g["matched_cosine"] == pytest.approx(0.3, abs=0.05)  # CLIP ViT-B/32: about 0.3
    assert g["centroid_distance"] == pytest.approx(0.82, abs=0.06)  # Liang et al. 2022: 0.82
    assert 0.4 < g["cone_image"] < 0.7 and 0.4 < g["cone_text"] < 0.7
    assert g["unmatched_cosine"] < g["matched_cosine"]
    # continuous preferences with mass near both thresholds, and heavy-tailed rates
    pref = truth.preference
    assert ((pref > 0.15) & (pref < 0.35)).sum() >= 10 and (
        (pref > 0.65) & (pref < 0.85)
    ).sum() >= 10
    assert truth.rate.max() / truth.rate.min() > 100
    # an atom's true MDS is its preference: the share of its activation mass on images
    mass_i, mass_t = truth.codes_image.sum(0), truth.codes_text.sum(0)
    well = truth.rate * 20000 > 500
    np.testing.assert_allclose(mass_i[well] / (mass_i + mass_t)[well], pref[well], atol=0.05)


def test_null_profile_is_balanced():
    _, _, truth = make_planted(dim=32, n_atoms=64, n_pairs=100, profile="null")
    assert (truth.preference == 0.5).all() and (truth.groups == "CrossD").all()
    assert PROFILES["null"].gap == PROFILES["clip"].gap


def test_macro_f1_hand_computed():
    truth = np.array(["ImgD", "ImgD", "TextD", "CrossD"])
    pred = np.array(["ImgD", "CrossD", "TextD", "CrossD"])
    # ImgD: tp 1 fn 1 -> 2/3; TextD: 1; CrossD: tp 1 fp 1 -> 2/3
    assert macro_f1(truth, pred) == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert macro_f1(truth, np.array(["dead"] * 4)) == 0


def test_one_to_one_matching_and_matched_f1_by_hand():
    cos = np.array([[0.9, 0.8, 0.1], [0.85, 0.2, 0.1], [0.1, 0.1, 0.3]])
    # atom 0 would prefer feature 0, but atom 1 needs it more: the optimum is 0->1, 1->0;
    # atom 2 is matched to no feature (cosine 0.3 < 0.7)
    match = match_atoms(cos, np.ones(3, bool))
    assert match.tolist() == [1, 0, -1]
    truth = np.array(["ImgD", "TextD", "CrossD"])
    verdicts = np.array(["TextD", "ImgD", "ImgD"])  # feature 2 is spurious and claims ImgD
    # ImgD: tp 1 (atom 0 via feature 1), fp 1 (spurious feature 2) -> 2/3; TextD: tp 1 -> 1;
    # CrossD: fn 1 -> 0
    assert matched_f1(truth, match, verdicts) == pytest.approx((2 / 3 + 1 + 0) / 3)
    # a tiny map cannot score well: one feature, matched to one atom of three
    assert matched_f1(truth, np.array([0, -1, -1]), np.array(["ImgD"])) == pytest.approx(1 / 3)


def test_events_per_embedding_and_k():
    """Hand-computed: pi_img + pi_txt = 1 / max(p, 1 - p) = 1, 1, 2, 4/3; and the sampled
    counts agree."""
    world = PlantedWorld(
        replace(PROFILES["easy"], normalize=False),
        np.eye(4),
        np.array([1.0, 0.0, 0.5, 0.25]),
        np.array([0.5, 0.2, 0.4, 0.8]),
        np.eye(4)[0],
        np.eye(4)[1],
    )
    expected = (0.5 + 0.2 + 0.4 * 2 + 0.8 * 4 / 3) / 2
    assert world.events_per_embedding() == pytest.approx(expected)
    _, _, codes_img, codes_txt = world.sample(40000, seed=0)
    sampled = ((codes_img > 0).sum(1).mean() + (codes_txt > 0).sum(1).mean()) / 2
    assert sampled == pytest.approx(expected, abs=0.02)
    assert planted_k(world, "sae-batchtopk") == 2  # round(1.28) + 1
    assert planted_k(world, "sae-topk") == 3  # round(1.9) + 1
    clip = PlantedWorld.draw(PROFILES["clip"], 128, 256, seed=0)
    null = PlantedWorld.draw(PROFILES["null"], 128, 256, seed=0)
    ks = [planted_k(w, m) for w in (clip, null) for m in ("sae-batchtopk", "sae-topk")]
    assert ks == [5, 8, 8, 8]


def test_scores_of_a_map_built_from_the_truth():
    """A map whose directions are the atoms recovers them, with every verdict right."""
    d = 8
    world = PlantedWorld(
        replace(PROFILES["easy"], gap=0.0, noise=0.0, normalize=False),
        np.eye(d)[:6],
        np.array([0.5, 0.5, 1.0, 1.0, 0.0, 0.0]),
        np.full(6, 0.3),
        np.eye(d)[7],
        np.eye(d)[6],
    )
    scores = score_featuremap(IdentityMap(d), world, n_pairs=2000, replicates=2)
    assert scores["atom_recovery_mmcs"] == pytest.approx(1)
    assert scores["atoms_matched"] == 6
    evidence = scores["rules"]["evidence"]
    assert evidence["macro_f1"] == pytest.approx(1)
    assert evidence["share_error"] < 0.05
    assert evidence["mds_ci_coverage"] is None or evidence["mds_ci_coverage"] >= 0.9
    share = scores["mds_ci_boundary_share"]  # MDS 1, 1, 0, 0 of 6 features lie at an end
    assert share == pytest.approx(4 / 6)
    split = (
        share * scores["mds_ci_coverage_boundary"]
        + (1 - share) * scores["mds_ci_coverage_interior"]
    )
    assert split == pytest.approx(scores["mds_ci_coverage"])


def test_reduced_benchmark_meets_targets(tmp_path):
    report = run_planted_benchmark(
        tmp_path,
        seed=0,
        dim=64,
        atoms=128,
        n_pairs=6000,
        methods=["identity", "sae-topk"],
        profile="easy",
        replicates=2,
        steps=400,
        batch_size=512,
    )
    saved = json.loads((tmp_path / "planted.json").read_text())
    assert saved["methods"].keys() == report["methods"].keys()
    assert saved["profile"] == "easy" and saved["default_rule"] == "evidence"
    assert saved["settings"]["dim"] == 64
    assert saved["settings"]["k"] == {"sae-topk": 9}  # easy: 8 events per pair
    scores = report["methods"]
    topk = scores["sae-topk"]
    assert topk["atom_recovery_mmcs"] >= 0.9, topk
    for rule in ("evidence", "std", "fixed", "quantile", "test"):
        entry = topk["rules"][rule]
        assert {"macro_f1", "share_error", "mds_ci_coverage", "count_ci_coverage"} <= set(entry)
    assert topk["rules"]["evidence"]["macro_f1"] >= 0.9, topk
    assert scores["identity"]["atom_recovery_mmcs"] < 0.7
    assert scores["identity"]["rules"]["evidence"]["macro_f1"] < 0.7
