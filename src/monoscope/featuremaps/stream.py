"""The training data stream: seeded, shard-buffered batches of an embedding store.

Every epoch visits the shards in a seeded random order, loads a buffer of shards (at least
``buffer_pairs`` pairs), shuffles it and cuts batches; the leftover rows of a buffer join the
next one and the last partial batch of an epoch is dropped. In data mode ``mixed`` a batch is
``{"x": (B, d), "is_image": (B,)}``, image and text embeddings shuffled together; in mode
``paired`` it is ``{"image": (B, d), "text": (B, d)}``, B pairs. The order of epoch e is a
function of (seed, e) only, so a run resumed from a checkpoint replays exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..store import Store


class BatchStream:
    """Batches of ``store`` in data mode ``mode`` (see the module docstring); ``batch_size``
    is capped at one epoch's samples."""

    def __init__(self, store: Store, mode: str, batch_size: int, seed: int, buffer_pairs: int):
        self.store, self.mode, self.seed, self.buffer_pairs = store, mode, seed, buffer_pairs
        self.counts = [int(s["count"]) for s in store.manifest["shards"]]
        self.samples_per_epoch = sum(self.counts) * (2 if mode == "mixed" else 1)
        self.batch_size = min(batch_size, self.samples_per_epoch)
        self.steps_per_epoch = self.samples_per_epoch // max(self.batch_size, 1)
        self.embeddings_per_batch = self.batch_size * (2 if mode == "paired" else 1)

    def _load(self, shards: list[int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        image = np.concatenate([self.store.shard(i).image for i in shards])
        text = np.concatenate([self.store.shard(i).text for i in shards])
        if self.mode == "paired":
            perm = rng.permutation(len(image))
            return {"image": image[perm], "text": text[perm]}
        x = np.concatenate([image, text])
        is_image = np.arange(len(x)) < len(image)
        perm = rng.permutation(len(x))
        return {"x": x[perm], "is_image": is_image[perm]}

    def epoch(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        rng = np.random.default_rng([self.seed, epoch])
        group: list[int] = []
        groups = []
        for i in rng.permutation(len(self.counts)).tolist():
            group.append(i)
            if sum(self.counts[j] for j in group) >= self.buffer_pairs:
                groups.append(group)
                group = []
        if group:
            groups.append(group)
        carry: dict[str, np.ndarray] | None = None
        b = self.batch_size
        for group in groups:
            arrays = self._load(group, rng)
            if carry is not None:
                arrays = {key: np.concatenate([carry[key], v]) for key, v in arrays.items()}
            n = len(next(iter(arrays.values())))
            for lo in range(0, n - b + 1, b):
                yield {key: v[lo : lo + b] for key, v in arrays.items()}
            carry = {key: v[n - n % b :] for key, v in arrays.items()}

    def from_step(self, step: int) -> Iterator[dict[str, np.ndarray]]:
        """Batches from global step ``step`` on, forever."""
        epoch, skip = divmod(step, self.steps_per_epoch)
        while True:
            for i, batch in enumerate(self.epoch(epoch)):
                if i >= skip:
                    yield batch
            skip, epoch = 0, epoch + 1

    def sample(self, rows: int) -> dict[str, np.ndarray]:
        """The first whole batches of epoch 0 holding at least ``rows`` rows (or all of it)."""
        init = []
        for batch in self.epoch(0):
            init.append(batch)
            if len(init) * self.batch_size >= rows:
                break
        return {key: np.concatenate([b[key] for b in init]) for key in init[0]}


def to_torch(batch: dict[str, np.ndarray], device: str) -> dict[str, torch.Tensor]:
    """A batch of arrays as tensors on ``device``."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}
