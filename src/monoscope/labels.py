"""Which pair labels a stage uses when none is named: discovery with one-line errors.

A store's pairs carry free-form ``labels`` (every key of the source record beside the image and
the caption). Zero-shot classification needs a label whose values are class names; the gender
study needs the label that holds its two classes. These helpers pick them so that the stages'
defaults work on any labelled data, and say which labels exist when nothing fits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ._util import MonoscopeError

# Keys that describe a record, not its content: never discovered as classes.
BOOKKEEPING = frozenset({"split", "fold", "id", "key", "url", "path", "source", "index", "shard"})
MAX_CLASSES = 1000  # more class prompts than this is not a zero-shot task any more


def _values(pairs: Sequence[dict[str, Any]]) -> dict[str, Counter[str]]:
    """Per label key (in order of first appearance): how many pairs have each value."""
    seen: dict[str, Counter[str]] = {}
    for p in pairs:
        for k, v in (p.get("labels") or {}).items():
            if v is not None and str(v) != "":
                seen.setdefault(k, Counter())[str(v)] += 1
    return seen


def present_labels(pairs: Sequence[dict[str, Any]]) -> list[str]:
    return sorted(_values(pairs))


def class_label_keys(pairs: Sequence[dict[str, Any]]) -> list[str]:
    """Label keys usable as zero-shot classes: at least 2 and at most ``MAX_CLASSES`` values,
    with on average at least two pairs per value (a label unique per pair is an id, not a
    class), excluding bookkeeping keys such as ``split``."""
    keys = []
    for k, counts in _values(pairs).items():
        n, labelled = len(counts), sum(counts.values())
        if k.lower() not in BOOKKEEPING and 2 <= n <= MAX_CLASSES and 2 * n <= labelled:
            keys.append(k)
    return keys


def one_class_label_key(pairs: Sequence[dict[str, Any]], option: str = "--label-key") -> str:
    """The single label key usable as classes; a one-line error when there is none or several."""
    keys = class_label_keys(pairs)
    if len(keys) == 1:
        return keys[0]
    if not keys:
        raise MonoscopeError(
            "no label can serve as zero-shot classes (it needs 2 to "
            f"{MAX_CLASSES} values shared by several pairs); labels present: "
            f"{present_labels(pairs) or 'none'}; add one to the pairs or pass {option}"
        )
    raise MonoscopeError(f"several labels can serve as classes ({', '.join(keys)}): pass {option}")


def key_with_values(
    pairs: Sequence[dict[str, Any]], values: Sequence[str], option: str = "--label-key"
) -> str:
    """The single label key that takes every one of ``values``; a one-line error otherwise."""
    keys = [k for k, counts in _values(pairs).items() if all(v in counts for v in values)]
    if len(keys) == 1:
        return keys[0]
    wanted = " and ".join(repr(v) for v in values)
    if not keys:
        raise MonoscopeError(
            f"no label takes the values {wanted}; labels present: "
            f"{present_labels(pairs) or 'none'}; pass {option} (and the values)"
        )
    raise MonoscopeError(
        f"several labels take the values {wanted} ({', '.join(keys)}): pass {option}"
    )
