"""The bundled pocket model: loading, shapes, determinism, retrieval, and a tiny training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from monoscope._util import MonoscopeError
from monoscope.data.emoji import emoji_array
from monoscope.encoders import load_encoder
from monoscope.encoders.pocket import PocketEncoder, image_tensor
from monoscope.encoders.pocket_train import heldout_mask, recall_at, train_pocket


@pytest.fixture(scope="module")
def pocket() -> PocketEncoder:
    return PocketEncoder.load()


@pytest.fixture(scope="module")
def sample() -> tuple[list[Image.Image], list[str]]:
    """Every 19th emoji pair: 199 images and captions."""
    images, pairs = emoji_array()
    rows = range(0, len(pairs), 19)
    return [Image.fromarray(images[i]) for i in rows], [pairs[i]["caption"] for i in rows]


def test_load_and_info(pocket: PocketEncoder) -> None:
    info = pocket.info()
    assert info["kind"] == "pocket" and info["id"] == "pocket"
    assert len(info["revision"]) == 12 and int(info["revision"], 16) >= 0
    assert pocket.dim == 256
    assert isinstance(load_encoder("pocket"), PocketEncoder)


def test_shapes_dtypes_determinism(pocket: PocketEncoder, sample) -> None:
    images, captions = sample
    a = pocket.encode_images(images[:5])
    t = pocket.encode_texts(captions[:5])
    assert a.shape == t.shape == (5, 256)
    assert a.dtype == t.dtype == torch.float32
    assert torch.isfinite(a).all() and torch.isfinite(t).all()
    assert not torch.allclose(a.norm(dim=1), torch.ones(5))  # not normalised: the store's job
    assert torch.equal(pocket.encode_images(images[:5]), a)
    assert torch.equal(pocket.encode_texts(captions[:5]), t)
    # Batch composition does not change a row (eval-mode BatchNorm, padding masked out).
    torch.testing.assert_close(pocket.encode_texts(captions[:1]), t[:1], atol=1e-5, rtol=0)
    assert pocket.encode_texts([]).shape == (0, 256)
    assert pocket.encode_images([]).shape == (0, 256)


def test_image_tensor_path_matches(pocket: PocketEncoder, sample) -> None:
    images, _ = sample
    x = pocket.image_tensor(images[:4])
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    x.requires_grad_(True)
    emb = pocket.encode_image_tensor(x)
    torch.testing.assert_close(emb.detach(), pocket.encode_images(images[:4]))
    emb[:, 0].sum().backward()  # differentiable in the pixels, for PGD
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_image_tensor_resizes_and_crops() -> None:
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 50, 100))  # a blue strip cropped away by the centre crop
    x = image_tensor([wide, Image.new("L", (64, 64), 255)])
    assert x.shape == (2, 3, 64, 64)
    torch.testing.assert_close(x[0, :, 32, 32], torch.tensor([1.0, 0.0, 0.0]))
    assert float(x[0, 2].max()) < 0.1
    assert torch.equal(x[1], torch.ones(3, 64, 64))


def test_retrieval_well_above_chance(pocket: PocketEncoder, sample) -> None:
    images, captions = sample
    img = pocket.encode_images(images)
    txt = pocket.encode_texts(captions)
    r = recall_at(img, txt, np.arange(len(images)))
    # Chance recall@5 among 199 captions is 0.025; the shipped model scores about 1.
    assert r["image_to_text_r@5"] > 0.9
    assert r["text_to_image_r@5"] > 0.9
    assert r["image_to_text_r@1"] > 0.7


def test_recall_at_oracle() -> None:
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    txt = torch.tensor([[1.0, 0.1], [1.0, 0.0], [1.0, 1.0]])
    r = recall_at(img, txt, np.arange(3), ks=(1, 2))
    # image 0 ranks txt1 first, its own txt0 second; image 1 ranks own txt1 last; image 2 first.
    assert r["image_to_text_r@1"] == pytest.approx(1 / 3, abs=1e-4)
    assert r["image_to_text_r@2"] == pytest.approx(2 / 3, abs=1e-4)


def test_heldout_mask() -> None:
    _, pairs = emoji_array()
    held = heldout_mask(pairs)
    assert held.sum() == 323  # one variant of every emoji that comes in five tones
    tones = {pairs[i]["labels"]["skin_tone"] for i in np.flatnonzero(held)}
    assert tones == {"light", "medium-light", "medium", "medium-dark", "dark"}
    assert np.array_equal(held, heldout_mask(pairs))


def test_train_tiny(tmp_path: Path) -> None:
    metrics = train_pocket(
        tmp_path / "pocket", epochs=1, seed=0, device="cpu", batch_size=32, limit=64, progress=False
    )
    state = load_file(str(tmp_path / "pocket" / "model.safetensors"))
    assert state["image.head.weight"].dtype == torch.float16  # halved on disk
    saved = json.loads((tmp_path / "pocket" / "metrics.json").read_text())
    assert saved["gallery"] == metrics["gallery"] == 64
    assert len(metrics["loss"]) == 1 and np.isfinite(metrics["loss"][0]["loss"])
    encoder = PocketEncoder.load(tmp_path / "pocket")
    assert encoder.model.image.head.weight.dtype == torch.float32
    assert encoder.config["train"]["epochs"] == 1
    assert encoder.encode_texts(["grinning face"]).shape == (1, 256)
    with pytest.raises(MonoscopeError, match="no pocket model"):
        PocketEncoder.load(tmp_path)
