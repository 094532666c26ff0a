"""argparse ``type=`` validators: a bad option value is a one-line usage error at parse time
(argparse prints ``argument --x: ...`` and exits 2), never a traceback or a silent nonsense run.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

DTYPES = ("auto", "fp32", "float32", "fp16", "float16", "half", "bf16", "bfloat16")
SEED_MAX = 2**32 - 1  # numpy's legacy seeding takes 32 bits; torch and default_rng take more


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An int in [low, high]."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < low or (high is not None and v > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{v} must be {bounds}")
        return v

    parse.__name__ = "integer"
    return parse


def number(
    low: float, *, strict: bool = False, high: float | None = None, strict_high: bool = False
) -> Callable[[str], float]:
    """A finite float >= low (> low when ``strict``), <= high when given (< high when
    ``strict_high``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        above = v > low or (not strict and v == low)
        below = high is None or v < high or (not strict_high and v == high)
        if not (above and below):
            bound = f"{'>' if strict else '>='} {low:g}"
            if high is not None:
                bound += f" and {'<' if strict_high else '<='} {high:g}"
            raise argparse.ArgumentTypeError(f"{v:g} must be {bound}")
        return v

    parse.__name__ = "number"
    return parse


positive = integer(1)
non_negative = integer(0)
seed = integer(0, SEED_MAX)
positive_float = number(0.0, strict=True)
non_negative_float = number(0.0)
finite_float = number(-math.inf)
unit_interval = number(0.0, high=1.0)  # an MDS threshold
open_unit = number(0.0, strict=True, high=1.0, strict_high=True)  # a rate such as an FDR
open_half = number(0.0, strict=True, high=0.5, strict_high=True)  # a tail share, an effect


def device(text: str) -> str:
    """auto, cpu, mps, cuda or cuda:N (availability is checked when the device is used)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected cpu, cuda[:N], mps or auto")
    return text


def dtype(text: str) -> str:
    if text.lower() not in DTYPES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected one of {', '.join(DTYPES)}")
    return text.lower()


def template(text: str) -> str:
    """A class-prompt template with exactly one ``{}`` slot."""
    if text.count("{}") != 1:
        raise argparse.ArgumentTypeError(f"{text!r} must contain exactly one {{}}")
    try:
        text.format("x")
    except (IndexError, KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r}: only one {{}} slot is allowed") from None
    return text
