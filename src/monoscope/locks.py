"""One writer per output: an exclusive ``fcntl.flock`` on ``DIR/.monoscope.lock`` (a file output
``F``: ``.F.lock`` beside it), held for a command's lifetime. The lock file names the holder's
PID and command line; a second writer stops at once with one line naming them, and a reader of
a directory that is being written says so (docs/integrity.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from ._util import MonoscopeError

F = TypeVar("F", bound=Callable[..., Any])

LOCK_NAME = ".monoscope.lock"
_HELD: dict[Path, int] = {}  # lock files this process holds -> fd


def lock_file_of(target: Path, is_file: bool = False) -> Path:
    """The lock file guarding output ``target`` (a directory, or a file when ``is_file``)."""
    return target.parent / f".{target.name}.lock" if is_file else target / LOCK_NAME


@contextlib.contextmanager
def output_lock(target: str | Path | None, is_file: bool = False) -> Iterator[None]:
    """Hold the exclusive lock on output ``target`` for the ``with`` block (None: no-op).

    Raises :class:`MonoscopeError` naming the holder when another process writes ``target``.
    """
    if target is None:
        yield
        return
    lock = lock_file_of(Path(target), is_file)
    lock.parent.mkdir(parents=True, exist_ok=True)
    key = lock.resolve()
    if key in _HELD:  # re-entrant within one process (a command calling another stage)
        yield
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise MonoscopeError(
            f"{target}: another monoscope process is writing it ({holder}); wait for it to "
            "finish or choose another --out"
        ) from None
    except OSError as e:  # a file system without flock (some network mounts): go on unlocked
        os.close(fd)
        print(f"monoscope: warning: {lock}: cannot lock ({e.strerror}); not guarded against a "
              "second writer", file=sys.stderr)  # fmt: skip
        yield
        return
    try:
        info = {
            "pid": os.getpid(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        _HELD[key] = fd
        yield
    finally:
        _HELD.pop(key, None)
        os.close(fd)  # releases the lock; the file stays (removing it would race a new holder)


def writer_of(directory: Path) -> str | None:
    """``PID N (command)`` of another process writing ``directory`` now, else None."""
    lock = directory / LOCK_NAME
    if not lock.is_file() or lock.resolve() in _HELD:
        return None
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)  # also drops the shared lock
    return None


def refuse_if_being_written(directory: Path, what: str) -> None:
    """Raise when another process is writing ``directory`` (a ``what``) right now."""
    holder = writer_of(directory)
    if holder:
        raise MonoscopeError(
            f"{directory}: the {what} is still being written ({holder}); wait for it to finish"
        )


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"PID {info['pid']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "PID unknown"


def locked(param: str = "out", is_file: bool = False) -> Callable[[F], F]:
    """Decorator: hold the lock on the output named by argument ``param`` while the function
    runs (re-entrant, so the CLI's own lock on the same output is shared). Data-parallel ranks
    other than 0 write into rank 0's directory and do not lock."""

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            out = sig.bind(*args, **kwargs).arguments.get(param)
            if os.environ.get("RANK", "0") != "0":
                out = None
            with output_lock(out, is_file):
                return fn(*args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap
