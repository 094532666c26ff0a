"""Steering edits, the steer study, the embedding decoder and the unCLIP plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monoscope._util import MonoscopeError
from monoscope.analysis.monosemanticity import unit_rows
from monoscope.featuremaps.identity import IdentityMap
from monoscope.studies.decoder import decode, load_decoder, train_decoder
from monoscope.studies.steering import (
    render_unclip,
    steer,
    steer_study,
    steering_directions,
)
from test_studies_common import LookupEncoder, colour_store, make_store
from test_studies_gender import _text, gender_case


def test_steer_alpha_zero_is_identity_and_gain_is_monotone():
    g = torch.Generator().manual_seed(0)
    z = unit_rows(torch.randn(20, 16, generator=g))
    target = unit_rows(torch.randn(16, generator=g))
    alphas = [0.0, 0.1, 0.3, 0.6, 1.0, 2.0]
    edited = steer(z, target, alphas, normalize=True)
    assert edited.shape == (6, 20, 16)
    assert torch.allclose(edited[0], z, atol=1e-6)
    sims = edited @ target  # (A, n)
    assert (sims[1:] > sims[:-1]).all()
    raw = steer(z, target, alphas, normalize=False)
    assert torch.allclose(raw[-1] - z, 2.0 * target.expand_as(z))


def test_steering_directions_are_restricted_to_the_group():
    fmap = IdentityMap(3)  # features: +x0 +x1 +x2 -x0 -x1 -x2
    concept = torch.tensor([2.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    masks = {
        "A": np.array([1, 0, 0, 0, 0, 0], bool),
        "B": np.array([0, 1, 0, 0, 0, 1], bool),
        "C": np.array([0, 0, 1, 1, 0, 0], bool),  # the concept is inactive on both
    }
    dirs = steering_directions(fmap, concept, masks)
    assert dirs["A"].tolist() == [1.0, 0.0, 0.0]
    assert torch.allclose(dirs["B"], torch.tensor([0.0, 1.0, -1.0]) / 2**0.5)
    assert dirs["C"] is None
    with pytest.raises(MonoscopeError, match="decoder directions"):
        steering_directions(IdentityMap(3, mode="abs"), torch.ones(3), {"A": np.ones(3, bool)})


def test_steer_study_on_the_constructed_gender_case(tmp_path: Path):
    store, fmap, analysis = gender_case(tmp_path)
    model = LookupEncoder(np.zeros((1, 8)), _text)
    path = steer_study(
        store,
        fmap,
        analysis,
        tmp_path / "out",
        model=model,
        concept="woman",
        alphas=(0.0, 0.5, 1.0, 2.0),
        n_sources=10,
        concept_images=0,
        examples=1,
        render_decoder=False,
        device="cpu",
        progress=False,
    )
    res = json.loads(path.read_text())
    # the prompt 'woman' embeds to e0: only feature 0 (+x0, ImgD) is active
    assert res["concept_features"]["ImgD"] == [{"feature": 0, "activation": 1.0}]
    assert "note" in res["groups"]["TextD"]
    curve = res["groups"]["ImgD"]["per_alpha"]
    assert curve[0]["concept_gain"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert curve[0]["source_top1"]["mean"] == 1.0 and curve[0]["source_rank"]["mean"] == 0
    gains = [c["concept_gain"]["mean"] for c in curve]
    keep = [c["source_cosine"]["mean"] for c in curve]
    assert all(b > a for a, b in zip(gains, gains[1:], strict=False))
    assert all(b < a for a, b in zip(keep, keep[1:], strict=False))
    assert curve[-1]["concept_nn_rate"]["mean"] > 0.5  # neighbours become women
    note = "needs concept features in both ImgD and TextD"
    assert res["paper_finding"] == {"note": note, "verdict": f"not measurable: {note}"}
    assert res["figures"] == ["steer_neighbours_0.png"]
    assert (tmp_path / "out" / "steer_neighbours_0.png").is_file()


def test_steer_study_renders_with_a_decoder_trained_on_the_fly(tmp_path: Path):
    store, fmap, analysis = gender_case(tmp_path)
    model = LookupEncoder(np.zeros((1, 8)), _text)
    path = steer_study(
        store,
        fmap,
        analysis,
        tmp_path / "out",
        model=model,
        concept="woman",
        alphas=(0.0, 1.0),
        n_sources=4,
        concept_images=4,
        examples=1,
        decoder_epochs=1,
        device="cpu",
        progress=False,
    )
    res = json.loads(path.read_text())
    assert res["decoder"]["trained_here"] is True
    assert "steer_decoded_0.png" in res["figures"]
    assert "per_alpha" in res["groups"]["TextD"]  # woman images carry 0.3 e1 (TextD)
    again = json.loads(
        steer_study(
            store,
            fmap,
            analysis,
            tmp_path / "out",
            model=model,
            concept="woman",
            alphas=(0.0, 1.0),
            n_sources=4,
            examples=1,
            decoder_epochs=1,
            device="cpu",
            progress=False,
        ).read_text()
    )
    assert again["decoder"]["trained_here"] is False  # the compatible decoder is reused


def test_decoder_trains_saves_and_loads(tmp_path: Path):
    store = colour_store(tmp_path, n=24)
    out = train_decoder(
        store,
        tmp_path / "dec",
        size=16,
        width=16,
        epochs=6,
        batch_size=8,
        lr=1e-2,
        device="cpu",
        progress=False,
    )
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "embedding-decoder" and config["size"] == 16
    assert len(config["log"]) == 6 and config["log"][-1]["mse"] < config["log"][0]["mse"]
    dec = load_decoder(out)
    emb = torch.randn(3, 8)
    images = decode(dec, emb)
    assert images.shape == (3, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(decode(load_decoder(out), emb), images)
    with pytest.raises(MonoscopeError, match="power of two"):
        train_decoder(store, tmp_path / "bad", size=24, device="cpu", progress=False)


def test_steer_study_rejects_a_decoder_of_another_model(tmp_path: Path):
    store, fmap, analysis = gender_case(tmp_path)
    other = make_store(
        tmp_path / "other",
        [{"caption": f"c{i}"} for i in range(4)],
        LookupEncoder(np.eye(4, 8), lambda t: np.ones(8, np.float32)),
    )
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model"] = {"kind": "other", "id": "other", "revision": "1"}
    (other / "manifest.json").write_text(json.dumps(manifest))
    dec = train_decoder(
        other, tmp_path / "dec", size=8, width=8, epochs=1, device="cpu", progress=False
    )
    with pytest.raises(MonoscopeError, match="another model"):
        steer_study(
            store,
            fmap,
            analysis,
            tmp_path / "out",
            model=LookupEncoder(np.zeros((1, 8)), _text),
            n_sources=2,
            examples=1,
            decoder=dec,
            device="cpu",
            progress=False,
        )


def _tiny_unclip(dim: int):
    """Stable unCLIP img2img from tiny random components (offline tokenizer)."""
    diffusers = pytest.importorskip("diffusers")
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in map(chr, range(33, 127)):
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    torch.manual_seed(0)
    small = {
        "hidden_size": dim,
        "intermediate_size": 37,
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
    }
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        attention_head_dim=(2, 4),
        class_embed_type="projection",
        projection_class_embeddings_input_dim=2 * dim,
        cross_attention_dim=dim,
        layers_per_block=1,
        norm_num_groups=32,
    )
    return diffusers.StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(crop_size=8, size=8),
        image_encoder=CLIPVisionModelWithProjection(
            CLIPVisionConfig(projection_dim=dim, image_size=8, patch_size=4, **small)
        ),
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=dim),
        image_noising_scheduler=diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=tokenizer,
        text_encoder=CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(vocab),
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
                projection_dim=dim,
                max_position_embeddings=16,
                **small,
            )
        ),
        unet=unet,
        scheduler=diffusers.DDIMScheduler(prediction_type="v_prediction", steps_offset=1),
        vae=diffusers.AutoencoderKL(block_out_channels=(32,), norm_num_groups=32, sample_size=8),
    )


def test_unclip_plumbing_with_tiny_random_components():
    pipe = _tiny_unclip(dim=16)
    pipe.set_progress_bar_config(disable=True)
    images = render_unclip(pipe, torch.randn(2, 16), steps=2, norm=3.0)
    assert images.shape == (2, 8, 8, 3) and images.dtype == np.uint8
    with pytest.raises(MonoscopeError, match="expects 16-d"):
        render_unclip(pipe, torch.randn(1, 8), steps=1)


def test_load_unclip_errors_are_one_line(tmp_path: Path):
    pytest.importorskip("diffusers")
    from monoscope.studies.steering import load_unclip

    with pytest.raises(MonoscopeError, match="cannot load a Stable unCLIP pipeline"):
        load_unclip(str(tmp_path / "missing"))


def test_steering_verdicts_compare_means_and_intervals() -> None:
    from monoscope.studies.steering import _above

    a, b = {"mean": 0.5, "ci": [0.4, 0.6]}, {"mean": 0.2, "ci": [0.1, 0.3]}
    assert _above(a, b) == "holds" and _above(b, a) == "does not hold"
    assert _above(a, {"mean": 0.45, "ci": [0.3, 0.55]}).startswith("direction only")
    assert _above(a, {"mean": None, "ci": None}) == "not measurable"
