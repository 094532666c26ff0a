"""Centring on planted data: modality-specific atoms plus a constant modality offset."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from monoscope._util import MonoscopeError, read_json
from monoscope.analysis.analyze import analyze, read_feature_table
from monoscope.featuremaps import load_featuremap
from monoscope.featuremaps.center import CenteredMap, modality_means
from monoscope.featuremaps.identity import IdentityMap
from monoscope.featuremaps.train import train_featuremap
from monoscope.store import Store, StoreWriter

D, SHARED, IMG, TXT = 24, range(0, 8), range(8, 12), range(12, 16)  # dims 16..23: noise only


def planted(n: int = 3000, seed: int = 0, gap: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned atoms firing with p = 0.15: 8 shared (both modalities of a pair, the text
    magnitude jittered), 4 image-only, 4 text-only; noise 0.02; then a constant offset of
    length ``gap`` between the modalities along a random direction spread over every axis."""
    rng = np.random.default_rng(seed)

    def codes(k: int) -> np.ndarray:
        return (rng.random((n, k)) < 0.15) * rng.uniform(0.5, 1.5, (n, k))

    img, txt = np.zeros((n, D)), np.zeros((n, D))
    shared = codes(len(SHARED))
    img[:, SHARED], txt[:, SHARED] = shared, shared * rng.uniform(0.8, 1.2, shared.shape)
    img[:, IMG], txt[:, TXT] = codes(len(IMG)), codes(len(TXT))
    img += 0.02 * rng.standard_normal((n, D))
    txt += 0.02 * rng.standard_normal((n, D))
    o = np.random.default_rng(99).standard_normal(D)
    o /= np.linalg.norm(o)
    return (img + gap / 2 * o).astype(np.float32), (txt - gap / 2 * o).astype(np.float32)


