"""One CPU thread for torch's small operations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block. The sparse bookkeeping is a series of
    small operations (~10^5 entries each); on oversubscribed cores their parallel versions wait
    for a descheduled thread and take 10-100x longer, as the sort of
    :meth:`monoscope.featuremaps.sparse.ActiveSet.by_latent` does (benchmarks/README.md)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
