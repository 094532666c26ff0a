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

from interop_helpers import require
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
    open_clip = require("open_clip")
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


def _save_for_hub(open_clip, model, folder) -> None:
    """The layout open_clip reads for ``local-dir:`` and ``hf-hub:`` names (what its
    ``push_to_hf_hub`` uploads): open_clip_config.json + open_clip_model.safetensors."""
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_config_for_hf(model, folder / "open_clip_config.json", model_config=CONFIG)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "open_clip_model.safetensors")


def _reference(open_clip, name: str, images, captions):
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    model.eval()
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(im) for im in images]))
        txt = model.encode_text(open_clip.get_tokenizer(name)(captions))
    return img, txt


def test_local_dir_matches_open_clip(tiny, tmp_path):
    open_clip, model = tiny[0], tiny[1]
    _save_for_hub(open_clip, model, tmp_path / "tiny")
    name = f"local-dir:{tmp_path / 'tiny'}"
    images = _images(4)
    ref_img, ref_txt = _reference(open_clip, name, images, CAPTIONS)
    enc = load_encoder(f"open_clip:{name}")
    torch.testing.assert_close(enc.encode_images(images), ref_img)
    torch.testing.assert_close(enc.encode_texts(CAPTIONS), ref_txt)
    with torch.no_grad():  # the same weights as the model they were saved from
        torch.testing.assert_close(
            ref_txt, model.encode_text(open_clip.get_tokenizer(NAME)(CAPTIONS))
        )
    assert enc.info()["model_name"] == name


def test_embed_cli_with_hf_hub_name(tiny, tmp_path):
    """`monoscope embed --model open_clip:hf-hub:ORG/REPO` offline, from a populated HF cache;
    the store holds open_clip's own encode_image(preprocess(img)) / encode_text(tokenizer(txt))."""
    import subprocess
    import sys

    from monoscope.store import Store

    open_clip, model = tiny[0], tiny[1]
    cache, rev = tmp_path / "hub", "0" * 40
    repo = cache / "models--monoscope--tiny-clip"
    _save_for_hub(open_clip, model, repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    images = _images(3)
    rows = []
    for i, im in enumerate(images):
        im.save(tmp_path / f"{i}.png")
        rows.append(json.dumps({"image": f"{i}.png", "caption": CAPTIONS[i]}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(rows) + "\n")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "monoscope.cli",
        "embed",
        "--model",
        "open_clip:hf-hub:monoscope/tiny-clip",
    ]
    cmd += [
        "--data",
        str(tmp_path / "pairs.jsonl"),
        "--out",
        str(tmp_path / "store"),
        "--device",
        "cpu",
        "--quiet",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    store = Store(tmp_path / "store")
    ref_img, ref_txt = _reference(
        open_clip, f"local-dir:{repo / 'snapshots' / rev}", images, CAPTIONS[:3]
    )
    assert store.manifest["normalized"]  # embed L2-normalises by default
    for modality, ref in (("image", ref_img), ("text", ref_txt)):
        got = torch.from_numpy(store.load(modality)).float()
        torch.testing.assert_close(got, torch.nn.functional.normalize(ref, dim=1))
    assert store.manifest["model"]["id"] == "hf-hub:monoscope/tiny-clip"
    assert store.manifest["model"]["revision"] == rev  # the cached snapshot's commit