def write_store(path: Path, img: np.ndarray, txt: np.ndarray, shard: int = 1024) -> Store:
    header = {
        "model": {"kind": "test", "id": "planted"},
        "dim": img.shape[1],
        "normalized": False,
        "source": {"kind": "planted"},
        "shard_size": shard,
    }
    w = StoreWriter(path, header)
    for b, lo in enumerate(range(0, len(img), shard)):
        hi = min(len(img), lo + shard)
        rows = [
            {"id": str(i), "caption": "", "image_ref": None, "labels": {}} for i in range(lo, hi)
        ]
        w.add_shard(b, img[lo:hi], txt[lo:hi], rows, Counter())
    w.end(len(img))
    w.finish()
    return Store(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return write_store(tmp_path_factory.mktemp("planted") / "store", *planted())


QUICK = {"rule": "fixed", "null_sets": 10, "device": "cpu", "progress": False}


def _groups(analysis: Path) -> np.ndarray:
    return read_feature_table(analysis / "features.csv")["group"]


def test_wrapper_centres_projects_and_round_trips(store: Store, tmp_path: Path):
    inner = IdentityMap(D)
    mi, mt = modality_means(store)
    np.testing.assert_allclose(mi, store.load("image").astype(np.float64).mean(0), atol=1e-9)
    x = torch.from_numpy(store.load("image")[:50])
    for mode in ("mean", "gap"):
        fmap = CenteredMap.wrap(inner, mi, mt, mode)
        c = x - torch.from_numpy(mi).float()
        if mode == "gap":
            u = torch.from_numpy((mi - mt) / np.linalg.norm(mi - mt)).float()
            c = c - (c @ u)[:, None] * u
            assert fmap.transform(x, "text").matmul(u).abs().max() < 1e-5
        torch.testing.assert_close(fmap.encode(x, "image"), inner.encode(c))
        torch.testing.assert_close(
            fmap.decode(fmap.encode(x, "image"), "image"),
            c + torch.from_numpy(mi).float(),
        )
        fmap.save(tmp_path / mode)
        back = load_featuremap(tmp_path / mode)
        assert isinstance(back, CenteredMap) and back.mode == mode
        assert read_json(tmp_path / mode / "config.json")["hparams"]["inner"]["kind"] == "identity"
        torch.testing.assert_close(back.encode(x, "text"), fmap.encode(x, "text"))
    with pytest.raises(MonoscopeError, match="needs the modality"):
        fmap.encode(x)


def test_centring_removes_offset_groups_and_keeps_planted_atoms(store: Store, tmp_path: Path):
    """Raw dimensions: the offset alone makes shared and noise dimensions look modal;
    centred, exactly the planted image-only and text-only dimensions stay ImgD / TextD."""
    plain = _groups(analyze(store, IdentityMap(D), tmp_path / "plain", **QUICK))
    spurious = [k for k in [*SHARED, *range(16, D)] for k in (k, k + D)]
    assert sum(plain[k] in ("ImgD", "TextD") for k in spurious) >= 10
    img_dims = [*IMG, *(k + D for k in IMG)]  # both signs of each image-only dimension
    txt_dims = [*TXT, *(k + D for k in TXT)]
    for mode in ("mean", "gap"):
        fmap = train_featuremap(store, "identity", tmp_path / f"id-{mode}", center=mode)
        g = _groups(analyze(store, fmap, tmp_path / f"a-{mode}", **QUICK))
        assert sorted(np.flatnonzero(g == "ImgD")) == sorted(img_dims)
        assert sorted(np.flatnonzero(g == "TextD")) == sorted(txt_dims)
        summary = read_json(tmp_path / f"a-{mode}" / "summary.json")
        assert summary["center"]["mode"] == mode
        assert summary["center"]["means_from"] == "training store"
    # centring at analysis time gives the same answer for a map trained without it
    g = _groups(analyze(store, IdentityMap(D), tmp_path / "late", center="mean", **QUICK))
    assert sorted(np.flatnonzero(g == "ImgD")) == sorted(img_dims)
    assert read_json(tmp_path / "late" / "summary.json")["center"]["means_from"] == "this store"
    with pytest.raises(MonoscopeError, match="dimension 24 but the feature map expects 4"):
        analyze(store, IdentityMap(4), tmp_path / "dim", center="mean", **QUICK)
    with pytest.raises(MonoscopeError, match="already centres"):
        analyze(store, tmp_path / "id-mean", tmp_path / "twice", center="mean", **QUICK)


def test_centred_sae_recovers_atoms_with_the_right_groups(store: Store, tmp_path: Path):
    fm = train_featuremap(
        store, "sae-topk", tmp_path / "sae", center="mean", latents=48, k=4, steps=300,
        batch_size=256, progress=False,
    )  # fmt: skip
    config = read_json(fm / "config.json")
    assert config["kind"] == "centered" and config["training"]["center"] == "mean"
    g = _groups(analyze(store, fm, tmp_path / "a", **QUICK))
    dirs = load_featuremap(fm).decoder_directions().numpy()
    for atom in range(16):
        match = np.abs(dirs[:, atom])
        best = int(match.argmax())
        assert match[best] > 0.9, atom
        want = "ImgD" if atom in IMG else "TextD" if atom in TXT else "CrossD"
        assert g[best] == want, (atom, g[best])


def test_cli_center_options(store: Store, tmp_path: Path, capsys):
    from monoscope.cli import build_parser, main

    a = build_parser().parse_args(
        ["train", "--store", "s", "--method", "identity", "--out", "o", "--center"]
    )
    assert a.center == "mean"
    a = build_parser().parse_args(
        ["analyze", "--store", "s", "--featuremap", "f", "--out", "o", "--center", "gap"]
    )
    assert a.center == "gap"
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["analyze", "--store", "s", "--featuremap", "f", "--out", "o", "--center", "median"]
        )
    out = tmp_path / "fm"
    assert (
        main(
            [
                "train",
                "--store",
                str(store.path),
                "--method",
                "identity",
                "--out",
                str(out),
                "--center",
                "gap",
                "--quiet",
            ]
        )
        == 0
    )
    assert read_json(out / "config.json")["hparams"]["mode"] == "gap"


