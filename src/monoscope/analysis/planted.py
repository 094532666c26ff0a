"""Planted ground truth (METHOD.md §5): synthetic paired embeddings with known features.

:func:`make_planted` draws a dictionary of unit atoms in R^d split into shared atoms (CrossD:
active in both modalities of a pair, with correlated magnitudes), image-only (ImgD) and
text-only (TextD) atoms; every pair gets sparse codes, the image embedding adds +offset/2 and the
text embedding -offset/2 (the modality gap), plus Gaussian noise, and both are L2-normalised by
default (as stored CLIP embeddings are).

:func:`score_featuremap` measures how well a trained map recovers the truth:

- ``atom_recovery_mmcs``: mean over true atoms of the max cosine to any learned feature direction
  (decoder directions; for NCL, which has no decoder, the encoder rows).
- ``group_macro_f1``: each true atom's best-matched feature is grouped by MDS on the planted
  pairs (ratio of means, mean +- std rule; :mod:`monoscope.analysis.mds`); macro-F1 of these
  groups against the atoms' true groups (a dead best match counts as a miss).

:func:`run_planted_benchmark` trains each method on one planted store and writes
``DIR/planted.json``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._util import write_json
from ..featuremaps.base import FeatureMap
from ..featuremaps.ncl import NCLMap
from ..featuremaps.train import METHODS
from ..store import Store, StoreWriter
from .mds import GROUPS, group_features, modality_dominance
from .uncertainty import SignFlipTest, benjamini_hochberg, group_by_test

DEFAULT_METHODS = METHODS

# Settings for the benchmark's short runs (1500 steps at d = 64): the L1 and JumpReLU SAEs need
# a larger step than the library default to converge in that budget, the L1 coefficient suits
# the planted sparsity, and NCL's B x B logits make 256 pairs a batch the affordable size.
# Entries override the arguments of train_featuremap.
PLANTED_METHOD_KWARGS: dict[str, dict[str, Any]] = {
    "sae-relu": {"l1": 2.0, "lr": 0.01},
    "sae-jumprelu": {"lr": 0.01},
    "ncl": {"batch_size": 256},
}


@dataclass(frozen=True)
class PlantedTruth:
    """The answers: atoms (n_atoms, d), their groups (ImgD / TextD / CrossD), the modality
    offset (d,) and the codes (n_pairs, n_atoms) of each modality before noise and norming."""

    atoms: np.ndarray
    groups: np.ndarray
    offset: np.ndarray
    codes_image: np.ndarray = field(repr=False)
    codes_text: np.ndarray = field(repr=False)


def make_planted(
    dim: int = 64,
    n_atoms: int = 256,
    n_pairs: int = 20000,
    seed: int = 0,
    *,
    shared_fraction: float = 0.5,
    image_fraction: float = 0.25,
    active_shared: float = 4.0,
    active_specific: float = 2.0,
    magnitude_sd: float = 0.35,
    magnitude_corr: float = 0.8,
    gap: float = 1.0,
    noise: float = 0.02,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray, PlantedTruth]:
    """Synthetic paired embeddings ``(image (n_pairs, d), text (n_pairs, d), truth)``.

    Args:
        shared_fraction / image_fraction: shares of the atoms that are shared / image-only
            (the rest are text-only).
        active_shared: expected active shared atoms per pair (Bernoulli per atom).
        active_specific: expected active modality-only atoms per embedding.
        magnitude_sd / magnitude_corr: log-magnitudes are N(0, sd^2); a shared atom's image
            and text log-magnitudes have correlation ``magnitude_corr``.
        gap: norm of the offset between the image and the text centroid.
        noise: standard deviation of the isotropic noise per embedding (norm, roughly).
        normalize: L2-normalise the embeddings.
    """
    if not 0 <= shared_fraction + image_fraction <= 1:
        raise ValueError("shared_fraction + image_fraction must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n_atoms, dim))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    n_shared = round(n_atoms * shared_fraction)
    n_image = round(n_atoms * image_fraction)
    groups = np.array(
        ["CrossD"] * n_shared + ["ImgD"] * n_image + ["TextD"] * (n_atoms - n_shared - n_image)
    )
    shared, img_only, txt_only = (groups == "CrossD"), (groups == "ImgD"), (groups == "TextD")

    def bernoulli(mask: np.ndarray, expected: float) -> np.ndarray:
        p = min(1.0, expected / max(int(mask.sum()), 1))
        return (rng.random((n_pairs, n_atoms)) < p) & mask

    on_shared = bernoulli(shared, active_shared)
    on_image = on_shared | bernoulli(img_only, active_specific)
    on_text = on_shared | bernoulli(txt_only, active_specific)
    g1 = rng.standard_normal((n_pairs, n_atoms))
    g2 = magnitude_corr * g1 + np.sqrt(1 - magnitude_corr**2) * rng.standard_normal(g1.shape)
    codes_image = np.where(on_image, np.exp(magnitude_sd * g1), 0.0)
    codes_text = np.where(on_text, np.exp(magnitude_sd * np.where(shared, g2, g1)), 0.0)
    direction = rng.standard_normal(dim)
    offset = gap * direction / np.linalg.norm(direction)
    sigma = noise / np.sqrt(dim)
    image = codes_image @ atoms + offset / 2 + sigma * rng.standard_normal((n_pairs, dim))
    text = codes_text @ atoms - offset / 2 + sigma * rng.standard_normal((n_pairs, dim))
    if normalize:
        image /= np.linalg.norm(image, axis=1, keepdims=True)
        text /= np.linalg.norm(text, axis=1, keepdims=True)
    truth = PlantedTruth(atoms, groups, offset, codes_image, codes_text)
    return image.astype(np.float32), text.astype(np.float32), truth


def write_planted_store(
    path: str | Path, image: np.ndarray, text: np.ndarray, shard_size: int = 8192
) -> Store:
    """Write paired embeddings as a store (source ``planted``), overwriting ``path``."""
    n, dim = image.shape
    header = {
        "model": "planted",
        "dim": dim,
        "normalized": bool(np.allclose(np.linalg.norm(image[:100], axis=1), 1, atol=1e-4)),
        "source": "planted",
        "shard_size": shard_size,
    }
    writer = StoreWriter(path, header, overwrite=True)
    for b, lo in enumerate(range(0, n, shard_size)):
        hi = min(n, lo + shard_size)
        pairs = [
            {"id": str(i), "caption": "", "image_ref": None, "labels": {}} for i in range(lo, hi)
        ]
        writer.add_shard(b, image[lo:hi], text[lo:hi], pairs, Counter())
    writer.end(n)
    writer.finish()
    return Store(path)


def feature_directions(fmap: FeatureMap) -> np.ndarray:
    """(K, d) unit directions: decoder directions, or encoder rows for NCL."""
    if isinstance(fmap, NCLMap):
        return fmap.encoder_directions().cpu().numpy()
    directions = fmap.decoder_directions()
    if directions is None:
        raise ValueError(f"feature map '{fmap.kind}' has no feature directions")
    return directions.detach().cpu().numpy()


def macro_f1(truth: np.ndarray, predicted: np.ndarray, labels: tuple[str, ...] = GROUPS) -> float:
    """Unweighted mean over ``labels`` of the F1 score of ``predicted`` against ``truth``."""
    scores = []
    for label in labels:
        tp = float(((predicted == label) & (truth == label)).sum())
        fp = float(((predicted == label) & (truth != label)).sum())
        fn = float(((predicted != label) & (truth == label)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


@torch.no_grad()
def score_featuremap(
    fmap: FeatureMap, image: np.ndarray, text: np.ndarray, truth: PlantedTruth
) -> dict[str, Any]:
    """Atom recovery (mmcs) and group macro-F1 of a trained map on planted data."""
    fmap = fmap.cpu().eval()
    cos = truth.atoms @ feature_directions(fmap).T
    best = cos.argmax(1)
    a_img = fmap.encode_modality(torch.from_numpy(image), "image").float()
    a_txt = fmap.encode_modality(torch.from_numpy(text), "text").float()
    mds = modality_dominance(a_img.double().mean(0).numpy(), a_txt.double().mean(0).numpy())
    grouping = group_features(mds)
    predicted = grouping.groups[best]
    test = SignFlipTest(a_img.shape[1], permutations=1000)
    test.update(a_img, a_txt)
    q = benjamini_hochberg(np.where(np.isfinite(mds), test.p_values(), np.nan))
    by_rule = {
        "std": grouping,
        "fixed": group_features(mds, "fixed"),
        "quantile": group_features(mds, "quantile"),
        "test": group_by_test(mds, q),
    }
    return {
        "atom_recovery_mmcs": float(cos.max(1).mean()),
        "group_macro_f1": macro_f1(truth.groups, predicted),
        "group_macro_f1_by_rule": {
            rule: macro_f1(truth.groups, g.groups[best]) for rule, g in by_rule.items()
        },
        "group_accuracy": float((predicted == truth.groups).mean()),
        "group_counts": grouping.counts(),
        "alive_features": int(np.isfinite(mds).sum()),
        "n_features": int(fmap.n_features),
    }


def run_planted_benchmark(
    out_dir: str | Path,
    seed: int = 0,
    dim: int = 64,
    atoms: int = 256,
    n_pairs: int = 20000,
    methods: tuple[str, ...] | list[str] = DEFAULT_METHODS,
    *,
    latents: int | None = None,
    k: int = 8,
    steps: int = 1500,
    batch_size: int = 1024,
    progress: bool = False,
    planted_kwargs: dict[str, Any] | None = None,
    method_kwargs: dict[str, dict[str, Any]] | None = None,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Train each method on one planted store and write ``out_dir/planted.json``.

    Returns ``{"methods": {method: scores}, "settings": {...}}``; the maps are kept in
    ``out_dir/maps/<method>``. ``latents`` defaults to 2 x atoms; ``method_kwargs`` (per
    method, e.g. ``{"sae-relu": {"l1": 3.0}}``) update :data:`PLANTED_METHOD_KWARGS`.
    ``threads``: torch threads while it runs (restored after; None: leave as is). The models are
    small, and one thread avoids OpenMP stalls, which slow small matmuls tenfold or more when
    the CPUs are shared with other work.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run_planted(
            Path(out_dir),
            seed,
            dim,
            atoms,
            n_pairs,
            methods,
            latents,
            k,
            steps,
            batch_size,
            progress,
            planted_kwargs,
            method_kwargs,
        )
    finally:
        torch.set_num_threads(previous)


def _run_planted(
    out_dir: Path,
    seed: int,
    dim: int,
    atoms: int,
    n_pairs: int,
    methods: tuple[str, ...] | list[str],
    latents: int | None,
    k: int,
    steps: int,
    batch_size: int,
    progress: bool,
    planted_kwargs: dict[str, Any] | None,
    method_kwargs: dict[str, dict[str, Any]] | None,
) -> dict[str, Any]:
    from ..featuremaps.base import load_featuremap
    from ..featuremaps.train import train_featuremap

    planted_kwargs = dict(planted_kwargs or {})
    image, text, truth = make_planted(dim, atoms, n_pairs, seed, **planted_kwargs)
    store = write_planted_store(out_dir / "store", image, text)
    latents = latents or 2 * atoms
    kwargs = {
        m: {**PLANTED_METHOD_KWARGS.get(m, {}), **(method_kwargs or {}).get(m, {})} for m in methods
    }
    results: dict[str, Any] = {}
    for method in methods:
        t0 = time.perf_counter()
        path = train_featuremap(
            store,
            method,
            out_dir / "maps" / method,
            **{
                "latents": latents,
                "k": k,
                "steps": steps,
                "batch_size": batch_size,
                "seed": seed,
                "overwrite": True,
                "checkpoint_every": 0,
                "progress": progress,
                **kwargs[method],
            },
        )
        scores = score_featuremap(load_featuremap(path), image, text, truth)
        scores["seconds"] = round(time.perf_counter() - t0, 2)
        results[method] = scores
    report = {
        "methods": results,
        "settings": {
            "seed": seed,
            "dim": dim,
            "atoms": atoms,
            "n_pairs": n_pairs,
            "latents": latents,
            "k": k,
            "steps": steps,
            "batch_size": batch_size,
            "planted": planted_kwargs,
            "method_kwargs": kwargs,
            "true_group_counts": {g: int((truth.groups == g).sum()) for g in GROUPS},
        },
    }
    write_json(out_dir / "planted.json", report)
    return report
