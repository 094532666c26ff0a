"""The embed stage: run a dual encoder over a pair source into a store."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ._util import MonoscopeError, resolve_device
from .data import BadRecord, Pair, PairSource, open_source
from .encoders import DualEncoder, load_encoder
from .store import StoreWriter


def embed(
    model: str | DualEncoder,
    data: str | PairSource,
    out: str | Path,
    *,
    batch_size: int = 64,
    shard_size: int = 4096,
    device: str = "auto",
    dtype: str | None = None,
    normalize: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Embed every pair of ``data`` with ``model`` into the store ``out``.

    Pairs with a missing or corrupt image, an empty caption, or a non-finite embedding are
    skipped and counted by reason in the manifest. With ``resume=True`` an interrupted run
    continues after its last committed shard.
    """
    if batch_size < 1 or shard_size < 1:
        raise MonoscopeError("--batch-size and --shard-size must be positive")
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
    writer = StoreWriter(out, header, resume=resume, overwrite=overwrite)
    if writer.complete:
        return writer.path
    consumed = writer.consumed
    skipped: Counter[str] = Counter(writer.manifest["skipped"]["reasons"])
    total = _length(source)
    bar = tqdm(total=total, initial=consumed, unit="pair", desc="embed", disable=not progress)
    buf_img: list[np.ndarray] = []
    buf_txt: list[np.ndarray] = []
    buf_pairs: list[dict[str, Any]] = []
    records = itertools.islice(iter(source), consumed, None)
    with torch.inference_mode():
        # A batch never crosses a shard boundary, so a committed shard always ends exactly at
        # the committed source position and resume neither loses nor repeats a record.
        while batch := list(
            itertools.islice(records, min(batch_size, shard_size - len(buf_pairs)))
        ):
            images, texts, kept = [], [], []
            for pair in batch:
                try:
                    images.append(_load(pair))
                except BadRecord as e:
                    skipped[e.reason] += 1
                    continue
                texts.append(pair.caption)
                kept.append(pair)
            if kept:
                img = _as_numpy(encoder.encode_images(images))
                txt = _as_numpy(encoder.encode_texts(texts))
                _check_dims(img, txt, encoder.dim)
                finite = np.isfinite(img).all(1) & np.isfinite(txt).all(1)
                if normalize:
                    img, txt = _l2_normalize(img), _l2_normalize(txt)
                    finite &= (np.linalg.norm(img, axis=1) > 0) & (np.linalg.norm(txt, axis=1) > 0)
                if not finite.all():
                    skipped["non-finite embedding"] += int((~finite).sum())
                buf_img.append(img[finite])
                buf_txt.append(txt[finite])
                buf_pairs.extend(_record(p) for p, ok in zip(kept, finite, strict=True) if ok)
            consumed += len(batch)
            bar.update(len(batch))
            if len(buf_pairs) == shard_size:
                _flush(writer, buf_img, buf_txt, buf_pairs, consumed, skipped)
        if buf_pairs:
            _flush(writer, buf_img, buf_txt, buf_pairs, consumed, skipped)
    bar.close()
    if writer.manifest["count"] == 0:
        raise MonoscopeError(
            f"no pair could be embedded ({sum(skipped.values())} skipped: {dict(skipped)})"
        )
    return writer.finish(consumed, skipped)


def _flush(
    writer: StoreWriter,
    buf_img: list[np.ndarray],
    buf_txt: list[np.ndarray],
    buf_pairs: list[dict[str, Any]],
    consumed: int,
    skipped: Counter[str],
) -> None:
    """Commit the buffered rows as one shard and empty the buffers."""
    writer.add_shard(np.concatenate(buf_img), np.concatenate(buf_txt), buf_pairs, consumed, skipped)
    buf_img.clear()
    buf_txt.clear()
    buf_pairs.clear()


def _record(pair: Pair) -> dict[str, Any]:
    return {
        "id": pair.id,
        "caption": pair.caption,
        "image_ref": pair.image_ref,
        "labels": pair.labels,
    }


def _load(pair: Pair):
    if not pair.caption or not pair.caption.strip():
        raise BadRecord("empty caption", pair.id)
    if pair.load_image is None:
        raise BadRecord("missing image", pair.id)
    return pair.load_image()


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to(device="cpu", dtype=torch.float32).numpy()


def _check_dims(img: np.ndarray, txt: np.ndarray, dim: int) -> None:
    if img.ndim != 2 or img.shape[1] != dim or txt.ndim != 2 or txt.shape[1] != dim:
        raise MonoscopeError(
            f"encoder returned shapes {img.shape} and {txt.shape}, expected (B, {dim})"
        )


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _length(source: PairSource) -> int | None:
    try:
        return len(source)
    except TypeError:
        return None
