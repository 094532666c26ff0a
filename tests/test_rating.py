"""The blind rating mode: the sample (unit), and the whole flow in headless Chromium driven by
selenium (open, rate, export, agree)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from monoscope.analysis.agreement import LABELS
from monoscope.report.html import read_features

N_PAIRS = 80


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run: images on disk, the toy encoder, raw dimensions, an analysis."""
    from conftest import ToyEncoder, colour_image
    from monoscope.analysis.analyze import analyze
    from monoscope.data import open_source
    from monoscope.embed import embed
    from monoscope.featuremaps.identity import IdentityMap

    root = tmp_path_factory.mktemp("rating")
    (root / "images").mkdir()
    with (root / "pairs.jsonl").open("w") as f:
        for i in range(N_PAIRS):
            colour_image(i).resize((32, 32)).save(root / "images" / f"{i}.png")
            f.write(
                json.dumps({"image": f"images/{i}.png", "caption": f"a thing number {i}"}) + "\n"
            )
    store = embed(
        ToyEncoder(), open_source(str(root / "pairs.jsonl")), root / "store", device="cpu",
        progress=False,
    )  # fmt: skip
    analyze(
        store, IdentityMap(8), root / "analysis", rule="fixed", low=0.45, high=0.55,
        null_sets=10, device="cpu", progress=False,
    )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def report(run: Path) -> Path:
    from monoscope.report import render_report

    return render_report(run / "analysis", run / "report.html")


def _sample(html: str) -> dict:
    start = html.index('<script type="application/json" id="monoscope-rating">')
    body = html[start:].split(">", 1)[1].split("</script>", 1)[0]
    return json.loads(body)


def test_sample_is_stratified_supported_and_shuffled(run: Path, report: Path):
    from monoscope.report.rating import rating_sample

    sample = _sample(report.read_text())
    feats = {f.id: f for f in read_features(run / "analysis" / "features.csv")}
    assert sample["ids"] and len(set(sample["ids"])) == len(sample["ids"])
    groups = [feats[k].group for k in sample["ids"]]
    assert {g: groups.count(g) for g in set(groups)} == sample["strata"]
    for k in sample["ids"]:
        assert (feats[k].freq_img + feats[k].freq_txt) * N_PAIRS >= sample["min_support"]
    assert sample["labels"] == list(LABELS) and sample["analysis"]["n_features"] == 16

    class F:  # extra and unknown labels are strata like any other; dead ones never
        def __init__(self, k, g):
            self.id, self.group, self.freq_img, self.freq_txt = k, g, 0.5, 0.5

    feats = [F(k, g) for k, g in enumerate(["rare", "undetermined", "dead", "ImgD"] * 10)]
    explorer = {"img": [[1]] * 40, "txt": [[]] * 40}
    s = rating_sample(feats, explorer, {"n_pairs": 100}, per_group=3, seed=1)
    assert s["strata"] == {"ImgD": 3, "rare": 3, "undetermined": 3}
    assert s == rating_sample(feats, explorer, {"n_pairs": 100}, per_group=3, seed=1)


def _driver(tmp_path: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    drv = shutil.which("chromedriver")
    if exe is None or drv is None:
        pytest.skip("headless Chromium or chromedriver not installed (Debian: chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900",
    ):  # fmt: skip
        opts.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(drv), options=opts)
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    return driver, downloads


def _click(driver, element) -> None:
    """A real click, scrolled (instantly: the page scrolls smoothly) clear of the sticky bar first."""
    driver.execute_script(
        "arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})", element
    )
    element.click()


def _wait(predicate, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.mark.browser
def test_rate_export_and_agree_in_a_real_browser(run: Path, report: Path, tmp_path: Path):
    from selenium.webdriver.common.by import By

    from monoscope.cli import main

    sample = _sample(report.read_text())
    n = len(sample["ids"])
    feats = {f.id: f for f in read_features(run / "analysis" / "features.csv")}
    verdict = {"ImgD": "visual", "TextD": "textual", "CrossD": "both"}
    driver, downloads = _driver(tmp_path)
    try:
        driver.get(report.resolve().as_uri())
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("data-errors") == "0"
        section = driver.find_element(By.ID, "rating")
        assert section.get_attribute("data-total") == str(n)
        driver.find_element(By.ID, "rt-rater").send_keys("ann")
        _click(driver, driver.find_element(By.ID, "rt-start"))
        # blind: the explorer (MDS, groups, names) is hidden, the panel shows images + captions
        assert not driver.find_element(By.ID, "explorer").is_displayed()
        assert driver.find_element(By.ID, "rt-panel").is_displayed()
        panel_text = driver.find_element(By.ID, "rt-panel").text
        for hidden in ("MDS", "ImgD", "TextD", "CrossD"):
            assert hidden not in panel_text
        assert driver.find_elements(By.CSS_SELECTOR, "#rt-images img")
        # rate every feature as the verdict says, except the first one (marked incoherent)
        given = {}
        for step in range(n):
            pos = int(section.get_attribute("data-pos"))
            k = sample["ids"][pos]
            label = "incoherent" if step == 0 else verdict.get(feats[k].group, "both")
            given[k] = label
            driver.find_element(
                By.CSS_SELECTOR, f'.rt-choices button[data-label="{label}"]'
            ).click()
            assert section.get_attribute("data-rated") == str(step + 1)
        # the marks survive a reload (localStorage)
        driver.refresh()
        section = driver.find_element(By.ID, "rating")
        assert section.get_attribute("data-rated") == str(n)
        _click(driver, driver.find_element(By.ID, "rt-export"))
        files = _wait(lambda: [p for p in downloads.glob("*.json") if p.stat().st_size])
        exported = json.loads(files[0].read_text())
        shown = json.loads(driver.find_element(By.ID, "rt-json").get_attribute("value"))
        assert files[0].name == "ratings-ann.json"
    finally:
        driver.quit()
    assert exported["ratings"] == shown["ratings"]
    assert exported["rater"] == "ann" and exported["sample"] == sample["key"]
    assert {r["feature"]: r["label"] for r in exported["ratings"]} == given

    # a second rater who always says "both", then agree, then the report shows it
    second = {
        **exported,
        "rater": "bob",
        "ratings": [{"feature": k, "label": "both"} for k in given],
    }
    (tmp_path / "bob.json").write_text(json.dumps(second))
    out = run / "agree"
    assert main(["agree", "--analysis", str(run / "analysis"), str(files[0]), str(tmp_path / "bob.json"), "--out", str(out), "--bootstrap", "100"]) == 0  # fmt: skip
    res = json.loads((out / "agree.json").read_text())
    ann = res["verdict"]["ann"]
    assert ann["n"] == n and ann["agreement"]["value"] == pytest.approx((n - 1) / n)
    assert res["inter_rater"]["method"] == "cohen" and res["inter_rater"]["n_items"] == n

    from monoscope.report import render_report

    html = render_report(run / "analysis", tmp_path / "with-agree.html").read_text()
    assert 'id="agreement"' in html and "Each rater against the verdict" in html
