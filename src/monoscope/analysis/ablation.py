"""Removing feature groups (METHOD.md §4): zero a group's features, map back, and measure
zero-shot classification and image<->text retrieval against the unablated map and against
removing random feature sets of the same size.

Maps with a decoder remove the group's contribution and keep the reconstruction error,
x' = x - (decode(z) - decode(z with the group zeroed)), so an empty removal is exact. Maps
without a decoder (NCL) are evaluated in feature space: the codes themselves are compared.
Only features with a confident verdict are removed with a group; ``undetermined`` and ``rare``
features stay (their numbers are recorded under ``left_out``), and random controls are drawn
from all alive features.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._util import MonoscopeError, resolve_device, versions, write_json
from ..artefacts import ABLATION_VERSION, Analysis
from ..config import CLASS_TEMPLATES, AblateConfig
from ..encoders import DualEncoder, encoder_spec, load_encoder
from ..featuremaps import FeatureMap, load_featuremap
from ..featuremaps.metrics import retrieval_ranks
from ..integrity import check_analysis_matches
from ..labels import class_label_keys
from ..locks import locked
from ..outputs import prepare_out
from ..store import Store
from .analyze import analyze
from .evidence import RARE, UNDETERMINED
from .mds import GROUPS
from .monosemanticity import unit_rows

TEMPLATES = CLASS_TEMPLATES


def remove_features(
    fmap: FeatureMap, x: torch.Tensor, modality: str, removed: np.ndarray
) -> torch.Tensor:
    """Embeddings (or, without a decoder, codes) with the ``removed`` features zeroed."""
    mask = torch.as_tensor(removed, dtype=torch.bool, device=x.device)
    with torch.inference_mode():
        z = fmap.encode(x, modality)
        if not fmap.has_decoder:
            return z.masked_fill(mask, 0.0)
        if not mask.any():
            return x
        contribution = fmap.decode(z, modality) - fmap.decode(z.masked_fill(mask, 0.0), modality)
        return x - contribution


def retrieval_hits(img: torch.Tensor, txt: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict:
    """Per-query hits of image->text and text->image retrieval over all pairs (row i <-> i):
    a hit at k when fewer than k other candidates score at least as high as the own pair (ties
    are misses; :func:`monoscope.featuremaps.metrics.retrieval_ranks`)."""
    rank_i2t, rank_t2i = retrieval_ranks(img, txt)
    out = {}
    for k in ks:
        out[f"i2t@{k}"] = (rank_i2t < k).numpy()
        out[f"t2i@{k}"] = (rank_t2i < k).numpy()
    return out


def zero_shot_hits(img: torch.Tensor, class_emb: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """Per-image correctness of nearest-class-prompt classification (labels index classes)."""
    pred = (unit_rows(img) @ unit_rows(class_emb).T).argmax(1).numpy()
    return pred == labels


def paired_drop(base: np.ndarray, ablated: np.ndarray, replicates: int = 1000, seed: int = 0):
    """Mean drop (base - ablated) of per-sample scores with a 95% paired-bootstrap CI."""
    diff = base.astype(np.float64) - ablated.astype(np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, (replicates, diff.size))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), [float(lo), float(hi)]


def class_prompts(
    encoder: DualEncoder, names: list[str], templates: Sequence[str], normalize: bool
) -> torch.Tensor:
    """(C, d) class embeddings: mean of the unit prompt embeddings over templates."""
    prompts = [t.format(n) for n in names for t in templates]
    with torch.inference_mode():
        emb = encoder.encode_texts(prompts).float().cpu()
    if normalize:
        emb = unit_rows(emb)
    return unit_rows(emb.reshape(len(names), len(templates), -1).mean(1))


@locked()
def ablate(
    store: str | Path,
    featuremap: str | Path,
    out: str | Path,
    *,
    analysis: str | Path | None = None,
    model: str | DualEncoder | None = None,
    label_keys: Sequence[str] | None = None,
    templates: Sequence[str] = TEMPLATES,
    control_seeds: int = 5,
    max_pairs: int = 4000,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Remove ImgD / TextD / CrossD and random same-size controls; write ``out/ablation.json``.

    ``analysis`` gives the groups (computed into ``out/analysis`` when omitted); ``model``
    embeds the class prompts (default: the store's own encoder). ``label_keys`` are the pair
    labels used as zero-shot classes (default: every label that can serve, see
    :func:`monoscope.labels.class_label_keys`; retrieval only, with a warning, when none can).
    Evaluation uses the first ``max_pairs`` pairs (retrieval is over all of them). A non-empty
    ``out`` that is not an ablation is refused unless ``overwrite``.
    """
    given = dict(locals())  # the call, recorded in the output
    device = resolve_device(device)
    out = Path(out)
    prepare_out(out, "ablation", overwrite)
    store_obj = Store(store)
    fmap = load_featuremap(featuremap, device=device)
    if analysis is None:
        analysis = analyze(
            store_obj,
            featuremap,
            out / "analysis",
            seed=seed,
            device=device,
            progress=progress,
            overwrite=True,
        )
    analysis_summary = check_analysis_matches(Path(analysis), store_obj, Path(featuremap))
    groups = Analysis(analysis).groups
    if len(groups) != fmap.n_features:
        raise MonoscopeError(
            f"the analysis has {len(groups)} features but the feature map has {fmap.n_features}"
        )
    n = min(store_obj.count, max_pairs)
    rows = np.arange(n)
    x_img = torch.from_numpy(store_obj.rows("image", rows)).to(device)
    x_txt = torch.from_numpy(store_obj.rows("text", rows)).to(device)
    pairs = store_obj.pairs()[:n]
    encoder = (
        model
        if model is not None and not isinstance(model, str)
        else load_encoder(model or encoder_spec(store_obj.manifest["model"]), device=device)
    )
    tasks = _zero_shot_tasks(
        pairs, label_keys, encoder, templates, bool(store_obj.manifest.get("normalized")), device
    )

    def evaluate(removed: np.ndarray) -> dict[str, np.ndarray]:
        img = remove_features(fmap, x_img, "image", removed).cpu()
        txt = remove_features(fmap, x_txt, "text", removed).cpu()
        scores = retrieval_hits(img, txt)
        for key, (class_emb, labels, valid) in tasks.items():
            cls = remove_features(fmap, class_emb, "text", removed).cpu()
            scores[f"zeroshot/{key}"] = zero_shot_hits(
                img[torch.from_numpy(valid)], cls, labels[valid]
            )
        return scores

    alive = groups != "dead"
    none = np.zeros(len(groups), bool)
    base = evaluate(none)
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {
        "format_version": ABLATION_VERSION,
        "baseline": {name: float(v.mean()) for name, v in base.items()},
        "removals": {},
    }
    for g in GROUPS:
        members = groups == g
        size = int(members.sum())
        removal: dict[str, Any] = {"n_features": size, "metrics": {}, "control": {}}
        if size:
            ablated = evaluate(members)
            controls = []
            for _ in range(control_seeds):
                chosen = rng.choice(np.flatnonzero(alive), size, replace=False)
                mask = none.copy()
                mask[chosen] = True
                controls.append(evaluate(mask))
            for name, b in base.items():
                drop, ci = paired_drop(b, ablated[name], seed=seed)
                removal["metrics"][name] = {
                    "value": float(ablated[name].mean()),
                    "drop": drop,
                    "drop_ci": ci,
                }
                ctrl = np.mean([c[name] for c in controls], axis=0)
                drop, ci = paired_drop(b, ctrl, seed=seed)
                removal["control"][name] = {
                    "value": float(ctrl.mean()),
                    "drop": drop,
                    "drop_ci": ci,
                }
        result["removals"][g] = removal
    result["left_out"] = {v: int((groups == v).sum()) for v in (UNDETERMINED, RARE)}
    result["settings"] = {
        "options": AblateConfig.record(given, "store", "featuremap", "analysis", "out", "model"),
        "store": str(Path(store).resolve()),
        "featuremap": str(Path(featuremap).resolve()),
        "analysis": str(Path(analysis).resolve()),
        "inputs": analysis_summary.get("inputs"),
        "space": "embedding" if fmap.has_decoder else "feature",
        "n_pairs": n,
        "label_keys": sorted(tasks),
        "n_classes": {k: int(len(v[0])) for k, v in tasks.items()},
        "templates": list(templates),
        "control_seeds": control_seeds,
        "seed": seed,
        "versions": versions(),
    }
    write_json(out / "ablation.json", result)
    return out


