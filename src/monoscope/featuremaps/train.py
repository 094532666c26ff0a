"""Train a feature map on an embedding store: ``train_featuremap(store, method, out)``.

Data are streamed from the memory-mapped shards: every epoch visits the shards in a seeded
random order, loads a buffer of shards (at least ``buffer_pairs`` pairs), shuffles it and cuts
batches; the leftover rows of a buffer join the next one and the last partial batch of an epoch
is dropped. SAEs see image and text embeddings mixed (one shared dictionary; ``per_modality``
trains one SAE per modality on the same batches); NCL sees pairs. The order of epoch e is a
function of (seed, e) only, so a run resumed from a checkpoint replays exactly the same batches.

The output directory holds the feature map (``config.json`` + ``model.safetensors``),
``train_log.jsonl`` (one line per logging interval: step, samples, epoch, lr and means of loss,
mse, l0, ...; ``dead_fraction`` at the interval's end) and ``metrics.json``
(:func:`monoscope.featuremaps.metrics.evaluate_featuremap` plus the training dead fraction).
While training, ``checkpoints/step-NNNNNNNN/`` holds the map in the same format plus
``optimizer.safetensors`` (Adam moments, RNG state, dead-latent counters) and
``trainer_state.json`` (scalars); ``checkpoints/latest.json`` names the newest complete one.

Data-parallel training: under torchrun (``WORLD_SIZE`` > 1) the processes join a process group
(NCCL on CUDA, gloo on CPU). Every rank builds the same seeded stream of global batches and
trains on rows ``rank::world`` of each; the parameter gradients are summed over the ranks and
divided by ``world`` (so the global batch size stays ``batch_size``, which must be divisible by
the number of processes), the dead-latent counters see the latents that fired on any rank, and
BatchTopK's threshold estimate is averaged. NCL's contrastive loss couples the rows of a batch,
so its pre-activations are gathered (with gradient) and every rank evaluates the global-batch
loss. The initialisation is broadcast from rank 0, and only rank 0 writes the outputs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from .._util import (
    MonoscopeError,
    join_process_group,
    read_json,
    resolve_device,
    seed_everything,
    versions,
    write_json,
    write_text,
)
from ..integrity import append_line, check_finished, save_safetensors
from ..locks import locked
from ..outputs import prepare_out
from ..store import Store
from .base import KINDS, FeatureMap
from .center import center_featuremap
from .identity import IdentityMap
from .metrics import evaluate_featuremap
from .ncl import NCLMap  # noqa: F401  (registers the "ncl" kind)
from .sae import SAE_KINDS, PerModalityMap

METHODS = ("identity", *SAE_KINDS, "ncl")
DEFAULT_STEPS = 2000
TRAIN_STATE_VERSION = 1
_OUTPUTS = ("config.json", "model.safetensors", "train_log.jsonl", "metrics.json")


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


class _Stream:
    """Seeded, shard-buffered batches of a store (see the module docstring)."""

    def __init__(self, store: Store, mode: str, batch_size: int, seed: int, buffer_pairs: int):
        self.store, self.mode, self.seed, self.buffer_pairs = store, mode, seed, buffer_pairs
        self.counts = [int(s["count"]) for s in store.manifest["shards"]]
        self.samples_per_epoch = sum(self.counts) * (2 if mode == "mixed" else 1)
        self.batch_size = min(batch_size, self.samples_per_epoch)
        self.steps_per_epoch = self.samples_per_epoch // max(self.batch_size, 1)

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


_SYNCED_BUFFERS = ("threshold",)  # training-time statistics averaged over the ranks


class _Dist:
    """Data parallelism over a torch.distributed group; without one (``grouped`` false): a
    no-op. A run under torchrun is grouped even with one process, so that a single-GPU run
    goes through the same collectives (NCCL or gloo) as a multi-GPU one."""

    def __init__(self, rank: int = 0, world: int = 1, grouped: bool | None = None):
        self.rank, self.world = rank, world
        self.grouped = world > 1 if grouped is None else grouped

    @classmethod
    def join(cls, device: str) -> tuple[_Dist, str]:
        """(context, device) from the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK,
        MASTER_ADDR, MASTER_PORT); joins an NCCL (CUDA) or gloo group when WORLD_SIZE > 1 or
        when torchrun started the process (TORCHELASTIC_RUN_ID)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
            return cls(), resolve_device(device)
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
        if device in ("auto", "cuda") and torch.cuda.is_available():
            device = f"cuda:{local}"
        device = resolve_device(device)
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        join_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), grouped=True), device

    def first(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 only; every rank returns its result (or raises its error)."""
        if not self.grouped:
            return fn()
        import torch.distributed as dist

        box: list[Any] = [None, None]
        if self.rank == 0:
            try:
                box[0] = fn()
            except Exception as e:
                box[1] = str(e)
                dist.broadcast_object_list(box, src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        if box[1] is not None:
            raise MonoscopeError(f"rank 0 failed: {box[1]}")
        return box[0]

    def shard(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This rank's rows of a global batch."""
        if self.world == 1:
            return batch
        return {key: v[self.rank :: self.world] for key, v in batch.items()}

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        dist.all_reduce(t)
        return t

    def broadcast_state(self, model: FeatureMap) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if self.grouped:
            import torch.distributed as dist

            with torch.no_grad():
                for t in [*model.parameters(), *model.buffers()]:
                    dist.broadcast(t.data, src=0)

    def average_grads(self, model: FeatureMap) -> None:
        """Mean of the ranks' gradients (each already the mean over its equal sub-batch)."""
        if not self.grouped:
            return
        # a parameter may have no gradient on some ranks (per_modality: no rows of a modality)
        params = list(model.parameters())
        parts = [
            p.grad.reshape(-1) if p.grad is not None else p.new_zeros(p.numel()) for p in params
        ]
        parts.append(
            torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
        )
        flat = self._sum(torch.cat(parts))
        has_grad = flat[-len(params) :] > 0
        offset = 0
        for p, present in zip(params, has_grad.tolist(), strict=True):
            g = flat[offset : offset + p.numel()].view_as(p).div_(self.world)
            p.grad = g.clone() if present else None
            offset += p.numel()

    def average_stats(self, values: dict[str, Any]) -> dict[str, Any]:
        """Means over the ranks of the scalar step statistics."""
        if not self.grouped:
            return values
        stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in values.values()])
        device = next(v.device for v in values.values() if isinstance(v, torch.Tensor))
        mean = self._sum(stacked.to(device)).div_(self.world).cpu()
        return dict(zip(values, mean, strict=True))

    def any(self, fired: torch.Tensor) -> torch.Tensor:
        """Latents that fired on any rank."""
        if not self.grouped:
            return fired
        return self._sum(fired.to(torch.int32)) > 0

    def average_buffers(self, model: FeatureMap) -> None:
        """Average the training-time statistics (BatchTopK's threshold) over the ranks."""
        if not self.grouped:
            return
        for name, buf in model.named_buffers():
            if name.rsplit(".", 1)[-1] in _SYNCED_BUFFERS and buf.is_floating_point():
                self._sum(buf).div_(self.world)

    def barrier(self) -> None:
        if self.grouped:
            import torch.distributed as dist

            dist.barrier()


