"""Automatic feature names from the captions of a feature's top samples.

A feature is named by the words shared by most of its top captions (in the dominant
modality: images for ImgD, texts for TextD, both for CrossD), e.g. "firefighter" or "dark skin
tone"; when no word is shared widely enough, by its medoid caption: the top caption whose
text embedding is closest on average to the others'.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import torch

from ..store import Store
from .monosemanticity import unit_rows

_WORD = re.compile(r"[a-z0-9][a-z0-9'&-]*")
_STOP = set(["a", "an", "the", "of", "and", "or", "with", "in", "on", "at", "by", "for", "to"])


def shared_words(captions: list[str], min_share: float = 0.6, max_words: int = 4) -> str:
    """Words (not stop words) present in at least ``min_share`` of the captions, in the order
    they first appear; at most ``max_words``."""
    tokens = [_WORD.findall(c.lower()) for c in captions]
    df = Counter(w for words in tokens for w in set(words) if w not in _STOP)
    keep = {w for w, n in df.items() if n >= min_share * len(captions)}
    ordered = list(dict.fromkeys(w for words in tokens for w in words if w in keep))
    return " ".join(ordered[:max_words])


def feature_names(
    store: Store,
    top_img: np.ndarray,
    top_txt: np.ndarray,
    groups: np.ndarray,
    m: int = 10,
    chunk: int = 512,
) -> np.ndarray:
    """(K,) names: shared words of the top-m captions in the dominant modality, or the medoid."""
    half = m // 2
    rows = np.where(
        (groups == "ImgD")[:, None],
        top_img[:, :m],
        np.where(
            (groups == "TextD")[:, None],
            top_txt[:, :m],
            np.concatenate([top_img[:, :half], top_txt[:, : m - half]], axis=1),
        ),
    )
    valid = (rows >= 0) & (groups != "dead")[:, None]
    medoid = np.full(len(groups), -1)
    for lo in range(0, len(rows), chunk):
        e = unit_rows(store.rows("text", rows[lo : lo + chunk]))
        v = torch.as_tensor(valid[lo : lo + chunk], dtype=torch.float32)
        closeness = (torch.bmm(e, e.transpose(1, 2)) * v[:, None, :]).sum(2)
        medoid[lo : lo + chunk] = closeness.masked_fill(v == 0, -torch.inf).argmax(1).numpy()
    captions = [p["caption"] for p in store.pairs()]
    names = []
    for k in range(len(groups)):
        texts = [captions[r] for r in rows[k][valid[k]]]
        names.append((shared_words(texts) or captions[rows[k, medoid[k]]]) if texts else "")
    return np.array(names, dtype=str)
