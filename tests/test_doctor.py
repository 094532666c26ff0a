"""``monoscope doctor``: sound artefacts pass; each kind of damage is named in one line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import ListSource, ToyEncoder
from monoscope.analysis.analyze import analyze
from monoscope.cli import main
from monoscope.doctor import detect, diagnose
from monoscope.embed import embed
from monoscope.featuremaps.train import train_featuremap


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("doctor")
    store = embed(
        ToyEncoder(),
        ListSource(40, bad={3: "corrupt image"}),
        root / "store",
        shard_size=16,
        device="cpu",
        progress=False,
    )
    fmap = train_featuremap(store, "identity", root / "fmap", device="cpu", progress=False)
    analysis = analyze(store, fmap, root / "analysis", device="cpu", progress=False)
    return {"store": store, "featuremap": fmap, "analysis": analysis}


@pytest.fixture
def copy(artefacts: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    """A private copy of one artefact (the others stay where its references point)."""

    def make(kind: str) -> Path:
        return Path(shutil.copytree(artefacts[kind], tmp_path / kind))

    return make


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def test_sound_artefacts_pass(artefacts: dict[str, Path]) -> None:
    for kind, path in artefacts.items():
        assert detect(path) == kind
        assert diagnose(path) == [], kind


def test_not_an_artefact(tmp_path: Path) -> None:
    assert diagnose(tmp_path / "nope") == [f"{tmp_path / 'nope'}: does not exist"]
    (tmp_path / "f").write_text("x")
    assert diagnose(tmp_path / "f") == [f"{tmp_path / 'f'}: not a directory"]
    assert "not a store, feature map or analysis" in diagnose(tmp_path)[0]


def _nan_row(s: Path) -> None:
    arr = np.load(s / "image" / "00001.npy")
    arr[2] = np.nan
    np.save(s / "image" / "00001.npy", arr)


def _unnormalised(s: Path) -> None:
    arr = np.load(s / "text" / "00000.npy")
    np.save(s / "text" / "00000.npy", arr * 2)


def _drop_pair(s: Path) -> None:
    lines = (s / "pairs.jsonl").read_text().splitlines(keepends=True)
    (s / "pairs.jsonl").write_text("".join(lines[:-1]))


STORE_DAMAGE = {
    "missing shard": (lambda s: (s / "text" / "00002.npy").unlink(), "shard file is missing"),
    "wrong shape": (
        lambda s: np.save(s / "image" / "00000.npy", np.zeros((16, 4), np.float32)),
        "shape (16, 4) float32, the manifest says (15, 8) float32",
    ),
    "wrong dtype": (
        lambda s: np.save(s / "image" / "00000.npy", np.zeros((15, 8))),
        "float64, the manifest says (15, 8) float32",
    ),
    "garbage shard": (
        lambda s: (s / "image" / "00001.npy").write_bytes(b"junk"),
        "00001.npy: unreadable",
    ),
    "nan row": (_nan_row, "00001.npy: 1 rows contain NaN or inf"),
    "not unit norm": (_unnormalised, "15 rows are not unit-norm"),
    "pairs lost": (_drop_pair, "pairs.jsonl: 38 lines, the manifest's count is 39"),
    "pairs garbage": (
        lambda s: (s / "pairs.jsonl").write_text("{}\n" * 39),
        "line 1 is not a pair record",
    ),
    "count off": (
        lambda s: _edit_json(s / "manifest.json", count=40),
        "the shard counts add up to 39, not count 40",
    ),
    "field missing": (
        lambda s: _edit_json(s / "manifest.json", dim=None, dtype="float16"),
        "missing or invalid fields: dim, dtype",
    ),
    "manifest garbage": (
        lambda s: (s / "manifest.json").write_text("{"),
        "manifest.json: not valid JSON",
    ),
}


@pytest.mark.parametrize("damage", list(STORE_DAMAGE))
def test_store_damage_is_named(copy, damage: str) -> None:
    store = copy("store")
    harm, message = STORE_DAMAGE[damage]
    harm(store)
    problems = diagnose(store)
    assert any(message in p for p in problems), problems


def test_incomplete_store_says_resume(tmp_path: Path) -> None:
    class Stop(Exception):
        pass

    class Dying(ListSource):
        def __iter__(self):
            for i, pair in enumerate(super().__iter__()):
                if i == 20:
                    raise Stop
                yield pair

    with pytest.raises(Stop):
        embed(ToyEncoder(), Dying(40), tmp_path / "s", shard_size=8, device="cpu", progress=False)
    assert detect(tmp_path / "s") == "store"
    (problem,) = diagnose(tmp_path / "s")
    assert "incomplete store (2 shards of 8 records committed by 1 writer(s))" in problem
    assert "--resume" in problem
    (tmp_path / "s" / "text" / "00001.npy").unlink()  # resume would build on a lost shard
    assert "text/00001.npy: shard file is missing" in diagnose(tmp_path / "s")[1]


def _nan_weights(f: Path) -> None:
    save_file({"dummy": torch.tensor([float("nan")])}, str(f / "model.safetensors"))


FMAP_DAMAGE = {
    "garbage weights": (
        lambda f: (f / "model.safetensors").write_bytes(b"junk"),
        "model.safetensors: does not load",
    ),
    "missing weights": (
        lambda f: (f / "model.safetensors").unlink(),
        "model.safetensors is missing",
    ),
    "config dims": (
        lambda f: _edit_json(f / "config.json", n_features=99),
        "n_features 99, but the weights give 8, 16",
    ),
    "unknown kind": (lambda f: _edit_json(f / "config.json", kind="zzz"), "unknown feature map"),
    "training store dim": (
        lambda f: _edit_json(
            f / "config.json",
            dim=4,
            hparams={"dim": 4, "mode": "sign-split"},
            n_features=8,
        ),
        "dim 4, but its training store",
    ),
}


@pytest.mark.parametrize("damage", list(FMAP_DAMAGE))
def test_featuremap_damage_is_named(copy, damage: str) -> None:
    fmap = copy("featuremap")
    harm, message = FMAP_DAMAGE[damage]
    harm(fmap)
    problems = diagnose(fmap)
    assert any(message in p for p in problems), problems


def test_incomplete_featuremap_says_resume(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (problem,) = diagnose(tmp_path)
    assert "incomplete feature map" in problem and "--resume" in problem


def _drop_feature_row(a: Path) -> None:
    lines = (a / "features.csv").read_text().splitlines(keepends=True)
    (a / "features.csv").write_text("".join(lines[:-1]))


ANALYSIS_DAMAGE = {
    "missing top": (lambda a: (a / "top" / "text_val.npy").unlink(), "missing top/text_val.npy"),
    "csv row lost": (_drop_feature_row, "features.csv: 15 rows, summary.json says n_features 16"),
    "top shape": (
        lambda a: np.save(a / "top" / "image_idx.npy", np.zeros((16, 3), np.int64)),
        "image_idx.npy: shape (16, 3), expected (16, 50)",
    ),
    "top index range": (
        lambda a: np.save(a / "top" / "image_idx.npy", np.full((16, 50), 39, np.int64)),
        "row indices outside [-1, 39)",
    ),
    "store gone": (
        lambda a: _edit_json(a / "summary.json", store=str(a / "gone")),
        "its store",
    ),
    "pairs differ": (
        lambda a: _edit_json(a / "summary.json", n_pairs=7),
        "n_pairs 7, but its store",
    ),
    "old summary": (
        lambda a: _edit_json(a / "summary.json", format_version=1),
        "format_version 1, this monoscope reads 2: written by an older monoscope",
    ),
    "histograms damaged": (
        lambda a: (a / "histograms.safetensors").write_bytes(b"\0" * 12),
        "histograms.safetensors: unreadable",
    ),
    "featuremap differs": (
        lambda a: _edit_json(a / "summary.json", n_features=4),
        "features.csv: 16 rows, summary.json says n_features 4",
    ),
}


@pytest.mark.parametrize("damage", list(ANALYSIS_DAMAGE))
def test_analysis_damage_is_named(copy, damage: str) -> None:
    analysis = copy("analysis")
    harm, message = ANALYSIS_DAMAGE[damage]
    harm(analysis)
    problems = diagnose(analysis)
    assert any(message in p for p in problems), problems


def test_analysis_store_and_featuremap_dims_must_agree(copy, tmp_path: Path) -> None:
    analysis, fmap = copy("analysis"), copy("featuremap")
    _edit_json(fmap / "config.json", dim=4)
    _edit_json(analysis / "summary.json", featuremap=str(fmap))
    assert diagnose(analysis) == [
        f"{analysis}: its store has dim 8 but its feature map dim 4",
    ]


def test_cli_prints_ok_or_the_problems(artefacts: dict[str, Path], copy, capsys) -> None:
    assert main(["doctor", str(artefacts["store"])]) == 0
    ok, gap = capsys.readouterr().out.strip().splitlines()  # a sound store: its modality gap
    assert ok == "ok" and gap.startswith("modality gap: centroid distance")
    store = copy("store")
    _drop_pair(store)
    (store / "image" / "00000.npy").unlink()
    try:
        code = main(["doctor", str(store)])
    except SystemExit as e:
        code = e.code
    assert code not in (0, None)
    out = capsys.readouterr()
    lines = (out.out + out.err).strip().splitlines()
    assert len(lines) == 2 and "00000.npy: shard file is missing" in lines[0]
