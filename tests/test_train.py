"""train_featuremap: outputs, determinism, load == train, resume after SIGKILL, metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from monoscope._util import MonoscopeError
from monoscope.analysis.planted import make_planted, write_planted_store
from monoscope.featuremaps import load_featuremap
from monoscope.featuremaps.metrics import _Sums, evaluate_featuremap, fvu, recall_at_1
from monoscope.featuremaps.stream import BatchStream
from monoscope.featuremaps.train import train_featuremap
from monoscope.store import Store

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    image, text, _ = make_planted(dim=8, n_atoms=16, n_pairs=300, seed=1)
    return write_planted_store(tmp_path_factory.mktemp("store") / "s", image, text, shard_size=128)


FAST = {"latents": 16, "k": 3, "batch_size": 64, "steps": 30, "progress": False}


def test_fvu_definition_hand_computed():
    x = np.array([[0.0, 0.0], [2.0, 2.0]])
    x_hat = np.array([[0.0, 1.0], [2.0, 2.0]])
    # error 1; mean (1, 1); variance about the mean 2 + 2 = 4
    assert fvu(x, x_hat) == 0.25
    sums = _Sums(2, 1)
    sums.add(torch.tensor(x[:1]), torch.ones(1, 1), torch.tensor(x_hat[:1]))
    sums.add(torch.tensor(x[1:]), torch.zeros(1, 1), torch.tensor(x_hat[1:]))
    result = sums.result(recon=True)
    assert result["fvu"] == pytest.approx(0.25)
    assert result["mse"] == pytest.approx(1 / 4)
    assert result["l0"] == 0.5
    assert fvu(x, np.tile(x.mean(0), (2, 1))) == 1.0  # predicting the mean explains nothing


def test_recall_at_1_hand_computed():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = np.array([[1.0, 0.1], [1.0, 0.0], [1.0, 1.0]])
    # a0's best is b1, a1's is b2 (misses); a2's is b2 (hit)
    i2t, t2i = recall_at_1(a, b)
    assert i2t == pytest.approx(1 / 3)
    # b0 -> a0 (hit), b1 -> a0 (miss), b2 -> a2 (hit)
    assert t2i == pytest.approx(2 / 3)
    assert recall_at_1(np.zeros((2, 2)), np.zeros((2, 2))) == (0.0, 0.0)  # ties are misses


def test_train_topk_outputs_and_load_equals_train(store, tmp_path):
    out = train_featuremap(store, "sae-topk", tmp_path / "fm", **FAST)
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "sae-topk" and config["hparams"]["k"] == 3
    assert config["training"]["steps"] == 30 and config["training"]["method"] == "sae-topk"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 30
    assert {"loss", "mse", "l0", "dead_fraction", "lr", "samples"} <= set(log[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    for group in ("image", "text", "overall"):
        assert {"fvu", "l0", "cosine", "mse"} <= set(metrics[group])
        assert metrics[group]["l0"] <= 3
    assert 0 < metrics["overall"]["fvu"] < 1
    assert not (out / "checkpoints").exists()
    # the loaded map reproduces the metrics computed with the in-memory model, bit for bit
    again = evaluate_featuremap(load_featuremap(out), store, seed=0)
    for group in ("image", "text", "overall"):
        assert again[group] == metrics[group]


def test_training_is_deterministic_and_seeded(store, tmp_path):
    a = train_featuremap(store, "sae-batchtopk", tmp_path / "a", seed=3, **FAST)
    b = train_featuremap(store, "sae-batchtopk", tmp_path / "b", seed=3, **FAST)
    c = train_featuremap(store, "sae-batchtopk", tmp_path / "c", seed=4, **FAST)
    wa, wb, wc = (load_file(str(p / "model.safetensors")) for p in (a, b, c))
    assert all(torch.equal(wa[key], wb[key]) for key in wa)
    assert not torch.equal(wa["W_dec"], wc["W_dec"])


@pytest.mark.parametrize("method", ["sae-relu", "sae-jumprelu", "sae-matryoshka", "ncl"])
def test_other_methods_train(store, tmp_path, method):
    out = train_featuremap(store, method, tmp_path / method, **FAST)
    fmap = load_featuremap(out)
    assert fmap.kind == method
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["retrieval"]) == {"pairs", "feature", "original"}
    if method != "ncl":
        torch.testing.assert_close(fmap.decoder_directions().norm(dim=1), torch.ones(16))
        assert np.isfinite(metrics["overall"]["fvu"])


def test_identity_and_per_modality(store, tmp_path):
    out = train_featuremap(store, "identity", tmp_path / "id", progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert load_featuremap(out).kind == "identity" and metrics["overall"]["fvu"] == 0
    out = train_featuremap(store, "sae-topk", tmp_path / "pm", per_modality=True, **FAST)
    fmap = load_featuremap(out)
    assert fmap.kind == "per-modality" and fmap.n_features == 32
    x = torch.from_numpy(np.array(store.shard(0).image[:4]))
    assert not fmap.encode(x, "image")[:, 16:].any()
    assert json.loads((out / "metrics.json").read_text())["never_active_fraction"] < 1


def test_errors(store, tmp_path):
    with pytest.raises(MonoscopeError, match="unknown method"):
        train_featuremap(store, "pca", tmp_path / "x")
    with pytest.raises(MonoscopeError, match="diverged"):
        train_featuremap(store, "sae-relu", tmp_path / "nan", l1=float("nan"), **FAST)
    with pytest.raises(MonoscopeError, match="not both"):
        train_featuremap(store, "sae-topk", tmp_path / "x", epochs=1, steps=1)
    with pytest.raises(MonoscopeError, match="per-modality"):
        train_featuremap(store, "ncl", tmp_path / "x", per_modality=True)
    train_featuremap(store, "sae-topk", tmp_path / "done", **FAST)
    with pytest.raises(MonoscopeError, match="overwrite"):
        train_featuremap(store, "sae-topk", tmp_path / "done", **FAST)
    assert train_featuremap(store, "sae-topk", tmp_path / "done", resume=True, **FAST)


def test_stream_shuffles_by_shard_buffer_and_covers_every_row(store):
    stream = BatchStream(store, "mixed", batch_size=50, seed=0, buffer_pairs=100)
    rows = {m: np.concatenate([getattr(s, m) for s in store.shards()]) for m in ("image", "text")}
    epoch = list(stream.epoch(0))
    assert len(epoch) == stream.steps_per_epoch == 600 // 50
    x = np.concatenate([b["x"] for b in epoch])
    is_image = np.concatenate([b["is_image"] for b in epoch])
    for m, flag in (("image", True), ("text", False)):
        got = x[is_image == flag]
        assert len(np.unique(got, axis=0)) == len(got) == (is_image == flag).sum()
        assert {r.tobytes() for r in got} == {r.tobytes() for r in rows[m]}
    again = list(stream.epoch(0))
    assert all(np.array_equal(u["x"], v["x"]) for u, v in zip(epoch, again, strict=True))
    assert not np.array_equal(epoch[0]["x"], next(stream.epoch(1))["x"])
    resumed = stream.from_step(stream.steps_per_epoch + 3)
    assert np.array_equal(next(resumed)["x"], list(stream.epoch(1))[3]["x"])
    paired = next(BatchStream(store, "paired", 40, 0, 100).epoch(0))
    index = {r.tobytes(): i for i, r in enumerate(rows["image"])}
    idx = [index[r.tobytes()] for r in paired["image"]]
    assert np.array_equal(paired["text"], rows["text"][idx])  # pairs stay aligned


_CHILD = """
import sys
from monoscope.featuremaps.train import train_featuremap
train_featuremap(sys.argv[1], "sae-batchtopk", sys.argv[2], latents=16, k=3, batch_size=32,
                 steps=int(sys.argv[3]), checkpoint_every=10, progress=False, seed=5)
