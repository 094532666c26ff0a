"""The HTML report: data, self-containment, thumbnail dedup, optional sections, histograms, and
headless-Chromium checks (no script errors, thumbnails decode, filters work, screenshots).

Two fixtures: a hand-built analysis with edge cases (a caption that needs escaping, repeated
images, dead features, short top lists), and a small but real run (emoji pairs through a toy
dual encoder, a TopK SAE, analyze, word drivers, ablation, compare, one fake case study)."""

from __future__ import annotations

import base64
import colorsys
import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from monoscope._util import MonoscopeError, save_npy, write_json
from monoscope.artefacts import Analysis
from monoscope.report import render_report
from monoscope.report.histograms import from_exact, from_top
from monoscope.report.html import choose_features, read_features, select_top

K, N, M = 30, 40, 20
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
TRICKY = "a <b>bold</b> & 'quoted' </script> caption"
SAME = {37: 1, 38: 0, 39: 0}  # pair -> pair whose image it repeats
GROUPS = ("ImgD", "TextD", "CrossD")


def _image(i: int) -> Image.Image:
    """A 96 px image with a distinct colour per index."""
    r, g, b = (int(255 * c) for c in colorsys.hsv_to_rgb(i / N, 0.7, 0.95))
    img = Image.new("RGB", (96, 96), (r, g, b))
    img.paste((255, 255, 255), (24, 24, 72, 72))
    img.paste((r // 2, g // 2, b // 2), (36, 36, 60, 60))
    return img


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hand-built analysis + store: 30 features (3 dead), 40 pairs with 96 px PNGs.

    Pairs 38 and 39 reuse pair 0's file, pair 37 is a copy of pair 1's image under another
    path, so the report must encode 37 distinct images at most. No ``name`` column, no
    metric columns, flat feature-map metrics: the old layout still renders.
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

    counts = {g: int(np.sum(group == g)) for g in GROUPS}
    write_json(
        out / "summary.json",
        {
            "format_version": 2,
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


def _script_json(html: str, name: str) -> Any:
    m = re.search(rf'<script type="application/json" id="monoscope-{name}">(.*?)</script>', html)
    assert m, f"#monoscope-{name} missing"
    return json.loads(m.group(1))


def _alive_ids(analysis: Path) -> list[int]:
    return [f.id for f in read_features(analysis / "features.csv") if f.alive]


def test_select_top_and_choose_features(analysis: Path) -> None:
    features = read_features(analysis / "features.csv")
    feats = {f.id: f for f in features}
    for g in GROUPS:
        ids = [f.id for f in select_top(features, g, None)]
        assert sorted(ids) == sorted(f.id for f in features if f.alive and f.group == g)
        if g == "ImgD":
            assert [feats[i].mds for i in ids] == sorted((feats[i].mds for i in ids), reverse=True)
        elif g == "TextD":
            assert [feats[i].mds for i in ids] == sorted(feats[i].mds for i in ids)
        else:
            cross = [min(feats[i].mu_img, feats[i].mu_txt) for i in ids]
            assert cross == sorted(cross, reverse=True)
    assert [f.id for f in choose_features(features, None)] == _alive_ids(analysis)
    capped = choose_features(features, 9)
    assert len(capped) <= 9 and {f.group for f in capped} == set(GROUPS)
    for g in GROUPS:  # each group keeps its most characteristic members
        kept = {f.id for f in capped if f.group == g}
        assert kept == {f.id for f in select_top(features, g, len(kept))}


def test_explorer_holds_every_alive_feature(analysis: Path, report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    data = _script_json(html, "features")
    cols = data["cols"]
    assert cols["id"] == _alive_ids(analysis)
    feats = {f.id: f for f in read_features(analysis / "features.csv")}
    assert [data["groups"][g] for g in cols["g"]] == [feats[i].group for i in cols["id"]]
    assert "lo" not in cols and "ei" not in cols  # columns the analysis lacks are left out
    top_img = np.load(analysis / "top" / "image_idx.npy")
    top_txt = np.load(analysis / "top" / "text_idx.npy")
    captions = [p[0] for p in data["pairs"]]
    for j, k in enumerate(cols["id"]):
        want_img = [int(r) for r in top_img[k, :8] if r >= 0]
        assert [captions[p] for p in data["img"][j]] == [_caption(r) for r in want_img]
        want_txt = [int(r) for r in top_txt[k, :10] if r >= 0]
        assert [captions[p] for p in data["txt"][j]] == [_caption(r) for r in want_txt]
        assert data["txtv"][j] == sorted(data["txtv"][j], reverse=True)
        assert len(data["hist"]["img"][j]) == len(data["hist"]["txt"][j]) == 12
    assert len(set(captions)) == len(captions)  # one entry per pair
    assert data["hist"]["source"] == "top"  # no feature map on disk: top-m stand-in


def _caption(row: int) -> str:
    return TRICKY if row == 5 else f"caption number {row}"


def test_report_is_self_contained(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html
    markup = re.sub(r"<script.*?</script>", "", html, flags=re.S)
    assert all(s.startswith("data:") for s in re.findall(r'\ssrc="([^"]*)"', markup))
    assert "Content-Security-Policy" in html
    assert TRICKY not in html and "<b>bold</b>" not in html  # only inside JSON, escaped
    assert TRICKY in [p[0] for p in _script_json(html, "features")["pairs"]]
    assert html.count("</script>") == html.count("<script")


def test_thumbnails_deduplicated_and_small(analysis: Path, report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    thumbs = _script_json(html, "thumbs")
    data = _script_json(html, "features")
    image_idx = np.load(analysis / "top" / "image_idx.npy")
    rows = {int(r) for k in _alive_ids(analysis) for r in image_idx[k, :8] if r >= 0}
    assert len(thumbs) == len({SAME.get(r, r) for r in rows})
    used = [data["pairs"][p][1] for img in data["img"] for p in img]
    assert set(used) == set(thumbs) and len(used) > len(thumbs)
    assert html.count("data:image/webp") == len(thumbs)
    for uri in thumbs.values():
        assert html.count(uri) == 1
        img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert max(img.size) <= 64


def test_report_overview_and_plots(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    for text in ("pocket", "emoji", "sae-topk", "FVU", "0.123", "95% CI", "dead fraction"):
        assert text in html
    assert html.count("<svg") >= 4  # MDS histogram, group sizes, frequency and mean scatter
    assert 'id="explorer"' in html and 'id="fx-cards"' in html
    for absent in ('id="ablation"', 'id="words"', 'id="studies"', 'id="metrics"'):
        assert absent not in html
    assert len(set(re.findall(r'\bid="([^"]+)"', html))) == len(re.findall(r'\bid="', html))


def test_report_without_store_still_renders(analysis: Path, tmp_path: Path) -> None:
    moved = tmp_path / "analysis"
    shutil.copytree(analysis, moved)
    summary = json.loads((moved / "summary.json").read_text())
    summary["store"] = str(tmp_path / "gone")
    (moved / "summary.json").write_text(json.dumps(summary))
    html = render_report(moved, tmp_path / "r.html").read_text()
    assert "Store not found" in html and _script_json(html, "thumbs") == {}
    data = _script_json(html, "features")
    assert data["cols"]["id"] == _alive_ids(analysis) and data["pairs"] == []


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
    html = render_report(moved, tmp_path / "r.html").read_text()
    assert "1 thumbnail(s) could not be loaded" in html and _script_json(html, "thumbs") == {}
    data = _script_json(html, "features")
    assert data["img"][0] and all(p[1] is None for p in data["pairs"])
    assert "caption number" in html


# ---- a small real run ---------------------------------------------------------------------

D = 24
WORD = re.compile(r"[a-z0-9]+")


def _word_vec(word: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(D).astype(np.float32)


class BagEncoder:
    """A toy dual encoder with planted structure: captions embed as a bag of hashed word
    vectors; an image embeds as a projection of its 4x4 pixels plus the vectors of two thirds
    of its caption's words (looked up by pixel hash), so some features are shared by both
    modalities, some only visual, some only textual."""

    dim = D

    def __init__(self) -> None:
        from monoscope.data.emoji import emoji_array

        images, records = emoji_array()
        self.caption = {
            hashlib.sha1(im.tobytes()).hexdigest(): r["caption"]
            for im, r in zip(images, records, strict=True)
        }
        self.proj = np.random.default_rng(1).standard_normal((48, D)).astype(np.float32) / 4

    def info(self) -> dict[str, Any]:
        return {"kind": "toy", "id": "bag-of-words-toy", "revision": "0"}

    def _bag(self, words: list[str]) -> np.ndarray:
        if not words:
            return np.zeros(D, np.float32)
        return np.sum([_word_vec(w) for w in words], 0) / np.sqrt(len(words))

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        rows = [self._bag(WORD.findall(t.lower())) for t in texts]
        return torch.from_numpy(np.stack(rows).astype(np.float32))

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        rows = []
        for im in images:
            rgb = np.asarray(im.convert("RGB"))
            caption = self.caption.get(hashlib.sha1(rgb.tobytes()).hexdigest(), "")
            words = [
                w for w in WORD.findall(caption.lower()) if hashlib.md5(w.encode()).digest()[0] % 3
            ]
            pixels = np.asarray(im.convert("RGB").resize((4, 4)), np.float32).reshape(-1)
            rows.append(0.8 * self._bag(words) + 2.0 * (pixels / 255 - 0.5) @ self.proj)
        return torch.from_numpy(np.stack(rows).astype(np.float32))


class EmojiSubset:
    """Every k-th bundled emoji pair, ``n`` in all."""

    def __init__(self, n: int) -> None:
        from monoscope.data.emoji import EmojiPairs

        self.n, self.source = n, EmojiPairs()

    def __len__(self) -> int:
        return self.n

    def describe(self) -> dict[str, Any]:
        return {**self.source.describe(), "count": self.n, "selection": "every k-th pair"}

    def __iter__(self):
        step = len(self.source) // self.n
        for i, pair in enumerate(self.source):
            if i % step == 0 and i // step < self.n:
                yield pair


def _fake_study(path: Path) -> None:
    path.mkdir(parents=True)
    img = Image.new("RGB", (480, 240), "white")
    for i, colour in enumerate(("#E69F00", "#0072B2", "#009E73")):
        img.paste(colour, (40 + 150 * i, 240 - 60 * (i + 1), 140 + 150 * i, 230))
    img.save(path / "gender_accuracy.png")
    write_json(
        path / "gender.json",
        {
            "classes": ["woman", "man"],
            "baseline": {"woman": {"mean": 0.81, "ci": [0.77, 0.85]}, "gap": 0.07},
            "n_images": {"woman": 120, "man": 118},
            "paper_finding": {
                "woman_concepts_mainly_in_ImgD": {
                    "criterion": "ImgD is largest",
                    "verdict": "holds",
                }
            },
            "figures": ["gender_accuracy.png"],
            "settings": {"seed": 0},
        },
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """store/, featuremap/, analysis/ (+ words.json), ablation/, compare/, studies/gender/."""
    from monoscope.analysis.ablation import ablate
    from monoscope.analysis.analyze import analyze
    from monoscope.analysis.compare import compare
    from monoscope.analysis.words import word_drivers
    from monoscope.embed import embed
    from monoscope.featuremaps import load_featuremap
    from monoscope.featuremaps.train import train_featuremap
    from monoscope.store import Store

    root = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a busy machine
    try:
        enc = BagEncoder()
        store = embed(enc, EmojiSubset(360), root / "store", device="cpu", progress=False)
        fmap = train_featuremap(
            store, "sae-topk", root / "featuremap", latents=96, k=4, steps=150, batch_size=128,
            device="cpu", progress=False,
        )  # fmt: skip
        common = {"device": "cpu", "progress": False}
        analysis = analyze(store, fmap, root / "analysis", null_sets=200, min_firings=5, **common)
        word_drivers(Store(store), load_featuremap(fmap), analysis, enc, top_features=8)
        ablate(
            store, fmap, root / "ablation", analysis=analysis, model=enc, control_seeds=2, **common
        )
        ident = train_featuremap(store, "identity", root / "identity", **common)
        other = analyze(store, ident, root / "identity-analysis", null_sets=100, **common)
        compare([analysis, other], root / "compare", names=["SAE top-k", "raw dims"])
    finally:
        torch.set_num_threads(threads)
    _fake_study(root / "studies" / "gender")
    return root


@pytest.fixture(scope="module")
def run_report(run: Path) -> Path:
    return render_report(run / "analysis", run / "report.html")


def test_run_report_has_every_section(run: Path, run_report: Path) -> None:
    html = run_report.read_text(encoding="utf-8")
    for section in ("overview", "modality", "metrics", "ablation", "words", "explorer"):
        assert f'<section id="{section}"' in html, section
    for plot in ("mds", "groups", "mds-ci", "freq", "scatter", "compare", "metrics", "msweep"):
        assert f'id="plot-{plot}"' in html, plot
    assert 'id="plot-ablation"' in html and "random same-size set" in html
    # the case study: its figure inlined with alt text, its verdict and its numbers
    assert 'id="study-gender"' in html and "gender accuracy" not in html.lower().split("<img")[0]
    assert re.search(r'<img class="fig" src="data:image/png;base64,[^"]+"[^>]*alt="Gender: ', html)
    assert "woman concepts mainly in ImgD" in html and ">holds<" in html
    assert "baseline › woman" in html and "0.81  [0.77, 0.85]" in html
    assert "settings › seed" not in html
    assert "SAE top-k &gt; raw dims" in html  # the WinRate table
    data = _script_json(html, "features")
    assert data["hist"]["source"] == "store" and data["hist"]["n"] == 360
    # numbers that could be confused name their samples; no path of this machine is shown
    assert "in feature space, on a 360-pair sample" in html
    assert "measured again on 360 pairs" in html and "never active" in html
    assert "no firing in the last" in html
    assert str(run) not in html
    words = json.loads((run / "analysis" / "words.json").read_text())["features"]
    assert data["words"] and set(data["words"]) <= set(words)
    assert any(data["name"])
    assert len(set(re.findall(r'\bid="([^"]+)"', html))) == len(re.findall(r'\bid="', html))


def test_run_inputs_explicit_and_discovery(run: Path, tmp_path: Path) -> None:
    quick = {"exact_histograms": False, "discover": False}
    bare = render_report(run / "analysis", tmp_path / "a.html", **quick).read_text()
    for absent in ('id="ablation"', 'id="studies"', 'id="plot-compare"'):
        assert absent not in bare
    assert 'id="words"' in bare  # words.json belongs to the analysis itself
    html = render_report(
        run / "analysis",
        tmp_path / "b.html",
        ablation=run / "ablation" / "ablation.json",
        compare=tmp_path / "no-compare",
        studies=[run / "studies" / "gender" / "gender.json", tmp_path / "nowhere"],
        **quick,
    ).read_text()
    assert 'id="plot-ablation"' in html and 'id="plot-compare"' not in html
    assert html.count('<article class="study"') == 1
    assert "study results not found" in html and "compare results not found" in html


def test_histograms_of_the_analysis_match_direct_count(run: Path) -> None:
    """The report's bins are whole bins of the analysis pass's histograms: each holds exactly
    the feature's non-zero activations in (j w, (j + 1) w], counted here by brute force."""
    from monoscope.featuremaps import load_featuremap
    from monoscope.store import Store

    analysis = Analysis(run / "analysis")
    assert analysis.histograms is not None and analysis.histograms.n_pairs == 360
    hist = from_exact(analysis.histograms)
    assert hist.source == "store"
    fmap, store = load_featuremap(run / "featuremap"), Store(run / "store")
    with torch.inference_mode():
        acts = {m: fmap.encode(torch.from_numpy(store.load(m)), m).numpy() for m in
                ("image", "text")}  # fmt: skip
    for k in range(fmap.n_features):
        top = max(acts["image"][:, k].max(), acts["text"][:, k].max())
        assert (hist.hi[k] == 0) if top <= 0 else (top <= hist.hi[k] <= top * 4 / 3 + 1e-9)
        for m, got in (("image", hist.image), ("text", hist.text)):
            a = acts[m][:, k][acts[m][:, k] > 0].astype(np.float64)
            b = np.clip(np.ceil(a / (hist.hi[k] / 12)).astype(int) - 1, 0, 11)
            assert got[k].tolist() == np.bincount(b, minlength=12).tolist()
    top = analysis.top
    stand_in = from_top(dict(top))
    assert stand_in.source == "top" and (stand_in.image.sum(1) <= top["image_idx"].shape[1]).all()


def test_report_imports_no_torch(analysis: Path, tmp_path: Path) -> None:
    """The report renders from the artefacts alone: neither torch nor a feature map."""
    code = (
        "import sys; from monoscope.report import render_report; "
        f"render_report({str(analysis)!r}, {str(tmp_path / 'r.html')!r}); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "r.html").is_file()


def test_report_names_no_absolute_path(analysis: Path, report: Path) -> None:
    root = str(analysis.parent)
    html = report.read_text(encoding="utf-8")
    assert root not in html and str(Path.cwd()) not in html
    summary = _script_json(html, "summary")
    assert summary["store"] == "../store" and summary["featuremap"] == "../fmap"
    assert "from ../analysis." in html


def test_report_rejects_old_or_broken_analysis(analysis: Path, tmp_path: Path) -> None:
    moved = tmp_path / "analysis"
    shutil.copytree(analysis, moved)
    summary = json.loads((moved / "summary.json").read_text())
    del summary["format_version"]
    (moved / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(MonoscopeError, match="summary.json: no format_version: written by an"):
        render_report(moved, tmp_path / "r.html")
    summary["format_version"] = 3
    (moved / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(MonoscopeError, match="format_version 3 is newer"):
        render_report(moved, tmp_path / "r.html")
    summary["format_version"] = 2
    (moved / "summary.json").write_text(json.dumps(summary))
    lines = (moved / "features.csv").read_text().splitlines()
    (moved / "features.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(MonoscopeError, match=f"features.csv: {K - 1} rows, summary.json says"):
        render_report(moved, tmp_path / "r.html")


# ---- the page in headless Chromium --------------------------------------------------------


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
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp}",
        "--virtual-time-budget=5000",
    ]
    return subprocess.run(
        [exe, *flags, *args], capture_output=True, text=True, timeout=60, check=False
    )


def _dom(url: str, tmp: Path) -> str:
    proc = _chromium("--dump-dom", url, tmp=tmp)
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not [ln for ln in console if "rror" in ln or "Uncaught" in ln], console
    dom = proc.stdout
    html_tag = re.search(r"<html[^>]*>", dom)
    assert html_tag and 'data-errors="0"' in html_tag.group(0), html_tag
    assert re.search(r'<body[^>]*data-ready="1"', dom), f"explorer did not start: {dom[:300]!r}"
    return dom


def _cards(dom: str) -> list[tuple[int, str]]:
    found = re.findall(
        r'<article class="card card-\w+" data-feature="(\d+)" data-group="(\w+)"', dom
    )
    return [(int(k), g) for k, g in found]


def _attr(dom: str, element: str, name: str) -> str:
    m = re.search(rf'<{element}[^>]*\s{name}="([^"]*)"', dom)
    assert m, f"{element} has no {name}"
    return m.group(1)


@pytest.mark.browser
def test_browser_default_view(run: Path, run_report: Path, tmp_path: Path) -> None:
    url = run_report.resolve().as_uri()
    dom = _dom(url, tmp_path / "p")
    ok, total = map(int, _attr(dom, "body", "data-images-ok").split("/"))
    assert total > 48 and ok == total  # every thumbnail of the first page decoded
    data = _script_json(run_report.read_text(encoding="utf-8"), "features")
    n = len(data["cols"]["id"])
    cards = _cards(dom)
    assert len(cards) == min(48, n) == int(_attr(dom, 'div class="cards"', "data-shown"))
    assert int(_attr(dom, 'div class="cards"', "data-matching")) == n
    shown = [g for _, g in cards]
    assert set(GROUPS) <= set(shown)  # the default sort interleaves the groups
    # well-supported features first: no verdict after an undetermined or rare card
    weak = [i for i, g in enumerate(shown) if g not in GROUPS]
    assert not weak or all(g not in GROUPS for g in shown[weak[0] :])
    assert re.search(r'<img src="data:image/webp;base64,[^"]+" width="64" height="64" alt="', dom)
    assert float(_attr(dom, 'div class="cards"', "data-render-ms")) < 2000
    options = re.findall(r'<option value="(\w+)"', dom)
    assert options[:3] == ["coherence", "mds", "freq"] and options[-1] == "id"


@pytest.mark.browser
def test_browser_filters_from_url_hash(run: Path, run_report: Path, tmp_path: Path) -> None:
    url = run_report.resolve().as_uri()
    data = _script_json(run_report.read_text(encoding="utf-8"), "features")
    cols = data["cols"]
    groups = [data["groups"][g] for g in cols["g"]]

    dom = _dom(url + "#group=TextD", tmp_path / "p1")
    cards = _cards(dom)
    assert cards and {g for _, g in cards} == {"TextD"}
    assert int(_attr(dom, 'div class="cards"', "data-matching")) == groups.count("TextD")
    assert re.search(r'<button[^>]*data-group="TextD" aria-pressed="true"', dom)

    # group names in the wrong case still match; unknown ones are reported, not silently empty
    dom = _dom(url + "#group=textd,Nonsense", tmp_path / "p1b")
    assert {g for _, g in _cards(dom)} == {"TextD"}
    assert "ignored unknown group Nonsense" in dom

    # text search (name, captions, words) within an MDS range
    word = "face"
    expected = set()
    for j, k in enumerate(cols["id"]):
        parts = [data["name"][j], *(data["pairs"][p][0] for p in data["img"][j] + data["txt"][j])]
        parts += [w for w, _ in data["words"].get(str(k), [])]
        if word in "\n".join(parts).lower() and 0.2 <= cols["mds"][j] <= 0.9:
            expected.add(k)
    assert expected
    dom = _dom(url + f"#q={word}&mds=0.20-0.90&sort=id&dir=asc", tmp_path / "p2")
    assert int(_attr(dom, 'div class="cards"', "data-matching")) == len(expected)
    assert [k for k, _ in _cards(dom)] == sorted(expected)[:48]

    # one feature by link; and paging through the id order
    k = cols["id"][len(cols["id"]) // 2]
    assert [c for c, _ in _cards(_dom(url + f"#feature={k}", tmp_path / "p3"))] == [k]
    page2 = [c for c, _ in _cards(_dom(url + "#sort=id&dir=asc&page=2", tmp_path / "p4"))]
    assert page2 == sorted(cols["id"])[48:96]


@pytest.mark.browser
def test_browser_screenshots(run_report: Path, tmp_path: Path) -> None:
    """Wide and narrow full-page screenshots (test-artifacts/, git-ignored) for a human look."""
    url = run_report.resolve().as_uri()
    ARTIFACTS.mkdir(exist_ok=True)
    for name, size in (("report.png", "1280,7400"), ("report-narrow.png", "390,16000")):
        shot = ARTIFACTS / name
        shot.unlink(missing_ok=True)
        args = (f"--window-size={size}", "--hide-scrollbars", f"--screenshot={shot}")
        _chromium("--run-all-compositor-stages-before-draw", *args, url, tmp=tmp_path / name)
        assert shot.is_file() and shot.stat().st_size > 20_000, name
        with Image.open(shot) as img:
            assert img.size == tuple(int(v) for v in size.split(","))
            assert len(img.convert("RGB").getcolors(1 << 24) or []) > 50  # not a blank page
