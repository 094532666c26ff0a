"""Faults and bad input end to end: nothing is lost, nothing is corrupted, errors are one line.

SIGKILL of the real CLI mid-run then ``--resume``; bad records of every kind; NaN/inf
embeddings; a store and feature map of different dimension; a full disk; an unwritable output.
The model is a tiny random ``CLIPModel`` saved to disk and loaded with ``--model DIR``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ListSource, ToyEncoder, colour_image
from monoscope._util import MonoscopeError
from monoscope.cli import main
from monoscope.doctor import diagnose
from monoscope.embed import embed
from monoscope.featuremaps.identity import IdentityMap
from monoscope.store import Store

# One torch thread: on a loaded 2-core machine a second thread makes tiny models 100x slower.
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}
N_PAIRS = 200
SLOW_CLI = """
import sys, time
from monoscope.encoders.hf import HFEncoder
encode = HFEncoder.encode_images
HFEncoder.encode_images = lambda self, ims: (time.sleep(0.05), encode(self, ims))[1]
from monoscope.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def error_line(err: str) -> str:
    """The CLI's one error line (library progress bars may precede it); no traceback."""
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("monoscope: error:")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    return errors[0]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A tiny random CLIP with a byte-level CLIPTokenizer and image processor, saved to disk."""
    from tokenizers import pre_tokenizers
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab |= {c + "</w>": i + len(alphabet) for i, c in enumerate(alphabet)}
    for tok in ("<|startoftext|>", "<|endoftext|>"):
        vocab[tok] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    text = dict(
        tower,
        vocab_size=len(tok),
        max_position_embeddings=16,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = CLIPModel(
        CLIPConfig(text_config=text, vision_config=dict(tower, image_size=32, patch_size=8))
    )
    path = tmp_path_factory.mktemp("clip")
    model.save_pretrained(path)
    CLIPProcessor(CLIPImageProcessor(size=32, crop_size=32), tok).save_pretrained(path)
    return path


def write_pairs(folder: Path, n: int, extra: Sequence[tuple[str, bytes]] = ()) -> Path:
    """``n`` small PNGs + ``pairs.jsonl``; ``extra`` lines (image name, raw caption JSON bytes)
    are appended as they are."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        rgb = np.random.default_rng(i).integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(folder / "img" / f"{i}.png")
        lines.append(json.dumps({"image": f"img/{i}.png", "caption": f"picture {i}"}).encode())
    for image, caption in extra:
        lines.append(b'{"image": "img/%s", "caption": "%s"}' % (image.encode(), caption))
    (folder / "pairs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder / "pairs.jsonl"


def embed_args(model: Path, data: Path, out: Path, *more: str) -> list[str]:
    return [
        "embed",
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--shard-size",
        "20",
        "--batch-size",
        "5",
        "--device",
        "cpu",
        "--quiet",
        *more,
    ]


def assert_same_store(a: Path, b: Path) -> None:
    sa, sb = Store(a), Store(b)
    assert [p["id"] for p in sa.pairs()] == [p["id"] for p in sb.pairs()]
    np.testing.assert_array_equal(sa.load("image"), sb.load("image"))
    np.testing.assert_array_equal(sa.load("text"), sb.load("text"))
    assert sa.manifest["skipped"] == sb.manifest["skipped"]
    assert sa.manifest["records"] == sb.manifest["records"]
    assert sa.manifest["fingerprint"] == sb.manifest["fingerprint"]  # same bytes, same shards


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs"), N_PAIRS)


@pytest.fixture(scope="module")
def reference(clip_dir: Path, dataset: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "store"
    assert main(embed_args(clip_dir, dataset, out)) == 0
    return out


def test_sigkill_then_resume_loses_and_duplicates_nothing(
    clip_dir: Path, dataset: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, *embed_args(clip_dir, dataset, out)],
        env=ENV,
        stderr=subprocess.PIPE,
    )
    progress = out / "progress" / "rank-00000.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if progress.is_file() and json.loads(progress.read_text())["shards"]:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stderr.close()
    committed = json.loads(progress.read_text())["shards"]
    assert 0 < len(committed) < N_PAIRS // 20  # killed mid-run
    with pytest.raises(MonoscopeError, match="incomplete"):
        Store(out)
    assert "--resume" in diagnose(out)[0]

    resumed = subprocess.run(
        [sys.executable, "-m", "monoscope.cli", *embed_args(clip_dir, dataset, out, "--resume")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"wrote {out}" in resumed.stdout
    assert_same_store(out, reference)
    assert diagnose(out) == []


def test_bad_records_are_counted_skips_not_crashes(clip_dir: Path, tmp_path: Path) -> None:
    long = "a very long caption " * 500
    data = write_pairs(
        tmp_path,
        6,
        [
            ("0.png", b""),  # empty caption
            ("0.png", b"   "),  # blank caption
            ("0.png", long.encode()),  # over-long: kept, the tokenizer truncates
            ("0.png", b"caf\xe9 au lait"),  # latin-1, not UTF-8
            ("0.png", b"lone \\ud800 surrogate"),  # valid JSON, not writable as UTF-8
            ("broken.png", b"undecodable image"),
            ("missing.png", b"missing image"),
        ],
    )
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "store"
    assert main(embed_args(clip_dir, data, out)) == 0
    s = Store(out)
    assert s.manifest["records"] == 13 and s.count == 7
    assert s.manifest["skipped"]["reasons"] == {
        "empty caption": 2,
        "undecodable caption": 2,
        "corrupt image": 1,
        "missing image": 1,
    }
    assert s.pairs()[-1]["caption"] == long  # stored whole
    assert diagnose(out) == []


def test_truncated_tar_shard_through_the_cli(clip_dir: Path, tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    (tmp_path / "shards").mkdir()
    for b in range(3):
        with wds.TarWriter(str(tmp_path / "shards" / f"{b:05d}.tar")) as w:
            for i in range(8):
                rgb = np.random.default_rng(10 * b + i).integers(0, 256, (12, 12, 3), np.uint8)
                w.write({"__key__": f"{b}-{i}", "txt": f"c {b} {i}"} | _png(rgb))
    shard = tmp_path / "shards" / "00001.tar"
    shard.write_bytes(shard.read_bytes()[:7000])
    out = tmp_path / "store"
    spec = str(tmp_path / "shards" / "{00000..00002}.tar")
    assert main(embed_args(clip_dir, Path(spec), out)) == 0
    s = Store(out)
    reasons = s.manifest["skipped"]["reasons"]
    assert reasons == {"corrupt shard": 1} and s.count == s.manifest["records"] - 1
    ids = [p["id"] for p in s.pairs()]
    assert ids[:8] == [f"0-{i}" for i in range(8)] and ids[-8:] == [f"2-{i}" for i in range(8)]
    assert diagnose(out) == []


def _png(rgb: np.ndarray) -> dict[str, bytes]:
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return {"png": buf.getvalue()}


class NonFiniteEncoder(ToyEncoder):
    """NaN text for captions containing 'NaN' (ToyEncoder), inf images for every 7th image."""

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        out = super().encode_images(images)
        for j, im in enumerate(images):
            if np.asarray(im)[0, 0, 0] % 7 == 0:
                out[j, 3] = float("inf")
        return out


def test_nan_and_inf_embeddings_are_skipped(tmp_path: Path) -> None:
    source = ListSource(60, captions={4: "a NaN", 9: "NaN again"})
    encoder = NonFiniteEncoder()
    out = embed(encoder, source, tmp_path / "s", shard_size=16, device="cpu", progress=False)
    s = Store(out)
    expected_inf = sum(
        1 for i in range(60) if i not in (4, 9) and np.asarray(colour_image(i))[0, 0, 0] % 7 == 0
    )
    assert expected_inf > 0
    assert s.manifest["skipped"]["reasons"] == {"non-finite embedding": 2 + expected_inf}
    assert np.isfinite(s.load("image")).all() and np.isfinite(s.load("text")).all()
    assert diagnose(out) == []


def test_store_and_featuremap_of_different_dimension(small_store: Path, tmp_path, capsys) -> None:
    fmap = IdentityMap(4).save(tmp_path / "fmap")
    code = main(
        ["analyze", "--store", str(small_store), "--featuremap", str(fmap)]
        + ["--out", str(tmp_path / "a"), "--device", "cpu", "--quiet"]
    )
    assert code != 0
    assert "dimension 8 but the feature map expects 4" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "a" / "summary.json").exists()


@pytest.mark.parametrize("victim", ["write_array_header_1_0", "os.replace"])
def test_disk_full_is_one_line_and_resumable(
    clip_dir: Path, dataset: Path, reference: Path, tmp_path: Path, monkeypatch, capsys, victim
) -> None:
    module, name = (np.lib.format, victim) if victim != "os.replace" else (os, "replace")
    real = getattr(module, name)
    calls = {"n": 0}

    def full(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 7:  # a few shards in: fail and keep failing, as a full disk does
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    out = tmp_path / "store"
    monkeypatch.setattr(module, name, full)
    code = main(embed_args(clip_dir, dataset, out))
    monkeypatch.setattr(module, name, real)
    assert code != 0 and "No space left on device" in error_line(capsys.readouterr().err)
    problems = diagnose(out)
    assert len(problems) == 1 and "--resume" in problems[0]  # committed shards are intact
    assert not list(out.rglob("*.tmp"))  # no partial file left behind
    assert main(embed_args(clip_dir, dataset, out, "--resume")) == 0
    assert_same_store(out, reference)


def test_output_under_a_regular_file_is_one_line(clip_dir, dataset, tmp_path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    code = main(embed_args(clip_dir, dataset, tmp_path / "file" / "store"))
    assert code != 0 and "Not a directory" in error_line(capsys.readouterr().err)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="running as root: directory permissions do not stop root from writing",
)
def test_unwritable_output_directory_is_one_line(clip_dir, dataset, tmp_path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code = main(embed_args(clip_dir, dataset, locked / "store"))
    finally:
        locked.chmod(0o700)
    assert code != 0 and "Permission denied" in error_line(capsys.readouterr().err)
