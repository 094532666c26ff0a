"""Guardrails of the command line: Ctrl-C says what was kept and how to continue; --open without
a browser says where the report is."""

from __future__ import annotations

import json
import webbrowser
from pathlib import Path

import pytest

import monoscope.embed as embed_module
from conftest import ListSource, ToyEncoder, colour_image
from monoscope.analysis.analyze import analyze
from monoscope.cli import main
from monoscope.featuremaps.identity import IdentityMap
from monoscope.interrupted import demo_lines, featuremap_line, kept_lines
from monoscope.store import Store


def pairs_file(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        colour_image(i).save(root / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "caption": f"pair {i}"}))
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return root / "pairs.jsonl"


def test_ctrl_c_in_embed_says_what_was_kept_and_resume_continues(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(embed_module, "load_encoder", lambda *a, **k: ToyEncoder())
    commit, calls = embed_module._commit, []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        commit(*args, **kwargs)

    monkeypatch.setattr(embed_module, "_commit", interrupt_second)
    data, out = pairs_file(tmp_path / "d", 12), tmp_path / "store"
    args = ["embed", "--model", "toy", "--data", str(data), "--out", str(out), "--quiet"]
    args += ["--shard-size", "4", "--batch-size", "4", "--device", "cpu"]
    assert main(args) == 130
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "monoscope: interrupted",
        f"monoscope: embed: 1 shard (4 pairs) kept in {out}; "
        "the same command with --resume continues from there",
    ]
    monkeypatch.setattr(embed_module, "_commit", commit)
    assert main([*args, "--resume"]) == 0
    assert Store(out).count == 12


def test_ctrl_c_lines_for_train_and_other_stages(tmp_path):
    fmap = tmp_path / "fmap"
    assert featuremap_line(fmap).startswith(f"train: no checkpoint in {fmap} yet")
    (fmap / "checkpoints").mkdir(parents=True)
    (fmap / "checkpoints" / "latest.json").write_text('{"step": 1000, "dir": "step-00001000"}')
    assert kept_lines("train", fmap) == [
        f"train: checkpoint at step 1000 kept in {fmap}; "
        "the same command with --resume continues from there"
    ]
    IdentityMap(8).save(tmp_path / "done")
    (tmp_path / "done" / "metrics.json").write_text("{}")
    assert kept_lines("train", tmp_path / "done") == [
        f"train: the feature map {tmp_path / 'done'} is complete"
    ]
    assert kept_lines("analyze", tmp_path / "nowhere") == ["analyze: nothing was written"]
    assert kept_lines("analyze", fmap)[0].endswith("run the command again (it has no --resume)")


def test_ctrl_c_in_the_demo_lists_every_stage(tmp_path: Path):
    demo = tmp_path / "demo"
    (demo / "store").mkdir(parents=True)
    (demo / "store" / "manifest.json").write_text("{}")
    lines = demo_lines(demo)
    assert lines[0] == f"store: the store {demo / 'store'} is complete"
    assert lines[1].startswith(f"featuremap: no checkpoint in {demo / 'featuremap'} yet")
    assert f"analysis: {demo / 'analysis'} not written" in lines
    assert lines[-1] == "demo: a rerun starts over (the demo has no --resume)"


@pytest.mark.parametrize("browser", ["none", "broken"])
def test_report_open_without_a_browser_says_where(
    small_store, tmp_path, monkeypatch, capsys, browser
):
    fmap = IdentityMap(8).save(tmp_path / "f")
    analysis = analyze(small_store, fmap, tmp_path / "a", rule="std", device="cpu", progress=False)

    def no_browser(url: str, *a, **k) -> bool:
        if browser == "broken":
            raise webbrowser.Error("could not locate runnable browser")
        return False

    monkeypatch.setattr(webbrowser, "open", no_browser)
    out = tmp_path / "r.html"
    assert main(["report", "--analysis", str(analysis), "--out", str(out), "--open"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == (
        f"monoscope: no browser to open it in; open {out.resolve()} yourself"
    )
    assert captured.out.strip() == f"wrote {out}"


def test_skipped_line_counts_by_reason(tmp_path: Path):
    from monoscope.embed import embed, skipped_line

    bad = {1: "missing image", 3: "missing image", 4: "corrupt image"}
    store = embed(ToyEncoder(), ListSource(12, bad=bad), tmp_path / "s", progress=False)
    assert skipped_line(store) == "skipped 3 records: corrupt image 1, missing image 2"
    clean = embed(ToyEncoder(), ListSource(12), tmp_path / "c", progress=False)
    assert skipped_line(clean) is None
