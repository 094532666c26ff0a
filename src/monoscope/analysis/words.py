"""What drives text-side features: word occlusion on top captions, aggregated per group, and a
word-class breakdown (METHOD.md §7).

For each of the strongest TextD and CrossD features, every word of each of its top captions is
removed in turn, the caption re-embedded and re-encoded, and the relative drop of the feature's
activation recorded. Word classes come from spaCy's ``en_core_web_sm`` when it is installed and
otherwise from a small built-in lexicon (reported as ``"tagger": "lexicon"``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._util import write_json
from ..encoders import DualEncoder
from ..featuremaps import FeatureMap
from ..store import Store
from .analyze import read_feature_table

WORD = re.compile(r"[A-Za-z0-9'&-]+")
CLASSES = ("noun", "adjective", "verb", "spatial", "other")

_SPATIAL = set(
    [
        "left",
        "right",
        "up",
        "down",
        "above",
        "below",
        "under",
        "over",
        "on",
        "in",
        "inside",
        "outside",
        "out",
        "into",
        "onto",
        "top",
        "bottom",
        "front",
        "back",
        "behind",
        "beside",
        "between",
        "near",
        "far",
        "upward",
        "downward",
        "upwards",
        "downwards",
        "forward",
        "backward",
        "around",
        "through",
        "across",
        "along",
        "north",
        "south",
        "east",
        "west",
        "facing",
        "pointing",
        "clockwise",
        "anticlockwise",
        "counterclockwise",
        "upside",
        "sideways",
        "vertical",
        "horizontal",
    ]
)
_ADJECTIVES = set(
    [
        "red",
        "orange",
        "yellow",
        "green",
        "blue",
        "purple",
        "brown",
        "black",
        "white",
        "grey",
        "gray",
        "pink",
        "light",
        "dark",
        "medium",
        "big",
        "small",
        "large",
        "little",
        "tiny",
        "huge",
        "old",
        "new",
        "young",
        "happy",
        "sad",
        "angry",
        "smiling",
        "grinning",
        "crying",
        "open",
        "closed",
        "heavy",
        "full",
        "empty",
        "hot",
        "cold",
        "wet",
        "dry",
        "high",
        "low",
        "long",
        "short",
        "round",
        "square",
        "flat",
        "curly",
        "bald",
        "blond",
        "white-haired",
        "red-haired",
        "raised",
        "folded",
        "crossed",
        "fast",
        "slow",
        "loud",
        "quiet",
        "male",
        "female",
        "neutral",
        "upside-down",
        "hollow",
        "shiny",
        "sparkling",
        "broken",
        "mixed",
    ]
)
_VERBS = set(
    [
        "running",
        "walking",
        "swimming",
        "surfing",
        "rowing",
        "biking",
        "bouncing",
        "lifting",
        "climbing",
        "juggling",
        "playing",
        "cooking",
        "kissing",
        "holding",
        "hugging",
        "dancing",
        "fencing",
        "golfing",
        "juggling",
        "lifting",
        "frowning",
        "pouting",
        "winking",
        "thinking",
        "shushing",
        "yawning",
        "sleeping",
        "saluting",
        "tipping",
        "gesturing",
        "bowing",
        "facepalming",
        "shrugging",
        "raising",
        "waving",
        "writing",
        "taking",
        "getting",
        "standing",
        "kneeling",
        "sitting",
        "lying",
        "pointing",
        "melting",
        "peeking",
        "shaking",
    ]
)
_STOP = set(["a", "an", "the", "of", "with", "and", "or", "in", "on", "at", "by", "for", "to"])


def lexicon_class(word: str) -> str:
    """The word class of ``word`` from the built-in lexicon (a heuristic fallback)."""
    w = word.lower()
    if w in _SPATIAL:
        return "spatial"
    if w in _ADJECTIVES:
        return "adjective"
    if w in _VERBS or (w.endswith("ing") and len(w) > 5):
        return "verb"
    if w in _STOP or w.isdigit():
        return "other"
    return "noun"


def _tagger():
    """spaCy's small English model if installed, else None."""
    try:
        import spacy

        return spacy.load("en_core_web_sm", disable=["parser", "ner", "lemmatizer"])
    except (ImportError, OSError):
        return None


_SPACY_MAP = {
    "NOUN": "noun",
    "PROPN": "noun",
    "ADJ": "adjective",
    "VERB": "verb",
    "ADP": "spatial",
    "ADV": "spatial",
}


