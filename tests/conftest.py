"""Shared test fixtures: a toy dual encoder, an in-memory pair source, a small store."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from monoscope.data import BadRecord, Pair

# Tiny models: one thread is faster than two, and far faster on a loaded machine.
torch.set_num_threads(1)


class ToyEncoder:
    """Deterministic 8-d dual encoder: image -> mean colours of 2x2 cells (first 8 values);
    text -> a vector seeded by the caption's hash. Captions containing 'NaN' embed to NaN."""

    dim = 8

    def __init__(self) -> None:
        self.image_calls = 0

    def info(self) -> dict[str, Any]:
        return {"kind": "toy", "id": "toy", "revision": "0"}

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        self.image_calls += len(images)
        rows = [
            np.asarray(im.convert("RGB").resize((2, 2)), np.float32).reshape(-1)[:8] / 255 - 0.5
            for im in images
        ]
        return torch.from_numpy(np.stack(rows))

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
            rows.append(np.full(8, np.nan, np.float32) if "NaN" in t else v)
        return torch.from_numpy(np.stack(rows))


def colour_image(i: int) -> Image.Image:
    rng = np.random.default_rng(i)
    return Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))


class ListSource:
    """An in-memory pair source; ``bad`` maps an index to the skip reason its image raises."""

    def __init__(
        self, n: int, bad: dict[int, str] | None = None, captions: dict[int, str] | None = None
    ):
        self.n = n
        self.bad = bad or {}
        self.captions = captions or {}

    def __len__(self) -> int:
        return self.n

    def describe(self) -> dict[str, Any]:
        return {"kind": "list", "n": self.n}

    def __iter__(self) -> Iterator[Pair]:
        for i in range(self.n):
            yield Pair(
                id=f"p{i}",
                caption=self.captions.get(i, f"caption {i}"),
                image_ref=f"mem:{i}",
                labels={"parity": i % 2},
                load_image=self._loader(i),
            )

    def _loader(self, i: int):
        def load() -> Image.Image:
            if i in self.bad:
                raise BadRecord(self.bad[i], f"p{i}")
            return colour_image(i)

        return load


@pytest.fixture
def toy_encoder() -> ToyEncoder:
    return ToyEncoder()


@pytest.fixture
def small_store(tmp_path: Path, toy_encoder: ToyEncoder) -> Path:
    from monoscope.embed import embed

    return embed(
        toy_encoder,
        ListSource(50),
        tmp_path / "store",
        shard_size=16,
        batch_size=8,
        device="cpu",
        progress=False,
    )
