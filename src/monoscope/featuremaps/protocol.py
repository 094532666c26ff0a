"""The training protocol of a feature map: what :class:`~.trainer.Trainer` may call.

A kind that learns from data subclasses :class:`Trainable` next to
:class:`~.base.FeatureMap` (``class MyMap(Trainable, FeatureMap)``) and implements
``init_from_data`` and ``train_loss``; the constraint hooks and ``finalize`` default to nothing.
A kind with nothing to fit (``identity``) declares ``trainable = False`` (the
:class:`~.base.FeatureMap` default) and is saved as built. Wrappers (``centered``,
``per-modality``) are as trainable as what they wrap.

One step of the trainer::

    step = model.train_loss(batch, dead, gather)   # -> TrainStep(loss, stats, fired)
    step.loss.backward(); model.constrain_grads(); optimiser.step(); model.constrain_params()

and once after the last step ``model.finalize()``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import ClassVar, NamedTuple

import torch

Batch = Mapping[str, torch.Tensor]
Gather = Callable[[torch.Tensor], torch.Tensor]
DATA_MODES = ("mixed", "paired")


def no_gather(x: torch.Tensor) -> torch.Tensor:
    """The ``gather`` of a single process: the rows as they are."""
    return x


class TrainStep(NamedTuple):
    """The result of :meth:`Trainable.train_loss` on one batch."""

    loss: torch.Tensor
    """Scalar loss to minimise (with gradient)."""
    stats: dict[str, torch.Tensor]
    """Scalar statistics of the batch (``l0`` required; e.g. ``mse``, ``aux``, ``acc``), logged
    as means over each logging interval, in this order."""
    fired: torch.Tensor
    """(K,) bool: the latents that fired on the batch (the trainer's dead-latent counters)."""


class Trainable(ABC):
    """The training protocol (see the module docstring)."""

    trainable: ClassVar[bool] = True
    data_mode: ClassVar[str] = "mixed"
    """The batches ``train_loss`` takes: ``"mixed"``, ``{"x": (B, d), "is_image": (B,)}``,
    image and text embeddings shuffled together (B embeddings); ``"paired"``,
    ``{"image": (B, d), "text": (B, d)}``, row i of both one pair (B pairs)."""
    synced_buffers: ClassVar[tuple[str, ...]] = ()
    """Names of floating-point buffers that training updates from the data (BatchTopK's
    threshold); data-parallel training averages them over the processes after each step."""

    @abstractmethod
    def init_from_data(self, batch: Batch, generator: torch.Generator) -> None:
        """Initialise parameters and buffers from a sample batch (``init_samples`` rows, in the
        map's data mode); random draws use ``generator`` only."""

    @abstractmethod
    def train_loss(
        self, batch: Batch, dead: torch.Tensor | None = None, gather: Gather = no_gather
    ) -> TrainStep:
        """Loss and statistics of one batch. ``dead``: (K,) bool mask of the latents silent
        for the trainer's dead window (None: not tracked). ``gather``: under data parallelism
        this process sees a share of the global batch; ``gather`` concatenates a tensor's rows
        over the processes (gradients flow back), for losses that couple the rows of a batch
        (NCL's contrastive loss); losses that are means over rows ignore it."""

    def constrain_grads(self) -> None:  # noqa: B027  (an optional hook)
        """Adjust the gradients before the optimiser step (e.g. keep decoder norms)."""

    def constrain_params(self) -> None:  # noqa: B027
        """Project the parameters after the optimiser step (e.g. unit-norm decoder rows)."""

    def finalize(self) -> None:  # noqa: B027
        """Called once after the last step (e.g. fold decoder norms into the encoder)."""
