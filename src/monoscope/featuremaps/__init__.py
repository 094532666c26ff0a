"""Feature maps g: R^d -> R^K_{>=0} that share one contract.

Every map is a ``torch.nn.Module`` subclass of :class:`FeatureMap` with ``encode`` (non-negative
codes), ``decode`` (where a decoder exists), and ``save``/``load`` as ``config.json`` +
``model.safetensors``. New kinds register themselves in :data:`KINDS` via :func:`register`;
kinds that learn from data implement the training protocol :class:`Trainable`.
"""

from __future__ import annotations

from .base import KINDS, FeatureMap, load_featuremap, register
from .protocol import Trainable, TrainStep

__all__ = ["KINDS", "FeatureMap", "Trainable", "TrainStep", "load_featuremap", "register"]