"""


def test_resume_after_sigkill_matches_uninterrupted_run(store, tmp_path):
    steps = 1500
    kw = {"latents": 16, "k": 3, "batch_size": 32, "steps": steps, "seed": 5, "progress": False}
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(store.path), str(out), str(steps)], env=env
    )
    latest = out / "checkpoints" / "latest.json"
    deadline = time.time() + 60
    while time.time() < deadline and child.poll() is None:
        if latest.exists() and json.loads(latest.read_text())["step"] >= 20:
            break
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (out / "config.json").exists(), "the run finished before it could be killed"
    killed_at = json.loads(latest.read_text())["step"]
    assert killed_at < steps
    with pytest.raises(MonoscopeError, match="--resume"):
        train_featuremap(store, "sae-batchtopk", out, **kw)
    with pytest.raises(MonoscopeError, match="differs"):
        train_featuremap(store, "sae-batchtopk", out, resume=True, **{**kw, "k": 4})
    resumed = train_featuremap(store, "sae-batchtopk", out, resume=True, **kw)
    reference = train_featuremap(store, "sae-batchtopk", tmp_path / "ref", **kw)
    a = load_file(str(resumed / "model.safetensors"))
    b = load_file(str(reference / "model.safetensors"))
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    log_a = (resumed / "train_log.jsonl").read_text().splitlines()
    log_b = (reference / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in log_a] == [json.loads(x)["step"] for x in log_b]
    last_a, last_b = json.loads(log_a[-1]), json.loads(log_b[-1])
    assert last_a["loss"] == pytest.approx(last_b["loss"], rel=1e-5)


def test_store_path_argument(store, tmp_path):
    out = train_featuremap(str(store.path), "sae-topk", tmp_path / "p", **FAST)
    assert (
        Store(store.path).count
        == json.loads((out / "config.json").read_text())["training"]["store"]["count"]
    )


def test_warns_when_latents_outnumber_pairs(store, tmp_path):
    opts = {**FAST, "latents": 400, "steps": 2}
    with pytest.warns(UserWarning, match="400 latents for 300 pairs"):
        train_featuremap(store, "sae-topk", tmp_path / "f", **opts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 300 latents for 300 pairs: no warning
        train_featuremap(store, "sae-topk", tmp_path / "g", **{**opts, "latents": 300})


def test_warns_when_most_latents_end_dead(store, tmp_path):
    # a dead window of one batch: a latent is dead unless it fired on the last batch, and with
    # k = 1 on 8 embeddings at most 8 of the 64 latents fire, so at least 7/8 end dead
    opts = {**FAST, "latents": 64, "k": 1, "batch_size": 8, "dead_window": 8}
    with pytest.warns(UserWarning, match=r"of the 64 latents never fired in the last 8") as got:
        train_featuremap(store, "sae-topk", tmp_path / "f", **opts)
    dead = json.loads((tmp_path / "f" / "metrics.json").read_text())["dead_fraction"]
    assert dead > 0.5 and f"{dead:.0%}" in str(got[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default window: the latents are alive
        train_featuremap(store, "sae-topk", tmp_path / "g", **FAST)
    assert json.loads((tmp_path / "g" / "metrics.json").read_text())["dead_fraction"] <= 0.5


def test_cli_prints_the_train_warnings(store, tmp_path, capsys):
    from monoscope.cli import main

    args = [
        "train",
        "--store",
        str(store.path),
        "--method",
        "sae-topk",
        "--out",
        str(tmp_path / "f"),
    ]
    # the dead window is one epoch, 600 embeddings: k = 1 fires at most 600 of the 2000 latents
    opts = ["--latents", "2000", "--k", "1", "--steps", "100", "--batch-size", "8"]
    assert main([*args, *opts, "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[:2] for line in err] == [["monoscope", " warning"]] * 2
    assert "2000 latents for 300 pairs" in err[0] and "never fired" in err[1]


def test_importing_train_registers_every_method():
    code = (
        "from monoscope.featuremaps.train import METHODS, build_featuremap\n"
        "for m in METHODS: build_featuremap(m, 8, latents=16, k=2)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
