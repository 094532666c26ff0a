"""The HTML report: structure, self-containment, thumbnail dedup, and a headless-Chromium check."""

from __future__ import annotations

import base64
import colorsys
import csv
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monoscope._util import save_npy, write_json
from monoscope.report import render_report
from monoscope.report.html import read_features, select_top

K, N, M = 30, 40, 20
REPO = Path(__file__).resolve().parents[1]
TRICKY = "a <b>bold</b> & 'quoted' caption"
SAME = {37: 1, 38: 0, 39: 0}  # pair -> pair whose image it repeats


def _image(i: int) -> Image.Image:
    """A 96 px image with a distinct colour per index."""
    r, g, b = (int(255 * c) for c in colorsys.hsv_to_rgb(i / N, 0.7, 0.95))
    img = Image.new("RGB", (96, 96), (r, g, b))
    img.paste((255, 255, 255), (24, 24, 72, 72))
    img.paste((r // 2, g // 2, b // 2), (36, 36, 60, 60))
    return img


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake analysis + store: 30 features (3 dead), 40 pairs with 96 px PNGs.

    Pairs 38 and 39 reuse pair 0's file, pair 37 is a copy of pair 1's image under another
    path, so the report must encode 37 distinct images at most.
    """
    root = tmp_path_factory.mktemp("report")
    store, images, out = root / "store", root / "images", root / "analysis"
    images.mkdir()
    store.mkdir()
    with (store / "pairs.jsonl").open("w") as f:
        for i in range(N):
            path = images / f"img{SAME.get(i, i) if i in (38, 39) else i}.png"
            if i < 38:
                _image(SAME.get(i, i)).save(path)
            caption = TRICKY if i == 5 else f"caption number {i}"
            rec = {"id": f"p{i}", "caption": caption, "image_ref": str(path), "labels": {}}
            f.write(json.dumps(rec) + "\n")

    rng = np.random.default_rng(0)
    mu_img, mu_txt = rng.gamma(2.0, 0.5, K), rng.gamma(2.0, 0.5, K)
    alive = np.ones(K, bool)
    alive[[3, 17, 25]] = False
    mu_img[~alive] = mu_txt[~alive] = 0.0
    mds = np.where(alive, mu_img / np.maximum(mu_img + mu_txt, 1e-12), np.nan)
    mean, std = float(np.nanmean(mds)), float(np.nanstd(mds))
    low, high = mean - std, mean + std
    group = np.where(mds > high, "ImgD", np.where(mds < low, "TextD", "CrossD"))
    group[~alive] = "dead"
    (out / "top").mkdir(parents=True)
    with (out / "features.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["feature", "alive", "mu_img", "mu_txt", "mds", "group", "freq_img", "freq_txt"])
        for k in range(K):
            freq = rng.uniform(0, 1, 2) * alive[k]
            w.writerow([k, int(alive[k]), mu_img[k], mu_txt[k], mds[k], group[k], *freq])

    idx = {m: np.full((K, M), -1, np.int64) for m in ("image", "text")}
    val = {m: np.zeros((K, M), np.float32) for m in ("image", "text")}
    for k in np.flatnonzero(alive):
        for m in ("image", "text"):
            n_active = M if k % 4 else 5  # some features have fewer than m active samples
            idx[m][k, :n_active] = rng.permutation(N)[:n_active]
            val[m][k, :n_active] = np.sort(rng.uniform(0.1, 3.0, n_active))[::-1]
    for m in ("image", "text"):
        save_npy(out / "top" / f"{m}_idx.npy", idx[m])
        save_npy(out / "top" / f"{m}_val.npy", val[m])

    counts = {g: int(np.sum(group == g)) for g in ("ImgD", "TextD", "CrossD")}
    write_json(
        out / "summary.json",
        {
            "n_features": K,
            "n_alive": int(alive.sum()),
            "mds": {"definition": "ratio-of-means", "mean": mean, "std": std},
            "grouping": {"rule": "std", "low": low, "high": high},
            "groups": {g: {"count": c, "ci": [max(c - 2, 0), c + 3]} for g, c in counts.items()},
            "top_m": M,
            "store": str(store),
            "featuremap": str(root / "fmap"),
            "featuremap_kind": "sae-topk",
            "model": {"id": "pocket", "dim": 64},
            "source": {"name": "emoji", "count": N},
            "n_pairs": N,
            "seed": 0,
            "versions": {"monoscope": "0.1.0", "numpy": np.__version__},
            "featuremap_metrics": {"fvu": 0.123, "l0": 16.0, "dead_fraction": 0.1},
        },
    )
    return out


@pytest.fixture(scope="module")
def report(analysis: Path) -> Path:
    return render_report(analysis, analysis.parent / "out" / "report.html")


def _thumb_map(html: str) -> dict[str, str]:
    m = re.search(r'<script type="application/json" id="monoscope-thumbs">(.*?)</script>', html)
    assert m, "thumbnail map missing"
    return json.loads(m.group(1))


def _expected(analysis: Path, n: int = 12) -> dict[str, list[int]]:
    features = read_features(analysis / "features.csv")
    return {g: [f.id for f in select_top(features, g, n)] for g in ("ImgD", "TextD", "CrossD")}


def test_report_cards_per_group_in_order(analysis: Path, report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    expected = _expected(analysis)
    assert all(expected.values()) and len(expected["CrossD"]) == 12  # fixture covers the cap
    for g, ids in expected.items():
        found = re.findall(rf'<article class="card card-{g}" data-feature="(\d+)"', html)
        assert [int(i) for i in found] == ids
    feats = {f.id: f for f in read_features(analysis / "features.csv")}
    imgd = [feats[i].mds for i in expected["ImgD"]]
    textd = [feats[i].mds for i in expected["TextD"]]
    assert imgd == sorted(imgd, reverse=True) and textd == sorted(textd)
    cross = [min(feats[i].mu_img, feats[i].mu_txt) for i in expected["CrossD"]]
    assert cross == sorted(cross, reverse=True)


def test_report_is_self_contained(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html
    assert all(s.startswith("data:") for s in re.findall(r'\ssrc="([^"]*)"', html))
    assert "Content-Security-Policy" in html
    assert TRICKY not in html and "a &lt;b&gt;bold&lt;/b&gt; &amp;" in html  # escaped


def test_thumbnails_deduplicated_and_small(analysis: Path, report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    thumbs = _thumb_map(html)
    image_idx = np.load(analysis / "top" / "image_idx.npy")
    rows = {int(r) for ids in _expected(analysis).values() for k in ids for r in image_idx[k, :8]}
    rows.discard(-1)
    distinct = {SAME.get(r, r) for r in rows}
    assert len(thumbs) == len(distinct)
    n_imgs = len(re.findall(r"<img data-thumb=", html))
    assert n_imgs > len(thumbs)
    assert html.count("data:image/webp") == len(thumbs)
    for uri in thumbs.values():
        assert html.count(uri) == 1
        img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert max(img.size) <= 64


def test_report_overview_and_plots(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    for text in ("pocket", "emoji", "sae-topk", "FVU", "0.123", "95% CI"):
        assert text in html
    assert html.count("<svg") == 3
    assert len(set(re.findall(r'\bid="([^"]+)"', html))) == len(re.findall(r'\bid="', html))


def test_report_without_store_still_renders(analysis: Path, tmp_path: Path) -> None:
    moved = tmp_path / "analysis"
    shutil.copytree(analysis, moved)
    summary = json.loads((moved / "summary.json").read_text())
    summary["store"] = str(tmp_path / "gone")
    (moved / "summary.json").write_text(json.dumps(summary))
    html = render_report(moved, tmp_path / "r.html", top_features_per_group=2).read_text()
    assert "Store not found" in html and _thumb_map(html) == {}
    assert len(re.findall(r'<article class="card', html)) == 6


def test_unreadable_images_become_placeholders(analysis: Path, tmp_path: Path) -> None:
    moved, store = tmp_path / "analysis", tmp_path / "store"
    shutil.copytree(analysis, moved)
    store.mkdir()
    old = Path(json.loads((moved / "summary.json").read_text())["store"]) / "pairs.jsonl"
    recs = [json.loads(line) for line in old.read_text().splitlines()]
    for rec in recs:
        rec["image_ref"] = str(tmp_path / "missing.png")
    (store / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    summary = json.loads((moved / "summary.json").read_text())
    summary["store"] = str(store)
    (moved / "summary.json").write_text(json.dumps(summary))
    html = render_report(moved, tmp_path / "r.html", top_features_per_group=2).read_text()
    assert "1 thumbnail(s) could not be loaded" in html and _thumb_map(html) == {}
    assert "<img data-thumb" not in html and 'class="thumb-missing"' in html
    assert "caption number" in html


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp}",
        "--virtual-time-budget=5000",
    ]
    return subprocess.run(
        [exe, *flags, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.browser
def test_report_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    url = report.resolve().as_uri()
    dom = _chromium("--dump-dom", url, tmp=tmp_path / "profile").stdout
    m = re.search(r'data-images-ok="(\d+)/(\d+)"', dom)
    assert m, f"images check did not run; DOM starts: {dom[:300]!r}"
    ok, total = int(m.group(1)), int(m.group(2))
    assert total > 0 and ok == total

    shot = REPO / "test-artifacts" / "report.png"
    shot.parent.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    args = (
        "--window-size=1200,900",
        "--run-all-compositor-stages-before-draw",
        "--hide-scrollbars",
    )
    _chromium(*args, f"--screenshot={shot}", url, tmp=tmp_path / "profile2")
    assert shot.is_file() and shot.stat().st_size > 20_000
    with Image.open(shot) as img:
        assert img.size == (1200, 900)
        assert len(img.convert("RGB").getcolors(1 << 24) or []) > 50  # not a blank page