def word_classes(words: Sequence[str]) -> tuple[dict[str, str], str]:
    """Class of each distinct word and the tagger used (``spacy`` or ``lexicon``).

    With spaCy, adpositions and adverbs count as spatial only when the lexicon lists them as
    spatial; otherwise they are ``other``.
    """
    nlp = _tagger()
    if nlp is None:
        return {w: lexicon_class(w) for w in words}, "lexicon"
    out = {}
    for w, doc in zip(words, nlp.pipe(words), strict=True):
        cls = _SPACY_MAP.get(doc[0].pos_, "other") if len(doc) else "other"
        if cls == "spatial" and w.lower() not in _SPATIAL:
            cls = "other"
        out[w] = cls
    return out, "spacy"


def occlusions(caption: str) -> list[tuple[str, str]]:
    """(word, caption without that word) for every word of ``caption``."""
    spans = [m.span() for m in WORD.finditer(caption)]
    out = []
    for lo, hi in spans:
        rest = (caption[:lo] + caption[hi:]).replace("  ", " ").strip(" :,")
        out.append((caption[lo:hi].lower(), rest))
    return out


def word_drivers(
    store: Store,
    fmap: FeatureMap,
    analysis: str | Path,
    encoder: DualEncoder,
    *,
    groups: Sequence[str] = ("TextD", "CrossD"),
    top_features: int = 24,
    captions_per_feature: int = 10,
    batch_size: int = 256,
    device: str = "cpu",
) -> Path:
    """Occlusion analysis of the strongest text-active features; writes ``analysis/words.json``."""
    analysis = Path(analysis)
    table = read_feature_table(analysis / "features.csv")
    top_idx = np.load(analysis / "top" / "text_idx.npy")
    pairs = store.pairs()
    normalize = bool(store.manifest.get("normalized"))
    jobs: list[tuple[str, int, str, int, int]] = []  # (group, feature, word, variant, original)
    texts: list[str] = []
    for g in groups:
        members = np.flatnonzero(table["group"] == g)
        strongest = members[np.argsort(-table["mu_txt"][members])][:top_features]
        for k in strongest:
            for row in top_idx[k, :captions_per_feature]:
                if row < 0:
                    continue
                original = len(texts)
                texts.append(pairs[row]["caption"])
                for word, rest in occlusions(texts[original]):
                    if rest:
                        jobs.append((g, int(k), word, len(texts), original))
                        texts.append(rest)
    acts = _text_activations(encoder, fmap, texts, normalize, batch_size, device)
    per_feature: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    per_group: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for g, k, word, variant, original in jobs:
        base = acts[original, k]
        if base <= 0:
            continue
        drop = float((base - acts[variant, k]) / base)
        per_feature[k][word].append(drop)
        per_group[g][word].append(drop)
    vocabulary = sorted({w for words in per_group.values() for w in words})
    classes, tagger = word_classes(vocabulary)
    result: dict[str, Any] = {"tagger": tagger, "groups": {}, "features": {}, "word_classes": {}}
    for g, words in per_group.items():
        ranked = sorted(
            ((w, float(np.mean(d)), len(d)) for w, d in words.items()),
            key=lambda t: -t[1] * np.sqrt(t[2]),
        )
        result["groups"][g] = [
            {"word": w, "mean_drop": d, "n": n, "class": classes[w]} for w, d, n in ranked[:30]
        ]
        mass: defaultdict[str, float] = defaultdict(float)
        for w, d in words.items():
            mass[classes[w]] += max(float(np.sum(d)), 0.0)
        total = sum(mass.values()) or 1.0
        result["word_classes"][g] = {c: mass[c] / total for c in CLASSES}
    for k, words in per_feature.items():
        top = sorted(((w, float(np.mean(d))) for w, d in words.items()), key=lambda t: -t[1])
        result["features"][str(k)] = [[w, round(d, 4)] for w, d in top[:5]]
    result["settings"] = {
        "groups": list(groups),
        "top_features": top_features,
        "captions_per_feature": captions_per_feature,
    }
    return write_json(analysis / "words.json", result)


def _text_activations(
    encoder: DualEncoder,
    fmap: FeatureMap,
    texts: list[str],
    normalize: bool,
    batch_size: int,
    device: str,
) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for lo in range(0, len(texts), batch_size):
            x = encoder.encode_texts(texts[lo : lo + batch_size]).float()
            if normalize:
                x = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            out.append(fmap.encode(x.to(device), "text").float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, fmap.n_features), np.float32)
