"""Plumbing shared by the case studies: inputs, groups, prompts, images, CIs and figures."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from .._util import MonoscopeError, atomic_write, resolve_device
from ..analysis.ablation import class_prompts
from ..analysis.analyze import analyze
from ..analysis.mds import GROUPS
from ..analysis.monosemanticity import unit_rows
from ..artefacts import Analysis
from ..data import BadRecord, load_image_ref
from ..encoders import DualEncoder, encoder_spec, load_encoder
from ..encoders.pocket import fit_square
from ..featuremaps import FeatureMap, load_featuremap
from ..integrity import check_analysis_matches
from ..outputs import refuse_artefact_out
from ..store import Store

__all__ = ["GROUPS", "unit_rows"]


@dataclass
class StudyInputs:
    """Everything a study reads: the store, the feature map, its groups and the encoder."""

    store: Store
    fmap: FeatureMap
    groups: np.ndarray  # (K,) "ImgD" | "TextD" | "CrossD" | "undetermined" | "rare" | "dead"
    encoder: DualEncoder
    analysis: Path
    device: str

    @property
    def normalized(self) -> bool:
        return bool(self.store.manifest.get("normalized"))

    def masks(self, with_all: bool = False) -> dict[str, np.ndarray]:
        """Boolean (K,) member masks of ImgD / TextD / CrossD (and ``all`` alive features)."""
        out = {g: self.groups == g for g in GROUPS}
        if with_all:
            out["all"] = self.groups != "dead"
        return out

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, d) embeddings of texts in the store's space (unit rows if the store is)."""
        with torch.inference_mode():
            emb = self.encoder.encode_texts(list(texts)).float()
        return (unit_rows(emb) if self.normalized else emb).to(self.device)

    def classes(self, names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """(C, d) unit class embeddings: the template-averaged prompts of each name."""
        readable = [n.replace("-", " ").replace("_", " ") for n in names]
        return class_prompts(self.encoder, readable, templates, self.normalized).to(self.device)

    def rows(self, modality: str, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.store.rows(modality, rows)).to(self.device)


def open_inputs(
    store: str | Path | Store,
    featuremap: str | Path | FeatureMap,
    analysis: str | Path | None,
    out: Path,
    *,
    model: str | DualEncoder | None,
    device: str,
    seed: int,
    progress: bool,
) -> StudyInputs:
    """Open a study's inputs; ``analysis=None`` computes one into ``out/analysis``."""
    device = resolve_device(device)
    refuse_artefact_out(Path(out), "study")
    store = store if isinstance(store, Store) else Store(store)
    fmap = featuremap if isinstance(featuremap, FeatureMap) else load_featuremap(featuremap, device)
    fmap = fmap.to(device).eval()
    if fmap.dim != store.dim:
        raise MonoscopeError(
            f"the store has dimension {store.dim} but the feature map expects {fmap.dim}"
        )
    if analysis is None:
        analysis = analyze(
            store,
            fmap,
            out / "analysis",
            seed=seed,
            device=device,
            progress=progress,
            overwrite=True,
        )
    if not (Path(analysis) / "features.csv").is_file():
        raise MonoscopeError(f"{analysis}: not an analysis (no features.csv)")
    check_analysis_matches(
        Path(analysis), store, None if isinstance(featuremap, FeatureMap) else Path(featuremap)
    )
    groups = Analysis(analysis).groups
    if len(groups) != fmap.n_features:
        raise MonoscopeError(
            f"the analysis has {len(groups)} features but the feature map has {fmap.n_features}"
        )
    if isinstance(model, str) or model is None:
        try:
            spec = model or encoder_spec(store.manifest["model"])
        except ValueError as e:
            raise MonoscopeError(str(e)) from None
        model = load_encoder(spec, device=device)
    return StudyInputs(store, fmap, groups, model, Path(analysis), device)


def label_array(pairs: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    """The string value of label ``key`` per pair ("" where missing)."""
    values = [p.get("labels", {}).get(key) for p in pairs]
    return np.array(["" if v is None else str(v) for v in values], dtype=object).astype(str)


def require_labels(pairs: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    present = {k for p in pairs for k in p.get("labels", {})}
    missing = [k for k in keys if k not in present]
    if missing:
        raise MonoscopeError(
            f"no pair has the label(s) {missing}; labels present: {sorted(present) or 'none'}"
        )


def concept_pattern(concept: str) -> re.Pattern[str]:
    """Whole-word, case-insensitive match of a concept phrase in captions."""
    return re.compile(rf"\b{re.escape(concept.strip())}\b", re.IGNORECASE)


def load_images(pairs: Sequence[dict[str, Any]], rows: np.ndarray) -> list[Image.Image]:
    """RGB images of the given pairs (one bulk read for the bundled emoji)."""
    refs = [pairs[int(r)].get("image_ref", "") for r in rows]
    if refs and all(r.startswith("emoji:") for r in refs):
        from ..data.emoji import emoji_array

        images, records = emoji_array()
        index = {rec["id"]: i for i, rec in enumerate(records)}
        try:
            picked = images[[index[r.removeprefix("emoji:")] for r in refs]]
        except KeyError as e:
            raise MonoscopeError(f"unknown emoji image {e}") from None
        return [Image.fromarray(a) for a in picked]
    try:
        return [load_image_ref(r) for r in refs]
    except BadRecord as e:
        raise MonoscopeError(f"cannot load a study image: {e}") from None


def load_pixels(pairs: Sequence[dict[str, Any]], rows: np.ndarray, size: int) -> np.ndarray:
    """(n, size, size, 3) uint8 images of the given pairs, resized and centre-cropped."""
    images = load_images(pairs, rows)
    if not images:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([fit_square(im, size) for im in images])


def diff_ci(
    a: np.ndarray, b: np.ndarray, replicates: int = 1000, seed: int = 0
) -> dict[str, float | list[float] | None]:
    """mean(a) - mean(b) of two independent samples with a 95% percentile-bootstrap CI."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0 or b.size == 0:
        return {"diff": None, "ci": None}
    rng = np.random.default_rng(seed)
    boot = a[rng.integers(0, a.size, (replicates, a.size))].mean(1) - b[
        rng.integers(0, b.size, (replicates, b.size))
    ].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"diff": float(a.mean() - b.mean()), "ci": [float(lo), float(hi)]}


def random_masks(
    alive: np.ndarray, size: int, count: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """``count`` random (K,) masks of ``size`` alive features each (the same-size controls)."""
    pool = np.flatnonzero(alive)
    size = min(size, pool.size)
    masks = []
    for _ in range(count):
        m = np.zeros(alive.shape, bool)
        m[rng.choice(pool, size, replace=False)] = True
        masks.append(m)
    return masks


def save_png(fig: Figure, path: Path, dpi: int = 130) -> Path:
    """Write a matplotlib figure as PNG, atomically."""
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi))