def test_compare_side_by_side(store: Store, tmp_path: Path, capsys):
    from monoscope.cli import main

    plain = analyze(store, IdentityMap(D), tmp_path / "plain", **QUICK)
    fm = train_featuremap(store, "identity", tmp_path / "idc", center="mean")
    centred = analyze(store, fm, tmp_path / "centred", **QUICK)
    out = tmp_path / "cmp"
    assert main(["compare", str(plain), str(centred), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "centring: " in printed and "keep their group" in printed
    (effect,) = read_json(out / "compare.json")["centring"]
    assert effect["matching"] == {"how": "same features", "matched": 2 * D}
    g_plain, g_cent = _groups(plain), _groups(centred)
    assert effect["n_changed"] == int((g_plain != g_cent).sum()) > 0
    for g in ("ImgD", "TextD"):
        s = effect["survive"][g]
        assert s["before"] == int((g_plain == g).sum())
        assert s["kept"] == int(((g_plain == g) & (g_cent == g)).sum())
    n = sum(v for row in effect["transitions"].values() for v in row.values())
    assert n == 2 * D
    assert sum(effect["group_shares"][effect["centred"]].values()) == pytest.approx(1.0)
    assert {c["plain"] for c in effect["changed"]} == set(np.flatnonzero(g_plain != g_cent))


def test_compare_matches_separately_trained_maps_by_direction(store: Store, tmp_path: Path):
    from monoscope.analysis.compare import compare

    common = {"latents": 48, "k": 4, "steps": 300, "batch_size": 256, "progress": False}
    plain = train_featuremap(store, "sae-topk", tmp_path / "p", **common)
    centred = train_featuremap(store, "sae-topk", tmp_path / "c", center="mean", **common)
    a = analyze(store, plain, tmp_path / "ap", **QUICK)
    b = analyze(store, centred, tmp_path / "ac", **QUICK)
    (effect,) = read_json(compare([a, b], tmp_path / "cmp") / "compare.json")["centring"]
    assert effect["matching"]["how"].startswith("mutual nearest directions")
    assert 0 < effect["matching"]["matched"] <= 48
    assert all(c["cosine"] >= 0.7 for c in effect["changed"])
    # the offset made modal features of shared atoms; centring returns some to CrossD
    assert (
        effect["transitions"].get("ImgD", {}).get("CrossD", 0)
        + effect["transitions"].get("TextD", {}).get("CrossD", 0)
        > 0
    )


def test_report_shows_the_centring_panel(store: Store, tmp_path: Path):
    from monoscope.analysis.compare import compare
    from monoscope.report import render_report

    plain = analyze(store, IdentityMap(D), tmp_path / "plain", **QUICK)
    centred = analyze(store, IdentityMap(D), tmp_path / "centred", center="gap", **QUICK)
    cmp_dir = compare([plain, centred], tmp_path / "cmp", names=["plain", "centred"])
    html = render_report(centred, tmp_path / "r.html", compare=cmp_dir).read_text()
    assert 'id="centring"' in html and "keep their group" in html
    assert "plain → centred" in html and "gap direction removed" in html


DDP_SCRIPT = """
import sys
import torch
torch.set_num_threads(1)
from monoscope.featuremaps.train import train_featuremap
train_featuremap(sys.argv[1], "ncl", sys.argv[2], center="gap", latents=16, batch_size=64,
                 steps=20, progress=False)
"""


def test_two_ranks_train_the_same_centred_ncl_as_one(tmp_path: Path):
    """Data-parallel NCL swaps ``pre_acts`` for a gathering one during each step: the centred
    wrapper forwards the swap to the map it wraps."""
    import os
    import socket
    import subprocess
    import sys

    from safetensors.torch import load_file

    store = write_store(tmp_path / "s", *planted(256), shard=64)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DDP_SCRIPT, str(store.path), str(tmp_path / "ddp")],
            env={
                **os.environ,
                "RANK": str(r),
                "LOCAL_RANK": str(r),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            },
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    ref = train_featuremap(
        store, "ncl", tmp_path / "ref", center="gap", latents=16, batch_size=64, steps=20,
        progress=False,
    )  # fmt: skip
    a = load_file(str(ref / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    assert a.keys() == b.keys() and "mean_image" in a
    for key in a:
        np.testing.assert_allclose(b[key].numpy(), a[key].numpy(), rtol=0, atol=1e-4)
