"""OpenClipEncoder on a tiny open_clip architecture registered from a JSON config; skipped where
open_clip (which needs torchvision) is not installed."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from monoscope._util import MonoscopeError
from monoscope.encoders import load_encoder
from monoscope.encoders.openclip import OpenClipEncoder, split_spec

NAME = "monoscope-tiny-test"
CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
CAPTIONS = ["a cat", "woman firefighter: dark skin tone", "A red apple on a table", "dog", "x"]


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 50, 3), dtype=np.uint8)) for i in range(n)
    ]


def test_split_spec():
    assert split_spec("ViT-B-32") == ("ViT-B-32", None)
    assert split_spec("ViT-B-32/laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert split_spec("ViT-B-32//tmp/w.safetensors") == ("ViT-B-32", "/tmp/w.safetensors")
    assert split_spec("hf-hub:timm/ViT-B-16-SigLIP") == ("hf-hub:timm/ViT-B-16-SigLIP", None)
    with pytest.raises(MonoscopeError):
        split_spec("/x")


def test_missing_open_clip_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` fail
    with pytest.raises(MonoscopeError, match=r"pip install 'monoscope\[openclip\]'"):
        load_encoder("open_clip:ViT-B-32")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(open_clip module, reference model, its eval transform, spec with a checkpoint path)."""
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("openclip")
    (path / f"{NAME}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(path / f"{NAME}.json")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(NAME)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "w.safetensors")
    return open_clip, model.eval(), preprocess, f"{NAME}/{path / 'w.safetensors'}"


def test_matches_open_clip(tiny):
    open_clip, model, preprocess, spec = tiny
    enc = load_encoder(f"open_clip:{spec}")
    assert isinstance(enc, OpenClipEncoder) and enc.dim == 16
    images = _images(5)
    with torch.no_grad():
        ref_img = model.encode_image(torch.stack([preprocess(im) for im in images]))
        ref_txt = model.encode_text(open_clip.get_tokenizer(NAME)(CAPTIONS))
    img, txt = enc.encode_images(images), enc.encode_texts(CAPTIONS)
    assert img.dtype == txt.dtype == torch.float32
    torch.testing.assert_close(img, ref_img)
    torch.testing.assert_close(txt, ref_txt)
    one = torch.cat([enc.encode_images([im]) for im in images])
    torch.testing.assert_close(one, img, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc.encode_texts(CAPTIONS), txt, rtol=0, atol=0)
    info = enc.info()
    assert info["kind"] == "open_clip" and info["model_name"] == NAME
    assert info["pretrained"].endswith("w.safetensors") and info["dtype"] == "float32"
    assert enc.encode_texts([]).shape == (0, 16)


def test_image_tensor_roundtrip(tiny):
    enc = load_encoder(f"open_clip:{tiny[3]}")
    images = _images(3)
    x = enc.image_tensor(images)
    assert x.shape == (3, 3, 32, 32) and x.min() >= 0.0 and x.max() <= 1.0
    x.requires_grad_(True)
    emb = enc.encode_image_tensor(x)
    torch.testing.assert_close(emb, enc.encode_images(images), rtol=1e-4, atol=1e-5)
    emb.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_fp16_returns_float32(tiny):
    enc = OpenClipEncoder.load(tiny[3], dtype="float16")
    full = load_encoder(f"open_clip:{tiny[3]}")
    images = _images(2)
    img = enc.encode_images(images)
    assert img.dtype == torch.float32 and enc.info()["dtype"] == "float16"
    torch.testing.assert_close(img, full.encode_images(images), rtol=0.05, atol=0.02)
    assert enc.encode_texts(CAPTIONS).dtype == torch.float32


def test_unknown_model_or_weights_are_clear_errors(tiny):
    with pytest.raises(MonoscopeError, match="cannot load") as err:
        load_encoder("open_clip:no-such-architecture")
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    with pytest.raises(MonoscopeError, match="cannot load"):
        load_encoder(f"open_clip:{NAME}/no-such-tag")
