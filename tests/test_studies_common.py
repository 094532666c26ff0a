"""Helpers shared by the study tests (constructed stores and tiny encoders), and tests of the
studies' shared plumbing."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from monoscope._util import write_json
from monoscope.analysis.analyze import write_feature_table
from monoscope.embed import embed
from monoscope.studies._common import (
    concept_pattern,
    diff_ci,
    label_array,
    load_pixels,
    random_masks,
)


def hashed(text: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class LookupEncoder:
    """Image i (its index written into pixel (0, 0)) embeds to ``images[i]``; texts embed via
    ``text_fn``. Lets a test plant exact embeddings through the public ``embed``."""

    def __init__(self, images: np.ndarray, text_fn: Callable[[str], np.ndarray]):
        self.images = images.astype(np.float32)
        self.text_fn = text_fn
        self.dim = images.shape[1]

    def info(self) -> dict[str, Any]:
        return {"kind": "lookup", "id": "lookup", "revision": "0"}

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        px = np.stack([np.asarray(im.convert("RGB"), np.int64)[0, 0] for im in images])
        return torch.from_numpy(self.images[px[:, 0] + 256 * px[:, 1]])

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.text_fn(t) for t in texts]).astype(np.float32))


class TinyEncoder:
    """A differentiable 8-d dual encoder on 8x8 pixels: dim 0 = red - blue, dim 1 = blue -
    red, dims 2.. a fixed random projection; texts: 'red' -> e0, 'blue' -> e1, else hashed."""

    dim = 8

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randn(3 * 8 * 8, self.dim - 2, generator=g) * 0.05

    def info(self) -> dict[str, Any]:
        return {"kind": "tiny", "id": "tiny", "revision": "0"}

    def image_tensor(self, images: list[Image.Image]) -> torch.Tensor:
        arr = np.stack([np.asarray(im.convert("RGB").resize((8, 8)), np.float32) for im in images])
        return torch.from_numpy(arr / 255).permute(0, 3, 1, 2)

    def encode_image_tensor(self, x: torch.Tensor) -> torch.Tensor:
        r, b = x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))
        return torch.cat([torch.stack([r - b, b - r], 1), x.flatten(1) @ self.proj], 1)

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        with torch.no_grad():
            return self.encode_image_tensor(self.image_tensor(images))

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for t in texts:
            v = 0.1 * hashed(t, self.dim)
            v[0] += 1.0 if re.search(r"\bred\b", t) else 0.0
            v[1] += 1.0 if re.search(r"\bblue\b", t) else 0.0
            rows.append(v)
        return torch.from_numpy(np.stack(rows))


def write_pairs(
    root: Path, records: list[dict[str, Any]], pixels: list[np.ndarray] | None = None
) -> Path:
    """Images (``pixels[i]``, or a blank with index i in pixel (0, 0)) + ``pairs.jsonl``."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, rec in enumerate(records):
        if pixels is None:
            arr = np.full((8, 8, 3), 255, np.uint8)
            arr[0, 0] = (i % 256, i // 256, 0)
        else:
            arr = pixels[i]
        Image.fromarray(arr).save(root / "img" / f"{i}.png")
        lines.append(json.dumps({"image": f"img/{i}.png", **rec}))
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return root / "pairs.jsonl"


def make_store(root: Path, records, encoder, pixels=None) -> Path:
    from monoscope.data.files import FilePairs

    source = FilePairs(write_pairs(root / "data", records, pixels))
    return embed(encoder, source, root / "store", device="cpu", progress=False)


def hand_analysis(root: Path, groups: list[str]) -> Path:
    """An analysis directory whose features.csv assigns the given groups (the other required
    columns are placeholders)."""
    root.mkdir(parents=True, exist_ok=True)
    k = len(groups)
    alive = np.array([g != "dead" for g in groups], dtype=int)
    write_feature_table(
        root / "features.csv",
        {
            "feature": np.arange(k),
            "alive": alive,
            **{c: np.full(k, 0.5) for c in ("mu_img", "mu_txt", "mds")},
            "group": np.array(groups, dtype=object),
        },
    )
    write_json(root / "summary.json", {"format_version": 2, "n_features": k, "n_pairs": 0})
    return root


def colour_store(root: Path, n: int = 24) -> Path:
    """Red and blue noisy squares labelled ``kind`` red/blue, embedded by TinyEncoder."""
    rng = np.random.default_rng(0)
    records, pixels = [], []
    for i in range(n):
        kind = ("red", "blue")[i % 2]
        base = np.array((200, 40, 40) if kind == "red" else (40, 40, 200), np.float32)
        arr = np.clip(base + rng.normal(0, 15, (8, 8, 3)), 0, 255).astype(np.uint8)
        pixels.append(arr)
        records.append({"caption": f"a {kind} square number {i}", "kind": kind})
    return make_store(root, records, TinyEncoder(), pixels)


def test_diff_ci_and_random_masks():
    out = diff_ci(np.ones(10), np.zeros(5))
    assert out["diff"] == 1.0 and out["ci"] == [1.0, 1.0]
    assert diff_ci(np.ones(3), np.zeros(0))["diff"] is None
    alive = np.array([True, True, False, True, False])
    masks = random_masks(alive, 2, 4, np.random.default_rng(0))
    assert len(masks) == 4
    assert all(m.sum() == 2 and not (m & ~alive).any() for m in masks)


def test_labels_and_concept_pattern():
    pairs = [{"labels": {"g": "a"}}, {"labels": {}}, {"labels": {"g": 3}}]
    assert label_array(pairs, "g").tolist() == ["a", "", "3"]
    pat = concept_pattern("man")
    assert pat.search("Man walking") and not pat.search("woman walking")


def test_load_pixels_from_files_and_emoji(tmp_path: Path):
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[..., 0] = 255
    write_pairs(tmp_path, [{"caption": "x"}], [arr])
    pairs = [{"image_ref": str(tmp_path / "img" / "0.png")}]
    out = load_pixels(pairs, np.array([0]), 4)
    assert out.shape == (1, 4, 4, 3) and (out[..., 0] == 255).all()
    from monoscope.data.emoji import emoji_array

    images, records = emoji_array()
    emoji_pairs = [{"image_ref": f"emoji:{records[5]['id']}"}]
    assert np.array_equal(load_pixels(emoji_pairs, np.array([0]), 64)[0], images[5])
