"""The gender study on constructed cases: planted gender features are found by the paired
test, and removing them changes accuracy as constructed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from monoscope._util import MonoscopeError
from monoscope.featuremaps.identity import IdentityMap
from monoscope.studies.gender import (
    counterfactual_means,
    gender_study,
    group_distribution,
    paired_feature_test,
)
from test_studies_common import LookupEncoder, hand_analysis, hashed, make_store

E = np.eye(8, dtype=np.float32)


def test_counterfactual_means_by_hand():
    acts = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [5.0, 5.0], [7.0, 7.0]])
    side = np.array([0, 0, 1, 0, 0])
    key = np.array(["a", "a", "a", "b", "b"])  # unit b has no side-1 row: dropped
    a, b, keys = counterfactual_means(acts, side, key)
    assert keys.tolist() == ["a"]
    assert a.tolist() == [[2.0, 0.0]] and b.tolist() == [[0.0, 2.0]]


def test_paired_feature_test_finds_the_planted_feature():
    rng = np.random.default_rng(0)
    n = 40
    b = torch.from_numpy(rng.random((n, 3)).astype(np.float32))
    a = b.clone()
    a[:, 0] += 0.5  # planted: feature 0 is higher on side a in every pair
    a[:, 1] += torch.from_numpy(rng.normal(0, 0.05, n).astype(np.float32))  # noise only
    a[:, 2] = b[:, 2] = 0.0  # never active: not tested
    out = paired_feature_test(a, b, permutations=999, seed=0)
    assert out["significant"].tolist() == [True, False, False]
    assert out["p"][0] == pytest.approx(1 / 1000)
    assert np.isnan(out["p"][2]) and out["mean_diff"][0] == pytest.approx(0.5)


def test_group_distribution_enrichment():
    groups = np.array(["ImgD", "TextD", "CrossD", "CrossD", "dead"])
    out = group_distribution(np.array([True, False, True, False, False]), groups)
    assert out["total"] == 2
    assert out["ImgD"] == {"count": 1, "share": 0.5, "enrichment": 0.5 / 0.25}
    assert out["TextD"]["count"] == 0


def _text(t: str) -> np.ndarray:
    if re.search(r"\bwoman\b", t):
        return E[0] + (E[3] if ":" in t else 0)
    if re.search(r"\bman\b", t):
        return E[1] + (E[3] if ":" in t else 0)
    return 0.1 * hashed(t, 8) + E[3]


EMOJI_KEYS = {"pair_keys": ("base", "skin_tone"), "role_key": "base"}


def gender_case(tmp_path: Path, generic: bool = False) -> tuple[Path, Path, Path]:
    """Woman images = e0 + 0.3 e1 + 0.5 e2, man images = e1 + 0.3 e0 + 0.5 e2 (+ noise on
    dims 4..7); feature 0 = relu(x0) is ImgD, feature 1 = relu(x1) is TextD. Neutral images
    of roles r0-r2 lean woman, r3-r5 man. Labelled like the bundled emoji (``base``,
    ``skin_tone``), or with ``generic`` by the default keys (``pair``, ``role``)."""
    rng = np.random.default_rng(0)
    records, images = [], []
    for r in range(6):
        for tone in ("light", "dark"):
            base = (
                {"pair": f"r{r}/{tone}", "role": f"r{r}"}
                if generic
                else {"base": f"r{r}", "skin_tone": tone, "group": "people"}
            )
            lean = (0.4, 0.1) if r < 3 else (0.1, 0.4)
            for gender, vec, cap in (
                ("woman", E[0] + 0.3 * E[1] + 0.5 * E[2], f"woman r{r}: {tone}"),
                ("man", E[1] + 0.3 * E[0] + 0.5 * E[2], f"man r{r}: {tone}"),
                ("neutral", lean[0] * E[0] + lean[1] * E[1] + 0.6 * E[2], f"person r{r}: {tone}"),
            ):
                noise = np.concatenate([np.zeros(4), rng.normal(0, 0.05, 4)])
                images.append(vec + noise)
                records.append({"caption": cap, "gender": gender, **base})
    for i in range(6):
        images.append(rng.normal(0, 1, 8))
        records.append(
            {
                "caption": f"object {i}",
                "gender": "neutral",
                ("role" if generic else "base"): f"o{i}",
            }
        )
    encoder = LookupEncoder(np.stack(images), _text)
    store = make_store(tmp_path, records, encoder)
    fmap = IdentityMap(8).save(tmp_path / "fmap")
    groups = ["ImgD", "TextD"] + ["CrossD"] * 14
    return store, fmap, hand_analysis(tmp_path / "analysis", groups)


def test_gender_study_constructed_case(tmp_path: Path):
    store, fmap, analysis = gender_case(tmp_path)
    model = LookupEncoder(np.zeros((1, 8)), _text)
    path = gender_study(
        store,
        fmap,
        analysis,
        tmp_path / "out",
        model=model,
        templates=("{}",),
        permutations=500,
        control_seeds=2,
        device="cpu",
        progress=False,
        **EMOJI_KEYS,
    )
    res = json.loads(path.read_text())
    assert res["n_images"] == {"woman": 12, "man": 12}
    base = res["baseline"]["accuracy"]
    assert base["woman"]["mean"] == 1.0 and base["man"]["mean"] == 1.0
    # the planted features, found in both modalities, with the right direction and group
    for modality in ("image", "text"):
        top = res["features"]["top"][modality]
        assert [f["feature"] for f in top["woman"]] == [0]
        assert [f["feature"] for f in top["man"]] == [1]
    assert res["features"]["either_modality"]["woman"]["ImgD"]["count"] == 1
    # removing ImgD (x0) turns women into men; removing TextD (x1, also in the 'man' prompt)
    # leaves women right and men wrong
    rem = res["removals"]
    assert rem["ImgD"]["accuracy"]["woman"]["mean"] == 0.0
    assert rem["ImgD"]["accuracy"]["man"]["mean"] == 1.0
    assert rem["TextD"]["accuracy"]["woman"]["mean"] == 1.0
    assert rem["TextD"]["accuracy"]["man"]["mean"] == 0.0
    assert rem["TextD"]["drop"]["man"]["drop"] == 1.0
    assert rem["gender"]["n_features"] == 2 and "control" in rem["gender"]
    verdict = res["paper_finding"]
    assert verdict["woman_concepts_mainly_in_ImgD"]["verdict"] == "holds"
    assert verdict["man_hurt_more_by_removing_TextD"]["verdict"] == "holds"
    # bias: neutral roles lean as planted
    toward = {row["role"]: row["toward"] for row in res["bias"]["most_skewed"]}
    assert toward == {f"r{r}": "woman" if r < 3 else "man" for r in range(6)}
    assert all((tmp_path / "out" / f).is_file() for f in res["figures"])
    assert len(res["figures"]) == 3


def test_gender_study_rejects_missing_labels(tmp_path: Path):
    store, fmap, analysis = gender_case(tmp_path)
    with pytest.raises(MonoscopeError, match="pair_id"):
        gender_study(
            store,
            fmap,
            analysis,
            tmp_path / "o",
            model=LookupEncoder(np.zeros((1, 8)), _text),
            pair_keys=("pair_id",),
            device="cpu",
            progress=False,
        )
    with pytest.raises(MonoscopeError, match="both"):
        gender_study(
            store,
            fmap,
            analysis,
            tmp_path / "o",
            model=LookupEncoder(np.zeros((1, 8)), _text),
            classes=("woman", "robot"),
            label_key="gender",
            **EMOJI_KEYS,
            device="cpu",
            progress=False,
        )


def test_gender_study_without_roles_skips_the_bias_table(tmp_path: Path):
    store, fmap, analysis = gender_case(tmp_path)
    path = gender_study(
        store,
        fmap,
        analysis,
        tmp_path / "out",
        model=LookupEncoder(np.zeros((1, 8)), _text),
        pair_keys=EMOJI_KEYS["pair_keys"],
        role_key="occupation",
        permutations=100,
        control_seeds=1,
        device="cpu",
        progress=False,
    )
    res = json.loads(path.read_text())
    assert res["bias"]["n_roles"] == 0 and "bias" not in res["removals"]["ImgD"]
    assert res["figures"] == ["gender_accuracy.png", "gender_features.png"]


def test_gender_study_defaults_find_generic_labels(tmp_path: Path):
    """Without label options the study finds the label holding both classes and the ``pair``
    and ``role`` labels, and gives the results of naming them."""
    store, fmap, analysis = gender_case(tmp_path, generic=True)
    common = {
        "model": LookupEncoder(np.zeros((1, 8)), _text),
        "templates": ("{}",),
        "permutations": 200,
        "control_seeds": 1,
        "device": "cpu",
        "progress": False,
    }
    found = json.loads(gender_study(store, fmap, analysis, tmp_path / "a", **common).read_text())
    named = gender_study(
        store,
        fmap,
        analysis,
        tmp_path / "b",
        label_key="gender",
        pair_keys=("pair",),
        role_key="role",
        **common,
    )
    named = json.loads(named.read_text())
    settings = found["settings"]
    assert (settings["label_key"], settings["pair_keys"], settings["role_key"]) == (
        "gender",
        ["pair"],
        "role",
    )
    assert found["baseline"] == named["baseline"] and found["bias"] == named["bias"]
    assert found["bias"]["n_roles"] == 6


def test_gender_study_default_labels_missing_is_one_line_error(tmp_path: Path):
    store, fmap, analysis = gender_case(tmp_path)  # emoji-style labels: no 'pair' label
    common = {"model": LookupEncoder(np.zeros((1, 8)), _text), "device": "cpu", "progress": False}
    with pytest.raises(MonoscopeError, match="'pair' label or --pair-keys; labels present: "):
        gender_study(store, fmap, analysis, tmp_path / "o", **common)
    with pytest.raises(MonoscopeError, match="no label takes the values 'woman' and 'robot'"):
        gender_study(store, fmap, analysis, tmp_path / "o", classes=("woman", "robot"), **common)
