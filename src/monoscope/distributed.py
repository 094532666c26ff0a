"""Data parallelism over a torch.distributed group, shared by ``embed`` and ``train``.

:class:`Dist` is the context of one process: its rank, the number of processes (``world``),
and whether it belongs to a process group (``grouped``); without one every collective is a
no-op, so single-process code runs through the same calls. The launcher (torchrun) describes
the group in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._util import MonoscopeError, join_process_group, resolve_device


class Dist:
    """One process's view of the group (see the module docstring)."""

    def __init__(self, rank: int = 0, world: int = 1, grouped: bool | None = None):
        self.rank, self.world = rank, world
        self.grouped = world > 1 if grouped is None else grouped

    @classmethod
    def join(cls, device: str) -> tuple[Dist, str]:
        """(context, device) for training: joins an NCCL (CUDA) or gloo group when WORLD_SIZE
        > 1 or when torchrun started the process (TORCHELASTIC_RUN_ID), so that a single-GPU
        run goes through the same collectives as a multi-GPU one; under a group, ``auto`` and
        ``cuda`` mean this process's GPU (LOCAL_RANK)."""
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

    @classmethod
    def join_gloo(cls) -> Dist:
        """The context of a process that only needs barriers (embedding): joins a gloo group
        when WORLD_SIZE > 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        join_process_group("gloo")
        return cls(dist.get_rank(), world)

    def barrier(self) -> None:
        if self.grouped:
            import torch.distributed as dist

            dist.barrier()

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
        """This rank's rows ``rank::world`` of a global batch."""
        if self.world == 1:
            return batch
        return {key: v[self.rank :: self.world] for key, v in batch.items()}

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's rows of ``x`` concatenated in rank order, with gradient (see
        :class:`_AllGather`); ``x`` itself for a single process."""
        if self.world == 1:
            return x
        return _AllGather.apply(x, self.rank, self.world)

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        dist.all_reduce(t)
        return t

    def broadcast(self, tensors: list[torch.Tensor]) -> None:
        """Rank 0's values of ``tensors`` on every rank."""
        if self.grouped:
            import torch.distributed as dist

            with torch.no_grad():
                for t in tensors:
                    dist.broadcast(t.data, src=0)

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Mean of the ranks' gradients (each already the mean over its equal sub-batch); a
        parameter without a gradient on some ranks (no rows of its modality) counts zero
        there, and has none after only if it had none on every rank."""
        if not self.grouped:
            return
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

    def average(self, values: dict[str, Any]) -> dict[str, Any]:
        """Means over the ranks of scalar values (one all-reduce)."""
        if not self.grouped:
            return values
        stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in values.values()])
        device = next(v.device for v in values.values() if isinstance(v, torch.Tensor))
        mean = self._sum(stacked.to(device)).div_(self.world).cpu()
        return dict(zip(values, mean, strict=True))

    def average_in_place(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor by its mean over the ranks."""
        if self.grouped:
            for t in tensors:
                self._sum(t).div_(self.world)

    def any(self, mask: torch.Tensor) -> torch.Tensor:
        """A boolean mask true where it is true on any rank."""
        if not self.grouped:
            return mask
        return self._sum(mask.to(torch.int32)) > 0


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
