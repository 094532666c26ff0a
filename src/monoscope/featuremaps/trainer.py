"""One :class:`Trainer` for every trainable feature map (:mod:`.protocol`).

The trainer owns the loop: Adam with linear warm-up and decay (:func:`lr_at`), the dead-latent
counters (a latent that fired on none of the last ``dead_window`` training embeddings is dead;
the map gets the mask, e.g. for AuxK), logging (``train_log.jsonl``: one line per logging
interval with step, samples, epoch, lr, the means of loss and of the map's statistics, and
``dead_fraction`` at the interval's end), checkpoints (:mod:`.checkpoint`) and the final
outputs (the map, ``metrics.json``). It talks to the map only through the protocol.

Data-parallel training (:mod:`monoscope.distributed`): every rank builds the same seeded stream
of global batches and trains on rows ``rank::world`` of each; the parameter gradients are
summed over the ranks and divided by ``world`` (so the global batch size stays ``batch_size``,
which must be divisible by the number of processes), the dead-latent counters see the latents
that fired on any rank, and the map's ``synced_buffers`` are averaged. Losses that couple the
rows of a batch gather them through the ``gather`` the trainer passes. The initialisation is
broadcast from rank 0, and only rank 0 writes the outputs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .._util import MonoscopeError, seed_everything, versions, write_json
from ..distributed import Dist
from ..integrity import append_line
from ..store import Store
from . import checkpoint as ckpt
from .base import FeatureMap
from .metrics import evaluate_featuremap
from .protocol import Trainable
from .stream import BatchStream, to_torch

DEAD_WARNING = 0.5  # warn when more than this share of the latents is dead after training


@dataclass(frozen=True)
class Settings:
    """The resolved settings of a run: saved in config.json (``training``) and in every
    checkpoint, and required to match on resume."""

    method: str
    store: dict[str, Any]
    seed: int
    steps: int
    batch_size: int
    lr: float
    per_modality: bool
    dead_window: int
    buffer_pairs: int
    data: str
    hparams: dict[str, Any]
    center: str | None


@dataclass(frozen=True)
class Loop:
    """How the loop runs, without effect on the result: rows for the initialisation sample,
    steps between log lines and between checkpoints (0: none), and the progress bar."""

    init_samples: int
    log_every: int
    checkpoint_every: int
    progress: bool


def store_ref(store: Store) -> dict[str, Any]:
    """What identifies the training store (a resumed run must see the same one)."""
    return {
        "path": str(store.path.resolve()),
        "count": store.count,
        "dim": store.dim,
        "model": store.manifest.get("model"),
        "fingerprint": store.manifest.get("fingerprint"),
    }


def lr_at(step: int, total: int, base: float) -> float:
    """Linear warm-up over min(100, 5%) of the steps, linear decay to 0 over the last 20%."""
    warm = max(1, min(100, total // 20))
    decay_start = int(total * 0.8)
    factor = min(1.0, (step + 1) / warm)
    if step >= decay_start:
        factor *= (total - step) / max(1, total - decay_start)
    return base * factor


class _LogAccumulator:
    """Means of the per-step scalars over one logging interval."""

    def __init__(self, sums: dict[str, float] | None = None, count: int = 0):
        self.sums = dict(sums or {})
        self.count = count

    def add(self, values: dict[str, float]) -> None:
        for key, v in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + v
        self.count += 1

    def pop(self) -> dict[str, float]:
        out = {key: v / max(self.count, 1) for key, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return out


def save_untrained(
    model: FeatureMap,
    store: Store,
    out: Path,
    method: str,
    center: str | None,
    seed: int,
    device: str,
) -> Path:
    """A map with nothing to fit (``trainable`` false): saved as built, with an empty log."""
    training = {"method": method, "store": store_ref(store), "center": center}
    model.save(out, extra={"training": training})
    (out / "train_log.jsonl").write_text("")
    metrics = evaluate_featuremap(model, store, seed=seed, device=device)
    write_json(out / "metrics.json", {"method": method, **metrics})
    return out


class Trainer:
    """Trains ``model`` on ``stream`` into ``out`` with the resolved ``settings``: ``fit``
    runs the whole training; ``init``/``resume``, ``step`` and ``checkpoint`` are its pieces."""

    def __init__(
        self,
        model: FeatureMap,
        stream: BatchStream,
        out: Path,
        settings: Settings,
        loop: Loop,
        *,
        ddp: Dist | None = None,
        device: str = "cpu",
    ):
        if not isinstance(model, Trainable) or not model.trainable:
            raise MonoscopeError(f"feature map '{model.kind}' has nothing to train")
        self.model, self.stream, self.out = model, stream, out
        self.settings, self.loop, self.ddp, self.device = settings, loop, ddp or Dist(), device
        if stream.batch_size % self.ddp.world:
            raise MonoscopeError(
                f"batch size {stream.batch_size} is not divisible by the {self.ddp.world} processes"
            )
        self.ckdir, self.log_path = out / "checkpoints", out / "train_log.jsonl"
        self.opt: torch.optim.Optimizer | None = None
        self.since = torch.zeros(0, dtype=torch.long)
        self.start, self.log = 0, _LogAccumulator()

    # --- the pieces ------------------------------------------------------------------------
    def init(self) -> None:
        """Start afresh: initialise the map from the first ``init_samples`` rows of epoch 0
        (rank 0's initialisation on every rank) and start an empty log."""
        sample = to_torch(self.stream.sample(self.loop.init_samples), self.device)
        self.model.init_from_data(sample, torch.Generator().manual_seed(self.settings.seed))
        self.ddp.broadcast([*self.model.parameters(), *self.model.buffers()])
        self.since = torch.zeros(self.model.n_features, dtype=torch.long, device=self.device)
        self.start, self.log = 0, _LogAccumulator()
        if self.ddp.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text("")

    def resume(self) -> bool:
        """Continue from the newest checkpoint, if there is one (settings must match)."""
        if not (self.ckdir / "latest.json").is_file():
            return False
        settings = asdict(self.settings)
        state, self.since = ckpt.load_checkpoint(
            self.ckdir, self.model, self._optimizer(), settings, self.device
        )
        self.start = state["step"]
        self.log = _LogAccumulator(state["log_sums"], state["log_count"])
        if self.ddp.rank == 0:
            ckpt.trim_log(self.log_path, self.start)
        return True

    def checkpoint(self, done: int) -> None:
        """Save the state after ``done`` steps (rank 0)."""
        state = {
            "version": ckpt.TRAIN_STATE_VERSION,
            "step": done,
            "settings": asdict(self.settings),
            "log_sums": self.log.sums,
            "log_count": self.log.count,
        }
        ckpt.save_checkpoint(self.ckdir, self.model, self._optimizer(), state, self.since)

    def step(self, step: int, batch: dict[str, torch.Tensor]) -> float:
        """One optimiser step at global step ``step`` on this rank's rows of a batch; returns
        the learning rate used."""
        model, ddp, opt = self.model, self.ddp, self._optimizer()
        dead = self.since >= self.settings.dead_window
        lr_now = lr_at(step, self.settings.steps, self.settings.lr)
        for group in opt.param_groups:
            group["lr"] = lr_now
        loss, stats, fired = model.train_loss(batch, dead, ddp.gather)
        fired = ddp.any(fired)
        if ddp.grouped:
            stats = ddp.average({"loss": loss.detach(), **stats})
            value = float(stats.pop("loss"))
        else:
            value = float(loss.detach())
        if not math.isfinite(value):
            raise MonoscopeError(
                f"training diverged: the {self.settings.method} loss is {value} at step {step}; "
                "try a lower --lr"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        ddp.average_grads(list(self.model.parameters()))
        model.constrain_grads()
        opt.step()
        model.constrain_params()
        ddp.average_in_place(self._synced_buffers())
        self.since = torch.where(fired, 0, self.since + self.stream.embeddings_per_batch)
        self.log.add({"loss": value, **{key: float(v) for key, v in stats.items()}})
        return lr_now

    # --- the run ---------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> Path:
        """Train (continuing from a checkpoint with ``resume``), save the outputs, return
        ``out``."""
        seed_everything(self.settings.seed)
        self.model.to(self.device)
        self.opt = None
        if not (resume and self.resume()):
            self.init()
        self._warn_latents()
        self.model.train()
        total = self.settings.steps
        batches = self.stream.from_step(self.start)
        bar = tqdm(
            total=total,
            initial=self.start,
            disable=not self.loop.progress or self.ddp.rank != 0,
            desc=f"train {self.settings.method}",
            unit="step",
        )
        log_target = self.log_path if self.ddp.rank == 0 else os.devnull
        with open(log_target, "ab", buffering=0) as log_file:
            for step in range(self.start, total):
                lr_now = self.step(step, to_torch(self.ddp.shard(next(batches)), self.device))
                done = step + 1
                if done % self.loop.log_every == 0 or done == total:
                    self._write_log(log_file, bar, done, lr_now)
                bar.update()
                every = self.loop.checkpoint_every
                if every and done % every == 0 and done < total and self.ddp.rank == 0:
                    self.checkpoint(done)
        bar.close()
        self.model.finalize()
        self.model.eval()
        self.ddp.first(self._save_outputs)
        return self.out

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.opt is None:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=self.settings.lr)
        return self.opt

    def _synced_buffers(self) -> list[torch.Tensor]:
        return [
            buf
            for module in self.model.modules()
            if isinstance(module, Trainable)
            for name, buf in module.named_buffers(recurse=False)
            if name in module.synced_buffers and buf.is_floating_point()
        ]

    def _dead_fraction(self) -> float:
        return float((self.since >= self.settings.dead_window).float().mean())

    def _write_log(self, log_file: Any, bar: tqdm, done: int, lr_now: float) -> None:
        per_step = self.stream.embeddings_per_batch
        record = {
            "step": done,
            "samples": done * per_step,
            "epoch": round(done / max(self.stream.steps_per_epoch, 1), 4),
            "lr": lr_now,
            **self.log.pop(),
            "dead_fraction": self._dead_fraction(),
        }
        append_line(log_file, json.dumps(record), self.log_path)
        bar.set_postfix(
            loss=f"{record['loss']:.4g}",
            l0=f"{record['l0']:.1f}",
            dead=f"{record['dead_fraction']:.2f}",
        )

    def _warn_latents(self) -> None:
        pairs = self.settings.store["count"]
        if self.ddp.rank == 0 and self.model.n_features > pairs:
            warnings.warn(
                f"{self.model.n_features} latents for {pairs} pairs: most features will see too "
                "few examples to learn or to be measured; use fewer --latents or more data",
                stacklevel=2,
            )

    def _save_outputs(self) -> None:
        s = self.settings
        training = {
            **asdict(s),
            "samples": s.steps * self.stream.embeddings_per_batch,
            "versions": versions(),
        }
        if self.ddp.world > 1:
            training["processes"] = self.ddp.world
        self.model.save(self.out, extra={"training": training})
        metrics = evaluate_featuremap(
            self.model, self.stream.store, seed=s.seed, device=self.device
        )
        dead = self._dead_fraction()
        metrics["dead_fraction"] = dead
        metrics["dead_window"] = s.dead_window
        write_json(self.out / "metrics.json", {"method": s.method, **metrics})
        shutil.rmtree(self.ckdir, ignore_errors=True)
        if dead > DEAD_WARNING:
            warnings.warn(
                f"{dead:.0%} of the {self.model.n_features} latents never fired in the last "
                f"{s.dead_window} training embeddings (dead); train longer, lower --lr or use "
                "fewer --latents",
                stacklevel=2,
            )
