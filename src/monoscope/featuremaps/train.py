"""Train a feature map on an embedding store: ``train_featuremap(store, method, out)``.

This module resolves the options and builds the map; :class:`~.trainer.Trainer` runs the
training (data from :mod:`.stream`, checkpoints from :mod:`.checkpoint`, data parallelism from
:mod:`monoscope.distributed`) through the training protocol of :mod:`.protocol`. SAEs see image
and text embeddings mixed (one shared dictionary; ``per_modality`` trains one SAE per modality
on the same batches); NCL sees pairs. A map with nothing to fit (``identity``) is saved as
built.

The output directory holds the feature map (``config.json`` + ``model.safetensors``),
``train_log.jsonl`` (one line per logging interval) and ``metrics.json``
(:func:`monoscope.featuremaps.metrics.evaluate_featuremap` plus the training dead fraction);
while training, ``checkpoints/`` (see :mod:`.checkpoint`). Under torchrun (``WORLD_SIZE`` > 1)
the processes train data-parallel (see :mod:`.trainer`); only rank 0 writes the outputs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .._util import MonoscopeError
from ..distributed import Dist
from ..integrity import check_finished
from ..locks import locked
from ..store import Store
from .base import KINDS, FeatureMap
from .center import center_featuremap
from .checkpoint import prepare_run
from .identity import IdentityMap  # noqa: F401  (registers the "identity" kind)
from .ncl import NCLMap  # noqa: F401  (registers the "ncl" kind)
from .protocol import Trainable
from .sae import SAE_KINDS, PerModalityMap
from .stream import BatchStream
from .trainer import Loop, Settings, Trainer, save_untrained, store_ref

METHODS = ("identity", *SAE_KINDS, "ncl")
DEFAULT_STEPS = 2000


def default_lr(method: str, dim: int) -> float:
    """Adam learning rate: SAEs 0.032 / sqrt(d) capped at 4e-3 (so that a step moves the
    unit-norm decoder rows by a similar relative amount at every d: 4e-3 at d = 64, 1.4e-3 at
    d = 512); NCL 1e-3."""
    if method == "ncl":
        return 1e-3
    return min(4e-3, 0.032 / math.sqrt(dim))


def build_featuremap(
    method: str,
    dim: int,
    *,
    latents: int = 2048,
    k: int = 32,
    l1: float | None = None,
    per_modality: bool = False,
    **method_kwargs: Any,
) -> FeatureMap:
    """An untrained feature map of ``method`` (one of :data:`METHODS`) for d-dim embeddings."""
    if method not in METHODS:
        raise MonoscopeError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if l1 is not None and method != "sae-relu":
        raise MonoscopeError(f"--l1 applies to sae-relu only, not {method}")
    kwargs = dict(method_kwargs)
    if method != "identity":
        kwargs["latents"] = latents
    if method in ("sae-topk", "sae-batchtopk", "sae-matryoshka"):
        kwargs["k"] = k
    if l1 is not None:
        kwargs["l1"] = l1
    if per_modality and method not in SAE_KINDS:
        raise MonoscopeError(
            f"--per-modality applies to the SAE methods, not {method}"
            + (" (use shared=False for separate NCL heads)" if method == "ncl" else "")
        )
    try:
        if per_modality:
            return PerModalityMap.from_maps(
                KINDS[method](dim, **kwargs), KINDS[method](dim, **kwargs)
            )
        return KINDS[method](dim, **kwargs)
    except TypeError as e:
        raise MonoscopeError(f"bad option for method {method}: {e}") from None
    except ValueError as e:
        raise MonoscopeError(f"{method}: {e}") from None


def _stream(
    store: Store, model: Trainable, batch_size: int, seed: int, buffer_pairs: int, ddp: Dist
) -> BatchStream:
    """The training batches of ``store`` in ``model``'s data mode."""
    stream = BatchStream(store, model.data_mode, batch_size, seed, buffer_pairs)
    if stream.batch_size < batch_size and ddp.rank == 0:
        tqdm.write(f"batch size {batch_size} exceeds the data; using {stream.batch_size}")
    return stream


