"""The embed stage: run a dual encoder over a pair source into a store.

Images are decoded in DataLoader worker processes (``workers``), overlapped with the model's
forward pass; an encoder with an ``image_preprocessor`` (Hugging Face models) has its images
resized and normalised there too, so the main process only tokenises and runs the model.
The source is cut into shards of ``shard_size`` records; under ``torchrun`` (or any launcher
that sets ``RANK``/``WORLD_SIZE``) every rank embeds the shards b with b % world == rank
into the same store directory, and rank 0 merges them at the end, so the
result is the same store, row for row, as a single-process run.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from ._util import MonoscopeError, resolve_device
from .data import BadRecord, Pair, PairSource, open_source
from .data.pixels import DEFAULT_MAX_PIXELS, set_max_pixels
from .distributed import Dist
from .encoders import DualEncoder, load_encoder
from .locks import locked
from .retrieval_check import record_retrieval_check
from .store import Store, StoreWriter


@locked()
def embed(
    model: str | DualEncoder,
    data: str | PairSource,
    out: str | Path,
    *,
    batch_size: int = 64,
    shard_size: int = 4096,
    workers: int = 0,
    device: str = "auto",
    dtype: str | None = None,
    normalize: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Path:
    """Embed every pair of ``data`` with ``model`` into the store ``out``.

    Pairs with a missing or corrupt image, an empty caption, or a non-finite embedding are
    skipped and counted by reason in the manifest, as is the store's own in-batch retrieval
    (:mod:`monoscope.retrieval_check`; a warning when the pocket model is at chance on it).
    With ``resume=True`` an interrupted run continues at its first uncommitted shard. Images of more than ``max_pixels`` pixels are
    skipped (``image too large``) before they are decoded.
    """
    if batch_size < 1 or shard_size < 1 or workers < 0:
        raise MonoscopeError("--batch-size and --shard-size must be positive, --workers >= 0")
    ddp = Dist.join_gloo()
    rank, world = ddp.rank, ddp.world
    if world > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    device = resolve_device(device)
    source = open_source(data) if isinstance(data, str) else data
    encoder = load_encoder(model, device=device, dtype=dtype) if isinstance(model, str) else model
    header: dict[str, Any] = {
        "model": encoder.info(),
        "dim": int(encoder.dim),
        "normalized": normalize,
        "source": source.describe(),
        "shard_size": shard_size,
    }
    if rank != 0:
        ddp.barrier()  # rank 0 prepares (or replaces) the directory first
    writer = StoreWriter(out, header, resume=resume, overwrite=overwrite, rank=rank, world=world)
    if rank == 0:
        ddp.barrier()
    if writer.complete:
        return writer.path
    prep = getattr(encoder, "image_preprocessor", None)
    chunks = _Chunks(source, writer, batch_size, max_pixels, prep() if prep else None)
    loader = DataLoader(
        chunks,
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    total = _length(source)
    bar = tqdm(
        total=total and -(-total // world),
        unit="pair",
        desc="embed",
        disable=not progress or rank != 0,
    )
    current = -1
    rows_img: list[np.ndarray] = []
    rows_txt: list[np.ndarray] = []
    kept: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    records = 0
    with torch.inference_mode():
        for shard, end, items, pixels in loader:
            if shard == _END:
                records = end
                continue
            if shard != current:
                if current >= 0:
                    _commit(writer, current, rows_img, rows_txt, kept, skipped)
                current, rows_img, rows_txt, kept, skipped = shard, [], [], [], Counter()
            good = []
            for pair, image, reason in items:
                if reason is None:
                    good.append((pair, image))
                else:
                    skipped[reason] += 1
            if good:
                img = _as_numpy(
                    encoder.encode_images([im for _, im in good] if pixels is None else pixels)
                )
                txt = _as_numpy(encoder.encode_texts([p["caption"] for p, _ in good]))
                _check_dims(img, txt, encoder.dim)
                ok = np.isfinite(img).all(1) & np.isfinite(txt).all(1)
                if normalize:
                    img, txt = _l2_normalize(img), _l2_normalize(txt)
                    ok &= (np.linalg.norm(img, axis=1) > 0) & (np.linalg.norm(txt, axis=1) > 0)
                if not ok.all():
                    skipped["non-finite embedding"] += int((~ok).sum())
                rows_img.append(img[ok])
                rows_txt.append(txt[ok])
                kept.extend(p for (p, _), k in zip(good, ok, strict=True) if k)
            bar.update(len(items))
            if end == (shard + 1) * shard_size:  # the shard's last chunk: commit it now
                _commit(writer, current, rows_img, rows_txt, kept, skipped)
                current = -1
        if current >= 0:
            _commit(writer, current, rows_img, rows_txt, kept, skipped)
    bar.close()
    writer.end(records)
    ddp.barrier()
    if rank != 0:
        return writer.path
    path = writer.finish()
    record_retrieval_check(path)  # in the manifest; warns when the pocket model is lost
    return path


def skipped_line(store: str | Path) -> str | None:
    """``skipped N records: reason n, ...`` from a store's manifest; None when none was skipped."""
    skipped = Store(store).manifest.get("skipped") or {}
    if not skipped.get("count"):
        return None
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(skipped.get("reasons", {}).items()))
    return f"skipped {skipped['count']} records: {reasons}"


