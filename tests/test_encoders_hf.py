"""HFEncoder on tiny random CLIP / SigLIP / SigLIP 2 models saved to disk and loaded through
the public ``load_encoder`` path, compared with calling the transformers model directly."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (
    AutoModel,
    BertConfig,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from monoscope._util import MonoscopeError
from monoscope.encoders import load_encoder
from monoscope.encoders.hf import HFEncoder, parse_dtype, projected

CAPTIONS = [
    "a cat",
    "woman firefighter: dark skin tone",
    "A red apple on a wooden table, photographed from above in soft light",
    "dog",
    "the quick brown fox jumps over the lazy dog again and again",
]
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(40, 50), (64, 48), (32, 32), (50, 41), (70, 70)]
    return [
        Image.fromarray(rng.integers(0, 256, (*sizes[i % 5], 3), dtype=np.uint8)) for i in range(n)
    ]


def _clip_tokenizer() -> CLIPTokenizer:
    """A real CLIPTokenizer over the 256 byte symbols (+ ``</w>`` forms) and two merges."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab |= {c + "</w>": i + len(alphabet) for i, c in enumerate(alphabet)}
    for tok in ("ca", "cat</w>", "<|startoftext|>", "<|endoftext|>"):
        vocab[tok] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[("c", "a"), ("ca", "t</w>")], model_max_length=16)