def _settings(
    method: str,
    model: FeatureMap,
    stream: BatchStream,
    steps: int | None,
    epochs: float | None,
    seed: int,
    lr: float | None,
    per_modality: bool,
    dead_window: int | None,
    center: str | None,
) -> Settings:
    """The recorded settings, defaults resolved: training length ``steps``, or ``epochs``
    epochs, or max(1 epoch, DEFAULT_STEPS); ``lr`` :func:`default_lr`; ``dead_window``
    min(2^20, one epoch)."""
    if steps is not None:
        total = int(steps)
    elif epochs is not None:
        total = math.ceil(epochs * stream.steps_per_epoch)
    else:
        total = max(stream.steps_per_epoch, DEFAULT_STEPS)
    if total < 1:
        raise MonoscopeError("nothing to train: steps/epochs must be positive")
    return Settings(
        method=method,
        store=store_ref(stream.store),
        seed=seed,
        steps=total,
        batch_size=stream.batch_size,
        lr=lr if lr is not None else default_lr(method, model.dim),
        per_modality=per_modality,
        dead_window=dead_window or min(2**20, stream.samples_per_epoch),
        buffer_pairs=stream.buffer_pairs,
        data=stream.mode,
        hparams=model.hparams(),
        center=center,
    )


@locked()
def train_featuremap(
    store: Store | str | Path,
    method: str,
    out: str | Path,
    *,
    latents: int = 2048,
    k: int = 32,
    l1: float | None = None,
    batch_size: int = 1024,
    lr: float | None = None,
    epochs: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    checkpoint_every: int = 1000,
    progress: bool = True,
    per_modality: bool = False,
    dead_window: int | None = None,
    buffer_pairs: int = 32768,
    init_samples: int = 16384,
    log_every: int | None = None,
    center: str | None = None,
    **method_kwargs: Any,
) -> Path:
    """Train a feature map of ``method`` on ``store`` and save it into directory ``out``.

    Args:
        method: ``identity`` (saved as is, no training), ``sae-relu``, ``sae-topk``,
            ``sae-batchtopk``, ``sae-jumprelu``, ``sae-matryoshka`` or ``ncl``.
        latents: number of features K. ``k``: active latents per sample (TopK family).
        l1: L1 coefficient of ``sae-relu`` (default 5.0).
        batch_size: embeddings per batch (SAEs; mixed image + text) or pairs per batch (NCL).
        lr: Adam learning rate (default :func:`default_lr`), with warm-up and decay.
        epochs / steps: training length, at most one of them; default max(1 epoch, 2000 steps).
        resume: continue from the newest checkpoint in ``out`` (or return a finished run).
        overwrite: replace a finished or interrupted run in ``out``.
        checkpoint_every: steps between checkpoints (0: none).
        per_modality: one SAE per modality, saved as one ``per-modality`` map.
        dead_window: a latent that fired on none of the last ``dead_window`` training embeddings
            is dead (AuxK target, reported); default min(2^20, one epoch).
        **method_kwargs: further constructor options of the kind (e.g. ``aux_k``, ``l0``,
            ``bandwidth``, ``prefixes``, ``shared``, ``tau``, ``rep_relu``, ``mode``).
        center: ``mean`` or ``gap``: train on modality-centred embeddings (saved as a
            ``centered`` map that re-applies the transform; see :mod:`.center`).

    Returns:
        ``out``, holding config.json, model.safetensors, train_log.jsonl and metrics.json.
    """
    out, store = Path(out), store if isinstance(store, Store) else Store(store)
    if store.count == 0:
        raise MonoscopeError(f"{store.path}: the store is empty")
    if steps is not None and epochs is not None:
        raise MonoscopeError("give epochs or steps, not both")
    ddp, device = Dist.join(device)
    model = build_featuremap(
        method, store.dim, latents=latents, k=k, l1=l1, per_modality=per_modality, **method_kwargs
    )
    model = center_featuremap(model, store, center)
    if ddp.first(lambda: prepare_run(out, resume, overwrite)):
        check_finished(out, method, model.hparams(), store)
        return out
    if not model.trainable:
        ddp.first(lambda: save_untrained(model, store, out, method, center, seed, device))
        return out
    if not isinstance(model, Trainable):
        raise MonoscopeError(
            f"feature map '{model.kind}' is trainable but lacks the training protocol"
        )
    stream = _stream(store, model, batch_size, seed, buffer_pairs, ddp)
    settings = _settings(
        method, model, stream, steps, epochs, seed, lr, per_modality, dead_window, center
    )
    loop = Loop(
        init_samples,
        log_every or max(1, min(100, settings.steps // 100)),
        checkpoint_every,
        progress,
    )
    return Trainer(model, stream, out, settings, loop, ddp=ddp, device=device).fit(resume)