_END = -1


class _Chunks(IterableDataset):
    """Yields ``(shard, end, [(record, image | None, skip reason | None), ...], pixels)`` per
    chunk of up to ``batch_size`` records of this rank's uncommitted shards, in source order,
    then ``(_END, number of records in the source, [], None)``. With a ``preprocess`` callable,
    ``pixels`` is its output on the chunk's good images (which are then dropped from the
    records); otherwise None. Chunks never cross shard boundaries; DataLoader worker w decodes
    the chunks c with c % workers == w, and the loader returns them in order."""

    def __init__(
        self,
        source: PairSource,
        writer: StoreWriter,
        batch_size: int,
        max_pixels: int,
        preprocess: Any = None,
    ):
        self.source, self.writer, self.batch_size = source, writer, batch_size
        self.preprocess = preprocess
        self.shard_size = writer.header["shard_size"]
        self.max_pixels = max_pixels

    def __iter__(self) -> Iterator[tuple[int, int, list[tuple[dict, Any, str | None]], Any]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        set_max_pixels(self.max_pixels)  # in this (worker) process
        records = iter(self.source)
        position, chunk_index = 0, 0
        while True:
            shard = position // self.shard_size
            step = min(self.batch_size, (shard + 1) * self.shard_size - position)
            if not self.writer.mine(shard) or self.writer.done(shard):
                passed = sum(1 for _ in itertools.islice(records, self.shard_size))
                position += passed
                if passed < self.shard_size:
                    break
                continue
            chunk = list(itertools.islice(records, step))
            if not chunk:
                break
            if chunk_index % nw == wid:
                yield shard, position + len(chunk), *self._prepare(chunk)
            chunk_index += 1
            position += len(chunk)
        if wid == 0:
            yield _END, position, [], None  # where the source ended, for the manifest

    def _prepare(self, chunk: list[Pair]) -> tuple[list[tuple[dict, Any, str | None]], Any]:
        items = [_decode(p) for p in chunk]
        if self.preprocess is None:
            return items, None
        pixels = self.preprocess([im for _, im, reason in items if reason is None])
        return [(rec, None, reason) for rec, _, reason in items], pixels


def _decode(pair: Pair) -> tuple[dict[str, Any], Any, str | None]:
    record = {
        "id": pair.id,
        "caption": pair.caption,
        "image_ref": pair.image_ref,
        "labels": pair.labels,
    }
    try:
        if not pair.caption or not pair.caption.strip():
            raise BadRecord("empty caption", pair.id)
        if pair.load_image is None:
            raise BadRecord("missing image", pair.id)
        return record, pair.load_image(), None
    except BadRecord as e:
        return record, None, e.reason


def _commit(
    writer: StoreWriter,
    shard: int,
    img: list[np.ndarray],
    txt: list[np.ndarray],
    kept: list[dict[str, Any]],
    skipped: Counter[str],
) -> None:
    dim = writer.header["dim"]
    writer.add_shard(
        shard,
        np.concatenate(img) if img else np.zeros((0, dim), np.float32),
        np.concatenate(txt) if txt else np.zeros((0, dim), np.float32),
        kept,
        skipped,
    )


def _identity(x: Any) -> Any:
    return x


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to(device="cpu", dtype=torch.float32).numpy()


def _check_dims(img: np.ndarray, txt: np.ndarray, dim: int) -> None:
    if img.ndim != 2 or img.shape[1] != dim or txt.ndim != 2 or txt.shape[1] != dim:
        raise MonoscopeError(
            f"encoder returned shapes {img.shape} and {txt.shape}, expected (B, {dim})"
        )


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):  # inf rows become NaN and are skipped
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm > 0, norm, 1.0)


def _length(source: PairSource) -> int | None:
    try:
        return len(source)
    except TypeError:
        return None