class _AllGather(torch.autograd.Function):
    """Concatenation of every rank's (B_r, ...) tensor along dim 0; the gradient of this rank's
    rows is the sum over the ranks of their gradients of them."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = (rank * x.shape[0], (rank + 1) * x.shape[0])
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        import torch.distributed as dist

        g = g.contiguous().clone()
        dist.all_reduce(g)
        lo, hi = ctx.rows
        return g[lo:hi], None, None


class _GatheredPreActs:
    """NCL under data parallelism: ``model.pre_acts`` returns the pre-activations of the global
    batch (gathered from all ranks, gradients flowing back to each rank's rows), so that the
    contrastive loss sees every pair; each rank then gets ``world`` times its share of the
    global gradient, which :meth:`_Dist.average_grads` turns back into the global gradient."""

    def __init__(self, model: FeatureMap, ddp: _Dist, active: bool):
        self.model, self.ddp, self.active = model, ddp, active

    def __enter__(self) -> None:
        if self.active:
            local = self.model.pre_acts

            def pre_acts(x: torch.Tensor, modality: str) -> torch.Tensor:
                return _AllGather.apply(local(x, modality), self.ddp.rank, self.ddp.world)

            self.model.pre_acts = pre_acts

    def __exit__(self, *exc: object) -> None:
        if self.active:
            del self.model.pre_acts


def _to_torch(batch: dict[str, np.ndarray], device: str) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


def _lr_at(step: int, total: int, base: float) -> float:
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


def _save_checkpoint(
    ckdir: Path,
    model: FeatureMap,
    opt: torch.optim.Optimizer,
    state: dict[str, Any],
    since: torch.Tensor,
) -> None:
    step_dir = ckdir / f"step-{state['step']:08d}"
    model.save(step_dir, extra={"training": state["settings"]})
    sd = opt.state_dict()
    tensors = {
        f"optim.{i}.{key}": v.detach().cpu().contiguous()
        for i, st in sd["state"].items()
        for key, v in st.items()
    }
    tensors["torch_rng"] = torch.get_rng_state()
    tensors["since"] = since.cpu()
    save_safetensors(step_dir / "optimizer.safetensors", tensors)
    write_json(step_dir / "trainer_state.json", {**state, "param_groups": sd["param_groups"]})
    write_json(ckdir / "latest.json", {"step": state["step"], "dir": step_dir.name})
    for old in ckdir.glob("step-*"):
        if old != step_dir:
            shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(
    ckdir: Path,
    model: FeatureMap,
    opt: torch.optim.Optimizer,
    settings: dict[str, Any],
    device: str,
) -> tuple[dict[str, Any], torch.Tensor]:
    step_dir = ckdir / read_json(ckdir / "latest.json")["dir"]
    state = read_json(step_dir / "trainer_state.json")
    for key, value in settings.items():
        if json.loads(json.dumps(state["settings"].get(key))) != json.loads(json.dumps(value)):
            if key == "store":
                raise MonoscopeError(
                    f"{ckdir.parent}: cannot resume: the store changed since the interrupted run "
                    "(another path, count or fingerprint: re-embedded?); start over with "
                    "--overwrite"
                )
            raise MonoscopeError(
                f"{ckdir.parent}: cannot resume: '{key}' differs from the interrupted run "
                f"({state['settings'].get(key)!r} != {value!r})"
            )
    model.load_state_dict(load_file(str(step_dir / "model.safetensors"), device=device))
    tensors = load_file(str(step_dir / "optimizer.safetensors"))
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, i, key = name.split(".", 2)
            opt_state.setdefault(int(i), {})[key] = v.to(device) if v.dim() else v
    opt.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    torch.set_rng_state(tensors["torch_rng"])
    return state, tensors["since"].to(device)


def _log_step(line: str) -> float:
    """The step of a train_log.jsonl line; inf for a torn or blank line (dropped on resume)."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _prepare_out(out: Path, resume: bool, overwrite: bool) -> bool:
    """Check/clean the output directory; True if it already holds a finished run to keep."""
    prepare_out(out, "featuremap", overwrite)
    finished = (out / "config.json").is_file() and (out / "metrics.json").is_file()
    if overwrite:
        for name in _OUTPUTS:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        return False
    if finished:
        if resume:
            return True
        raise MonoscopeError(f"{out}: a trained feature map is already there; pass --overwrite")
    if (out / "checkpoints" / "latest.json").is_file() and not resume:
        raise MonoscopeError(
            f"{out}: holds an interrupted run; pass --resume to continue it or --overwrite"
        )
    return False


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
    out = Path(out)
    if not isinstance(store, Store):
        store = Store(store)
    if store.count == 0:
        raise MonoscopeError(f"{store.path}: the store is empty")
    if steps is not None and epochs is not None:
        raise MonoscopeError("give epochs or steps, not both")
    ddp, device = _Dist.join(device)
    model = build_featuremap(
        method, store.dim, latents=latents, k=k, l1=l1, per_modality=per_modality, **method_kwargs
    )
    model = center_featuremap(model, store, center)
    if ddp.first(lambda: _prepare_out(out, resume, overwrite)):
        check_finished(out, method, model.hparams(), store)
        return out
    store_ref = {
        "path": str(store.path.resolve()),
        "count": store.count,
        "dim": store.dim,
        "model": store.manifest.get("model"),
        "fingerprint": store.manifest.get("fingerprint"),
    }
    if isinstance(getattr(model, "inner", model), IdentityMap):

        def save_identity() -> None:
            training = {"method": method, "store": store_ref, "center": center}
            model.save(out, extra={"training": training})
            (out / "train_log.jsonl").write_text("")
            metrics = evaluate_featuremap(model, store, seed=seed, device=device)
            write_json(out / "metrics.json", {"method": method, **metrics})

        ddp.first(save_identity)
        return out

    mode = getattr(model, "data_mode", "mixed")  # "mixed" embeddings (SAEs), "paired" (NCL)
    stream = _Stream(store, mode, batch_size, seed, buffer_pairs)
    if stream.batch_size % ddp.world:
        raise MonoscopeError(
            f"batch size {stream.batch_size} is not divisible by the {ddp.world} processes"
        )
    if stream.batch_size < batch_size and ddp.rank == 0:
        tqdm.write(f"batch size {batch_size} exceeds the data; using {stream.batch_size}")
    spe = stream.steps_per_epoch
    if steps is not None:
        total = int(steps)
    elif epochs is not None:
        total = math.ceil(epochs * spe)
    else:
        total = max(spe, DEFAULT_STEPS)
    if total < 1:
        raise MonoscopeError("nothing to train: steps/epochs must be positive")
    per_step = stream.batch_size * (2 if mode == "paired" else 1)
    window = dead_window or min(2**20, stream.samples_per_epoch)
    settings = {
        "method": method,
        "store": store_ref,
        "seed": seed,
        "steps": total,
        "batch_size": stream.batch_size,
        "lr": lr if lr is not None else default_lr(method, store.dim),
        "per_modality": per_modality,
        "dead_window": window,
        "buffer_pairs": buffer_pairs,
        "data": mode,
        "hparams": model.hparams(),
        "center": center,
    }
    base_lr = settings["lr"]
    log_every = log_every or max(1, min(100, total // 100))

    seed_everything(seed)
    model.to(device)
    ckdir = out / "checkpoints"
    log_path = out / "train_log.jsonl"
    opt = torch.optim.Adam(model.parameters(), lr=base_lr)
    if resume and (ckdir / "latest.json").is_file():
        state, since = _load_checkpoint(ckdir, model, opt, settings, device)
        start = state["step"]
        log = _LogAccumulator(state["log_sums"], state["log_count"])
        if ddp.rank == 0:
            lines = log_path.read_text().splitlines() if log_path.exists() else []
            kept = [ln for ln in lines if _log_step(ln) <= start]
            write_text(log_path, "".join(ln + "\n" for ln in kept))
    else:
        init = []
        for batch in stream.epoch(0):
            init.append(batch)
            if len(init) * stream.batch_size >= init_samples:
                break
        sample = {key: np.concatenate([b[key] for b in init]) for key in init[0]}
        model.init_from_data(_to_torch(sample, device), torch.Generator().manual_seed(seed))
        ddp.broadcast_state(model)
        since = torch.zeros(model.n_features, dtype=torch.long, device=device)
        start, log = 0, _LogAccumulator()
        if ddp.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            log_path.write_text("")

    model.train()
    batches = stream.from_step(start)
    bar = tqdm(
        total=total,
        initial=start,
        disable=not progress or ddp.rank != 0,
        desc=f"train {method}",
        unit="step",
    )
    gathered = _GatheredPreActs(model, ddp, ddp.world > 1 and mode == "paired")
    log_target = log_path if ddp.rank == 0 else os.devnull
    with open(log_target, "ab", buffering=0) as log_file:
        for step in range(start, total):
            batch = _to_torch(ddp.shard(next(batches)), device)
            lr_now = _lr_at(step, total, base_lr)
            for group in opt.param_groups:
                group["lr"] = lr_now
            with gathered:
                loss, stats = model.train_loss(batch, since >= window)
            fired = ddp.any(stats.pop("fired"))
            if ddp.grouped:
                stats = ddp.average_stats({"loss": loss.detach(), **stats})
                value = float(stats.pop("loss"))
            else:
                value = float(loss.detach())
            if not math.isfinite(value):
                raise MonoscopeError(
                    f"training diverged: the {method} loss is {value} at step {step}; "
                    "try a lower --lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            ddp.average_grads(model)
            model.constrain_grads()
            opt.step()
            model.constrain_params()
            ddp.average_buffers(model)
            since = torch.where(fired, 0, since + per_step)
            log.add({"loss": value, **{key: float(v) for key, v in stats.items()}})
            done = step + 1
            if done % log_every == 0 or done == total:
                record = {
                    "step": done,
                    "samples": done * per_step,
                    "epoch": round(done / max(spe, 1), 4),
                    "lr": lr_now,
                    **log.pop(),
                    "dead_fraction": float((since >= window).float().mean()),
                }
                append_line(log_file, json.dumps(record), log_path)
                bar.set_postfix(
                    loss=f"{record['loss']:.4g}",
                    l0=f"{record['l0']:.1f}",
                    dead=f"{record['dead_fraction']:.2f}",
                )
            bar.update()
            if checkpoint_every and done % checkpoint_every == 0 and done < total and ddp.rank == 0:
                state = {
                    "version": TRAIN_STATE_VERSION,
                    "step": done,
                    "settings": settings,
                    "log_sums": log.sums,
                    "log_count": log.count,
                }
                _save_checkpoint(ckdir, model, opt, state, since)
    bar.close()

    model.finalize()
    model.eval()
    dead = since >= window

    def save_outputs() -> None:
        training = {**settings, "samples": total * per_step, "versions": versions()}
        if ddp.world > 1:
            training["processes"] = ddp.world
        model.save(out, extra={"training": training})
        metrics = evaluate_featuremap(model, store, seed=seed, device=device)
        metrics["dead_fraction"] = float(dead.float().mean())
        metrics["dead_window"] = window
        write_json(out / "metrics.json", {"method": method, **metrics})
        shutil.rmtree(ckdir, ignore_errors=True)

    ddp.first(save_outputs)
    return out