def _zero_shot_tasks(
    pairs: list[dict[str, Any]],
    label_keys: Sequence[str] | None,
    encoder: DualEncoder,
    templates: Sequence[str],
    normalize: bool,
    device: str,
) -> dict[str, tuple[torch.Tensor, np.ndarray, np.ndarray]]:
    """For each label key: class embeddings, per-pair class index, and which pairs have one."""
    present = {k for p in pairs for k in p.get("labels", {})}
    keys = list(label_keys) if label_keys else class_label_keys(pairs)
    if not keys:
        warnings.warn(
            "no label can serve as zero-shot classes (labels present: "
            f"{sorted(present) or 'none'}); only retrieval is measured",
            stacklevel=2,
        )
    missing = [k for k in keys if k not in present]
    if missing:
        raise MonoscopeError(
            f"no pair has the label(s) {missing}; labels present: {sorted(present)}"
        )
    tasks = {}
    for key in keys:
        values = [_label(p, key) for p in pairs]
        names = sorted({v for v in values if v})
        if len(names) < 2:
            continue
        index = {name: i for i, name in enumerate(names)}
        labels = np.array([index.get(v, -1) for v in values])
        readable = [n.replace("-", " ").replace("_", " ") for n in names]
        class_emb = class_prompts(encoder, readable, templates, normalize).to(device)
        tasks[key] = (class_emb, labels, labels >= 0)
    return tasks


def _label(pair: dict[str, Any], key: str) -> str:
    value = pair.get("labels", {}).get(key)
    return "" if value is None else str(value)