def _siglip_like_tokenizer() -> PreTrainedTokenizerFast:
    """Mirrors SiglipTokenizer's text handling: lowercase, strip punctuation, append ``</s>``,
    pad with ``</s>``. Keeps the default input names, so it also returns an attention mask."""
    words = sorted({w.strip(",:.").lower() for c in CAPTIONS for w in c.split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(words)}
    tk = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s]"), "")]
    )
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        eos_token="</s>",
        pad_token="</s>",
        unk_token="<unk>",
        model_max_length=64,
    )


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    tok = _clip_tokenizer()
    text = dict(
        TOWER,
        vocab_size=len(tok),
        max_position_embeddings=16,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    vision = dict(TOWER, image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    path = tmp_path_factory.mktemp("clip")
    model.save_pretrained(path)
    CLIPProcessor(CLIPImageProcessor(size=32, crop_size=32), tok).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    tok = _siglip_like_tokenizer()
    text = dict(TOWER, vocab_size=len(tok), max_position_embeddings=64, pad_token_id=1)
    vision = dict(TOWER, image_size=32, patch_size=8)
    torch.manual_seed(1)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    path = tmp_path_factory.mktemp("siglip")
    model.save_pretrained(path)
    tok.save_pretrained(path)  # tokenizer and image processor saved separately this time
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip(clip_dir):
    return load_encoder(str(clip_dir))


@pytest.fixture(scope="module")
def siglip(siglip_dir):
    return load_encoder(str(siglip_dir))


def _reference_clip(path, images, texts):
    model = CLIPModel.from_pretrained(path).eval()
    proc = CLIPProcessor.from_pretrained(path)
    with torch.no_grad():
        img = projected(model.get_image_features(**proc(images=images, return_tensors="pt")))
        enc = proc(text=texts, padding=True, truncation=True, return_tensors="pt")
        txt = projected(model.get_text_features(**enc))
    return img, txt


def test_clip_public_path_shapes_and_info(clip, clip_dir):
    assert isinstance(clip, HFEncoder)
    assert clip.dim == 16
    img, txt = clip.encode_images(_images(3)), clip.encode_texts(CAPTIONS[:2])
    assert img.shape == (3, 16) and txt.shape == (2, 16)
    assert img.dtype == txt.dtype == torch.float32
    info = clip.info()
    assert info["kind"] == "hf" and info["id"] == str(clip_dir)
    assert info["model_type"] == "clip" and info["dtype"] == "float32"
    assert info["revision"].startswith("config-sha256:")
    assert load_encoder(str(clip_dir)).info()["revision"] == info["revision"]


def test_clip_matches_transformers(clip, clip_dir):
    images = _images(4)
    ref_img, ref_txt = _reference_clip(clip_dir, images, CAPTIONS[:4])
    torch.testing.assert_close(clip.encode_images(images), ref_img)
    torch.testing.assert_close(clip.encode_texts(CAPTIONS[:4]), ref_txt)
    assert not torch.allclose(ref_txt[0], ref_txt[1])  # not a degenerate model


def test_clip_deterministic_and_batch_invariant(clip):
    images = _images(5)
    batch_img, batch_txt = clip.encode_images(images), clip.encode_texts(CAPTIONS)
    torch.testing.assert_close(clip.encode_images(images), batch_img, rtol=0, atol=0)
    one_img = torch.cat([clip.encode_images([im]) for im in images])
    one_txt = torch.cat([clip.encode_texts([t]) for t in CAPTIONS])  # no padding at all
    torch.testing.assert_close(one_img, batch_img, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(one_txt, batch_txt, rtol=1e-5, atol=1e-5)


def test_clip_truncates_to_model_positions(clip):
    long = "x " * 100
    assert clip.encode_texts([long]).shape == (1, 16)
    # 14 content tokens fit beside start and end; anything after them is cut.
    torch.testing.assert_close(clip.encode_texts([long]), clip.encode_texts(["x " * 14]))


def test_non_rgb_and_empty_inputs(clip):
    rgba = Image.new("RGBA", (40, 40), (10, 200, 30, 255))
    gray = Image.new("L", (40, 40), 90)
    assert clip.encode_images([rgba, gray]).shape == (2, 16)
    torch.testing.assert_close(
        clip.encode_images([rgba]), clip.encode_images([rgba.convert("RGB")])
    )
    assert clip.encode_images([]).shape == (0, 16)
    assert clip.encode_texts([]).shape == (0, 16)


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_image_tensor_roundtrip_is_differentiable(name, request):
    enc = request.getfixturevalue(name)
    images = _images(3, seed=5)
    x = enc.image_tensor(images)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    x.requires_grad_(True)
    emb = enc.encode_image_tensor(x)
    torch.testing.assert_close(emb, enc.encode_images(images), rtol=1e-4, atol=1e-5)
    emb.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.model.parameters())


def test_siglip_pads_to_max_length_without_mask(siglip, siglip_dir):
    model = SiglipModel.from_pretrained(siglip_dir).eval()
    tok = PreTrainedTokenizerFast.from_pretrained(siglip_dir)
    enc = tok(CAPTIONS, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
    assert enc["input_ids"].shape == (5, 64) and "attention_mask" in enc
    with torch.no_grad():
        ref = projected(model.get_text_features(input_ids=enc["input_ids"]))
        masked = projected(model.get_text_features(**enc))
        longest = tok(CAPTIONS, padding=True, return_tensors="pt")["input_ids"]
        short = projected(model.get_text_features(input_ids=longest))
    got = siglip.encode_texts(CAPTIONS)
    torch.testing.assert_close(got, ref)
    # Both traps change the embedding, so the match above is not an accident.
    assert not torch.allclose(got, masked, atol=1e-4)
    assert not torch.allclose(got, short, atol=1e-4)
    one = torch.cat([siglip.encode_texts([t]) for t in CAPTIONS])
    torch.testing.assert_close(one, got, rtol=1e-5, atol=1e-5)


def test_siglip_lowercases_like_its_tokenizer(siglip):
    a, b, c = siglip.encode_texts(["A Cat", "a cat", "a cat!"])
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(b, c)


def test_siglip_images_match_transformers(siglip, siglip_dir):
    model = AutoModel.from_pretrained(siglip_dir).eval()
    images = _images(5, seed=2)
    pixels = SiglipImageProcessor.from_pretrained(siglip_dir)(images=images, return_tensors="pt")
    with torch.no_grad():
        ref = projected(model.get_image_features(**pixels))
    torch.testing.assert_close(siglip.encode_images(images), ref)
    assert siglip.dim == 32 and siglip.info()["model_type"] == "siglip"


def test_real_siglip_tokenizer_mirrors_processor(tmp_path):
    """SiglipTokenizer (sentencepiece) lowercases and strips punctuation; we match the documented
    ``processor(text=..., padding="max_length")`` path."""
    pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")
    import io

    import sentencepiece as spm
    from transformers import SiglipProcessor, SiglipTokenizer

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([c.lower() for c in CAPTIONS] * 10),
        model_writer=buf,
        vocab_size=60,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    (tmp_path / "spiece.model").write_bytes(buf.getvalue())
    # As the hub conversion scripts do: the tokenizer returns no attention mask.
    tok = SiglipTokenizer(
        vocab_file=str(tmp_path / "spiece.model"), model_input_names=["input_ids"]
    )
    proc = SiglipProcessor(SiglipImageProcessor(size={"height": 32, "width": 32}), tok)
    text = dict(TOWER, vocab_size=len(tok), max_position_embeddings=64, pad_token_id=1)
    torch.manual_seed(3)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=dict(TOWER, image_size=32)))
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    enc = load_encoder(str(tmp_path))
    with torch.no_grad():
        inputs = proc(text=CAPTIONS, padding="max_length", return_tensors="pt")
        ref = projected(model.eval().get_text_features(**inputs))
    torch.testing.assert_close(enc.encode_texts(CAPTIONS), ref)
    a, b = enc.encode_texts(["A Cat, on a Table!", "a cat on a table"])
    torch.testing.assert_close(a, b)


def test_siglip2_naflex(tmp_path):
    """SigLIP 2 (NaFlex) images pass through with their patch masks; pixel-space encoding is
    refused with a clear error."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    tok = _siglip_like_tokenizer()
    text = dict(TOWER, vocab_size=len(tok), max_position_embeddings=64, pad_token_id=1)
    vision = dict(TOWER, patch_size=8, num_patches=16)
    torch.manual_seed(4)
    model = Siglip2Model(Siglip2Config(text_config=text, vision_config=vision)).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    ip = Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    ip.save_pretrained(tmp_path)
    enc = load_encoder(str(tmp_path))
    images = _images(3, seed=7)
    with torch.no_grad():
        ref = projected(model.get_image_features(**ip(images=images, return_tensors="pt")))
    torch.testing.assert_close(enc.encode_images(images), ref)
    assert enc.encode_texts(["A Cat"]).shape == (1, 32)
    torch.testing.assert_close(enc.encode_texts(["A Cat"]), enc.encode_texts(["a cat"]))
    with pytest.raises(MonoscopeError, match="fixed-resolution"):
        enc.image_tensor(images)


def test_fp16_checkpoint_returns_float32(clip, clip_dir, tmp_path):
    CLIPModel.from_pretrained(clip_dir).half().save_pretrained(tmp_path)
    CLIPProcessor.from_pretrained(clip_dir).save_pretrained(tmp_path)
    # float32 by default on every transformers version (5.x alone would load float16)
    assert load_encoder(str(tmp_path)).info()["dtype"] == "float32"
    half = HFEncoder.load(str(tmp_path), dtype="auto")
    assert half.info()["dtype"] == "float16" and half.model.dtype == torch.float16
    images = _images(2)
    img, txt = half.encode_images(images), half.encode_texts(CAPTIONS[:2])
    assert img.dtype == txt.dtype == torch.float32
    torch.testing.assert_close(img, clip.encode_images(images), rtol=0.05, atol=0.02)
    torch.testing.assert_close(txt, clip.encode_texts(CAPTIONS[:2]), rtol=0.05, atol=0.02)
    x = half.image_tensor(images).requires_grad_(True)
    emb = half.encode_image_tensor(x)
    assert emb.dtype == torch.float32
    torch.testing.assert_close(emb, img, rtol=0.01, atol=0.01)
    emb.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32


def test_bad_specs_give_one_line_errors(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cases = {
        str(tmp_path / "missing"): "no such model directory",
        str(tmp_path): "no config.json",
        "monoscope-test/no-such-model": "cannot download weights when offline",
    }
    (tmp_path / "weights.bin").write_bytes(b"")
    cases[str(tmp_path / "weights.bin")] = "is a file"
    for spec, needle in cases.items():
        with pytest.raises(MonoscopeError, match=needle) as err:
            load_encoder(spec)
        assert "\n" not in str(err.value)


def test_not_a_dual_encoder(tmp_path):
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(MonoscopeError, match="not a vision-language dual encoder"):
        load_encoder(str(tmp_path))


def test_parse_dtype():
    assert parse_dtype(None) is torch.float32 and parse_dtype("auto") == "auto"
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype(torch.float16) is torch.float16
    with pytest.raises(MonoscopeError, match="dtype"):
        parse_dtype("float8")


def test_embed_preprocesses_in_the_workers_and_matches_encode_images(clip, tmp_path):
    from conftest import ListSource, colour_image
    from monoscope.embed import embed
    from monoscope.encoders.hf import ImageBatch
    from monoscope.store import Store

    images = [colour_image(i) for i in range(5)]
    batch = clip.image_preprocessor()(images)
    assert isinstance(batch, ImageBatch) and batch.size == 5
    torch.testing.assert_close(clip.encode_images(batch), clip.encode_images(images))
    assert clip.encode_images(clip.image_preprocessor()([])).shape == (0, 16)
    source = ListSource(21, bad={3: "corrupt image"})
    opts = {"shard_size": 8, "batch_size": 4, "device": "cpu", "progress": False}
    a, b = (Store(embed(clip, source, tmp_path / f"w{w}", workers=w, **opts)) for w in (0, 2))
    assert a.count == b.count == 20
    for modality in ("image", "text"):
        np.testing.assert_array_equal(a.load(modality), b.load(modality))
    expect = clip.encode_images([colour_image(i) for i in range(21) if i != 3]).numpy()
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(a.load("image"), expect, rtol=1e-4, atol=1e-5)
