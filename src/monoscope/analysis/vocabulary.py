"""Name every feature from a text vocabulary, image-only features included.

A feature's vocabulary name is the term whose text embedding is nearest (cosine) to the
feature's direction in embedding space: its decoder row, or its encoder row for maps without a
decoder (NCL). This is how concept-bottleneck work names CLIP directions; unlike a name taken
from top captions, it does not need the feature to fire on captions at all.

The vocabulary is, by default, the words and phrases of the store's captions: every run of
1-3 words inside a caption clause (split at punctuation) that is not only stop words, kept
when it occurs in at least ``min_count`` captions (most frequent first, at most ``max_terms``);
or a user's list, one term per line. Terms are embedded with the store's own text encoder,
normalised as the store's text embeddings are, and passed through the map's centring when it
has one. Embeddings are cached in ``<analysis>/vocabulary/`` under a key of encoder and terms,
so a second run with the same vocabulary embeds nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._util import MonoscopeError, read_json, save_npy, write_json
from ..featuremaps import FeatureMap
from ..featuremaps.center import CenteredMap
from ..store import Store
from .analyze import read_feature_table, write_feature_table
from .naming import _STOP

_CLAUSE = re.compile(r"[^,:;.!?()\[\]\"/|]+")
_TOKEN = re.compile(r"[a-z0-9][a-z0-9'&-]*")
TOP = 5  # terms kept per feature in vocabulary/names.json


def caption_vocabulary(
    captions: Sequence[str], max_terms: int = 5000, min_count: int = 2, max_words: int = 3
) -> list[str]:
    """Words and phrases of ``captions`` (see the module docstring), most frequent first."""
    df: Counter[str] = Counter()
    for caption in captions:
        seen = set()
        for clause in _CLAUSE.findall(caption.lower()):
            words = _TOKEN.findall(clause)
            for n in range(1, max_words + 1):
                for i in range(len(words) - n + 1):
                    gram = words[i : i + n]
                    if gram[0] in _STOP or gram[-1] in _STOP:
                        continue
                    seen.add(" ".join(gram))
        df.update(seen)
    floor = min_count if any(c >= min_count for c in df.values()) else 1
    ranked = sorted((t for t, c in df.items() if c >= floor), key=lambda t: (-df[t], t))
    return ranked[:max_terms]


def read_vocabulary(path: str | Path) -> list[str]:
    """Terms of a user's vocabulary file: one per line; blank lines and ``#`` comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise MonoscopeError(f"{path}: vocabulary file not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    terms = list(dict.fromkeys(t.strip() for t in lines if t.strip() and not t.startswith("#")))
    if not terms:
        raise MonoscopeError(f"{path}: the vocabulary file has no terms")
    return terms


def feature_directions(fmap: FeatureMap) -> np.ndarray:
    """(K, d) unit directions: decoder rows, else encoder rows; an error if the map has none."""
    dirs = fmap.decoder_directions()
    if dirs is None:
        dirs = fmap.encoder_directions()
    if dirs is None:
        raise MonoscopeError(f"feature map '{fmap.kind}' has no feature directions to name")
    d = dirs.detach().double().cpu().numpy()
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def embed_terms(
    encoder: Any, terms: Sequence[str], normalize: bool, cache: Path, batch_size: int = 256
) -> np.ndarray:
    """(V, d) float32 text embeddings of ``terms``, from ``cache`` when it holds these terms
    embedded by this encoder."""
    key = hashlib.sha256(
        json.dumps([encoder.info(), normalize, list(terms)], sort_keys=True).encode()
    ).hexdigest()
    meta, arr = cache / "vocabulary.json", cache / "embeddings.npy"
    if meta.is_file() and arr.is_file() and read_json(meta).get("key") == key:
        return np.load(arr)
    with torch.inference_mode():
        parts = [
            encoder.encode_texts(list(terms[lo : lo + batch_size])).float().cpu().numpy()
            for lo in range(0, len(terms), batch_size)
        ]
    emb = np.concatenate(parts).astype(np.float32)
    if normalize:
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    save_npy(arr, emb)
    write_json(meta, {"key": key, "encoder": encoder.info(), "terms": list(terms)})
    return emb


def nearest_terms(
    directions: np.ndarray, term_emb: np.ndarray, top: int = TOP, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """(K, top) indices and cosines of the terms nearest to each direction, best first."""
    t = torch.from_numpy(term_emb).double()
    t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
    top = min(top, len(t))
    idx, cos = [], []
    for lo in range(0, len(directions), chunk):
        sims = torch.from_numpy(directions[lo : lo + chunk]) @ t.T
        v, i = sims.topk(top, dim=1)
        idx.append(i.numpy())
        cos.append(v.numpy())
    return np.concatenate(idx), np.concatenate(cos)


def vocabulary_names(
    store: Store,
    fmap: FeatureMap,
    analysis: str | Path,
    encoder: Any,
    vocabulary: str | Path | None = None,
    max_terms: int = 5000,
) -> Path:
    """Add ``vocab_name`` and ``vocab_cos`` to ``<analysis>/features.csv``, write the top
    terms of every feature to ``<analysis>/vocabulary/names.json`` and a ``vocabulary`` block
    to summary.json. ``vocabulary``: a terms file (default: the store's captions)."""
    analysis = Path(analysis)
    if vocabulary is None:
        terms = caption_vocabulary([p["caption"] for p in store.pairs()], max_terms=max_terms)
        source = "captions"
    else:
        terms, source = read_vocabulary(vocabulary), str(Path(vocabulary).resolve())
    if not terms:
        raise MonoscopeError(f"{store.path}: the captions give no vocabulary; pass a terms file")
    cache = analysis / "vocabulary"
    emb = embed_terms(encoder, terms, bool(store.manifest.get("normalized")), cache)
    if emb.shape[1] != fmap.dim:
        raise MonoscopeError(
            f"the vocabulary embeds to dimension {emb.shape[1]}, the feature map expects {fmap.dim}"
        )
    if isinstance(fmap, CenteredMap):  # a centred map names in its centred space
        with torch.no_grad():
            emb = fmap.transform(torch.from_numpy(emb), "text").numpy()
    table = read_feature_table(analysis / "features.csv")
    dirs = feature_directions(fmap)
    if len(dirs) != len(table["feature"]):
        raise MonoscopeError(
            f"{analysis}: {len(table['feature'])} features but the map has {len(dirs)}"
        )
    idx, cos = nearest_terms(dirs, emb)
    alive = table["alive"] == 1
    table["vocab_name"] = np.where(alive, np.array(terms, dtype=object)[idx[:, 0]], "").astype(str)
    table["vocab_cos"] = np.where(alive, cos[:, 0], np.nan)
    write_feature_table(analysis / "features.csv", table)
    names = {
        str(k): [[terms[j], round(float(c), 4)] for j, c in zip(idx[k], cos[k], strict=True)]
        for k in np.flatnonzero(alive)
    }
    write_json(cache / "names.json", {"source": source, "n_terms": len(terms), "features": names})
    summary = read_json(analysis / "summary.json")
    summary["vocabulary"] = {
        "source": source,
        "n_terms": len(terms),
        "encoder": encoder.info(),
        "directions": "decoder" if fmap.decoder_directions() is not None else "encoder",
        "centred": isinstance(fmap, CenteredMap),
        "mean_best_cosine": float(np.nanmean(table["vocab_cos"][alive])),
    }
    write_json(analysis / "summary.json", summary)
    return cache / "names.json"
