"""Small shared helpers: atomic writes, JSON, seeds, devices, library versions."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import random
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


class MonoscopeError(Exception):
    """An error caused by user input; the CLI prints it as one line and exits non-zero."""


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; give outputs normal modes
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        if e.filename is None:  # e.g. a full disk inside a library's writer: name the file
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """Save an array as ``.npy`` atomically."""

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, array)

    return atomic_write(path, write)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise MonoscopeError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MonoscopeError(f"{path}: not valid JSON ({e})") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> str:
    """Map ``auto`` to ``cuda`` when available, else ``cpu``; validate explicit names."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MonoscopeError(f"--device {device}: CUDA is not available on this machine")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise MonoscopeError(f"--device {device}: expected cpu, cuda[:N], mps or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        raise MonoscopeError("--device mps: MPS is not available on this machine")
    return device


def join_process_group(backend: str) -> None:
    """Join the torch.distributed group the launcher describes (RANK, WORLD_SIZE, MASTER_*),
    once per process, and leave it in step with the other ranks at exit."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    dist.init_process_group(backend)
    atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    # Ranks that tear the group down while a peer still talks to it can abort the process
    # ('terminate called without an active exception'): meet at a barrier first. The barrier
    # is bounded, so a rank whose peer died still exits.
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    with contextlib.suppress(Exception):
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        else:
            dist.barrier()
    dist.destroy_process_group()


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape results, saved beside every output."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("monoscope", "torch", "transformers", "numpy", "safetensors"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out
