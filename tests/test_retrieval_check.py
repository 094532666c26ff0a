"""The store's in-batch retrieval check: hand-computed recall, the manifest entry, and the
warning when the pocket model is used on data unlike emoji."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from monoscope.cli import main
from monoscope.doctor import diagnose
from monoscope.retrieval_check import POCKET_MIN_R1, retrieval_check
from monoscope.store import Store
from test_studies_common import LookupEncoder, make_store

E = np.eye(8, dtype=np.float32)


class Pocketish(LookupEncoder):
    """A lookup encoder that calls itself the pocket model."""

    def info(self) -> dict[str, Any]:
        return {"kind": "pocket", "id": "pocket", "revision": "0"}


def planted(tmp_path: Path, hits: int, encoder_cls=LookupEncoder) -> Path:
    """8 pairs: image i = e_i; caption i = e_i for i < hits, else -e_i (a miss: every other
    caption scores 0 > -1 for image i, and no other image is affected). Captions 'c0'..'c7'
    are distinct."""
    records = [{"caption": f"c{i}"} for i in range(8)]

    def text(t: str) -> np.ndarray:
        i = int(t[1:])
        return E[i] if i < hits else -E[i]

    return make_store(tmp_path, records, encoder_cls(E, text))


def test_recall_by_hand_and_recorded_in_the_manifest(tmp_path: Path):
    store = planted(tmp_path, hits=6)
    check = Store(store).manifest["retrieval_check"]
    # images 6 and 7 miss (their own caption scores -1, the others 0); 6 of 8 hit
    assert check["i2t@1"] == pytest.approx(6 / 8) and check["n_pairs"] == 8
    assert check["chance"] == pytest.approx(1 / 8)
    assert check == retrieval_check(Store(store))  # seeded: the same sample
    assert diagnose(store) == []


def test_repeated_captions_are_sampled_once(tmp_path: Path):
    records = [{"caption": "same"}] * 4 + [{"caption": f"c{i}"} for i in range(4)]
    store = make_store(
        tmp_path, records, LookupEncoder(E, lambda t: E[0] if t == "same" else E[1 + int(t[1:])])
    )
    check = Store(store).manifest["retrieval_check"]
    assert check["n_pairs"] == 5  # one of the four 'same' pairs, plus c0..c3


@pytest.mark.parametrize(("hits", "warns"), [(3, True), (4, False), (8, False)])
def test_pocket_warning_below_threshold(tmp_path: Path, hits: int, warns: bool):
    assert POCKET_MIN_R1 == 0.5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        planted(tmp_path, hits, Pocketish)
    messages = [str(w.message) for w in caught if "pocket model" in str(w.message)]
    assert bool(messages) == warns
    if warns:
        assert messages[0].startswith(f"the pocket model matches only {hits / 8:.0%} of 8")


def test_other_models_never_warn(tmp_path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = planted(tmp_path, hits=0)
    assert Store(store).manifest["retrieval_check"]["i2t@1"] == 0.0


def test_pocket_on_noise_images_warns_on_the_console(tmp_path: Path, capsys):
    """The real pocket model on 16 noise images with unrelated captions: one warning line."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
        lines.append(json.dumps({"image": f"{i}.png", "caption": f"a photo of thing number {i}"}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    args = ["embed", "--model", "pocket", "--data", str(tmp_path / "pairs.jsonl")]
    assert main([*args, "--out", str(tmp_path / "s"), "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "monoscope: warning: the pocket model matches only" in err and "CLIP" in err
    assert Store(tmp_path / "s").manifest["retrieval_check"]["i2t@1"] < POCKET_MIN_R1
