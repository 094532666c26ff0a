"""The analyze stage: one streaming pass over a store through a feature map."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .._util import (
    MonoscopeError,
    atomic_write,
    read_json,
    resolve_device,
    save_npy,
    versions,
    write_json,
)
from ..featuremaps import FeatureMap, load_featuremap
from ..store import Store
from .mds import RULES, alive_mask, group_features, modality_dominance
from .stats import FeatureStats, RatioStats
from .uncertainty import (
    PoissonBootstrap,
    SignFlipTest,
    benjamini_hochberg,
    group_by_test,
    summarise_bootstrap,
)


class PairAccumulator(Protocol):
    def update(self, acts_img: torch.Tensor, acts_txt: torch.Tensor) -> None: ...


def collect_stats(
    store: Store,
    fmap: FeatureMap,
    *,
    top_m: int = 20,
    batch_size: int = 4096,
    device: str = "cpu",
    pair_stats: Sequence[PairAccumulator] = (),
    progress: bool = True,
) -> tuple[FeatureStats, FeatureStats, RatioStats]:
    """Stream the store through ``fmap``: per-modality statistics and pair ratio statistics.

    ``pair_stats`` are further accumulators fed every (image, text) activation batch.
    """
    if store.dim != fmap.dim:
        raise MonoscopeError(
            f"the store has dimension {store.dim} but the feature map expects {fmap.dim}"
        )
    k = fmap.n_features
    img_stats, txt_stats, ratios = FeatureStats(k, top_m), FeatureStats(k, top_m), RatioStats(k)
    fmap = fmap.to(device).eval()
    bar = tqdm(total=store.count, unit="pair", desc="analyze", disable=not progress)
    with torch.inference_mode():
        for shard in store.shards():
            for lo in range(0, len(shard.image), batch_size):
                hi = min(lo + batch_size, len(shard.image))
                a_img = _encode(fmap, shard.image[lo:hi], device)
                a_txt = _encode(fmap, shard.text[lo:hi], device)
                img_stats.update(a_img, shard.start + lo)
                txt_stats.update(a_txt, shard.start + lo)
                for acc in (ratios, *pair_stats):
                    acc.update(a_img, a_txt)
                bar.update(hi - lo)
    bar.close()
    return img_stats, txt_stats, ratios


def _encode(fmap: FeatureMap, x: np.ndarray, device: str) -> torch.Tensor:
    acts = fmap.encode(torch.from_numpy(np.array(x, dtype=np.float32)).to(device)).float().cpu()
    if not torch.isfinite(acts).all():
        raise MonoscopeError("the feature map produced non-finite activations")
    return acts


def analyze(
    store: str | Path | Store,
    featuremap: str | Path | FeatureMap,
    out: str | Path,
    *,
    top_m: int = 20,
    definition: str = "ratio-of-means",
    rule: str = "std",
    low: float = 0.25,
    high: float = 0.75,
    quantile: float = 0.2,
    fdr: float = 0.05,
    min_effect: float = 0.1,
    permutations: int = 1000,
    bootstrap: int = 200,
    batch_size: int = 4096,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Score every feature's MDS, group the features and find their top-m samples.

    ``rule`` is one of ``std`` (default), ``fixed``, ``quantile`` or ``test`` (sign-flip
    permutation test with BH FDR ``fdr`` and an MDS effect floor ``min_effect``). With
    ``bootstrap`` > 0, a Poisson bootstrap over pairs gives 95% CIs of MDS and group sizes and
    each feature's group stability. Writes ``features.csv``, ``summary.json`` and
    ``top/{image,text}_{idx,val}.npy`` into ``out``.
    """
    if rule not in (*RULES, "test"):
        raise MonoscopeError(f"unknown grouping rule {rule!r}")
    device = resolve_device(device)
    store = store if isinstance(store, Store) else Store(store)
    fmap_path = None
    if not isinstance(featuremap, FeatureMap):
        fmap_path = Path(featuremap)
        featuremap = load_featuremap(fmap_path)
    k = featuremap.n_features
    boot = PoissonBootstrap(k, bootstrap, seed) if bootstrap > 0 else None
    test = SignFlipTest(k, permutations, seed) if rule == "test" else None
    img, txt, ratios = collect_stats(
        store,
        featuremap,
        top_m=top_m,
        batch_size=batch_size,
        device=device,
        pair_stats=[a for a in (boot, test) if a is not None],
        progress=progress,
    )
    mu_img, mu_txt = img.mean, txt.mean
    alive = alive_mask(mu_img, mu_txt)
    if not alive.any():
        raise MonoscopeError("no feature is active on this store: nothing to analyse")
    mds = modality_dominance(mu_img, mu_txt, definition, ratios.mean)
    columns = {
        "feature": np.arange(k),
        "alive": alive.astype(int),
        "mu_img": mu_img,
        "mu_txt": mu_txt,
        "mds": mds,
    }
    if test is not None:
        q = benjamini_hochberg(np.where(alive, test.p_values(), np.nan))
        grouping = group_by_test(mds, q, fdr, min_effect, signed=definition == "signed")
        columns["q_value"] = q
    else:
        grouping = group_features(mds, rule, low=low, high=high, quantile=quantile)
    columns["group"] = grouping.groups
    groups: dict[str, Any] = {g: {"count": c} for g, c in grouping.counts().items()}
    if boot is not None:
        b = summarise_bootstrap(boot, grouping, definition, quantile=quantile)
        columns.update(mds_ci_low=b.mds_low, mds_ci_high=b.mds_high, stability=b.stability)
        for g in groups:
            groups[g]["ci"] = list(b.group_ci[g])
            members = b.stability[grouping.groups == g]
            groups[g]["mean_stability"] = float(members.mean()) if members.size else None
    columns.update(freq_img=img.frequency, freq_txt=txt.frequency)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for modality, stats in (("image", img), ("text", txt)):
        idx, val = stats.top()
        save_npy(out / "top" / f"{modality}_idx.npy", idx)
        save_npy(out / "top" / f"{modality}_val.npy", val)
    write_feature_table(out / "features.csv", columns)
    alive_mds = mds[alive]
    summary: dict[str, Any] = {
        "n_features": int(k),
        "n_alive": int(alive.sum()),
        "n_pairs": store.count,
        "mds": {
            "definition": definition,
            "mean": float(alive_mds.mean()),
            "std": float(alive_mds.std()),
        },
        "grouping": {"rule": grouping.rule, "low": grouping.low, "high": grouping.high},
        "groups": groups,
        "bootstrap": {"replicates": bootstrap, "kind": "poisson", "level": 0.95},
        "top_m": top_m,
        "store": str(store.path.resolve()),
        "featuremap": str(fmap_path.resolve()) if fmap_path else None,
        "featuremap_kind": featuremap.kind,
        "model": store.manifest.get("model"),
        "source": store.manifest.get("source"),
        "skipped": store.manifest.get("skipped"),
        "seed": seed,
        "versions": versions(),
    }
    if rule == "test":
        summary["grouping"].update(fdr=fdr, min_effect=min_effect, permutations=permutations)
    if fmap_path and (fmap_path / "metrics.json").is_file():
        summary["featuremap_metrics"] = read_json(fmap_path / "metrics.json")
    write_json(out / "summary.json", summary)
    return out


def write_feature_table(path: Path, columns: dict[str, np.ndarray]) -> Path:
    """Write the per-feature table as CSV (floats with 6 significant digits, NaN as empty)."""
    names = list(columns)
    rows = zip(*(columns[n] for n in names), strict=True)

    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "" if math.isnan(v) else f"{float(v):.6g}"
        return str(v)

    def write(p: Path) -> None:
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(names)
            w.writerows([fmt(v) for v in row] for row in rows)

    return atomic_write(path, write)


def read_feature_table(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``features.csv`` back into columns (numeric where possible)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        names = next(reader)
        cols = list(zip(*reader, strict=True)) or [() for _ in names]
    out: dict[str, np.ndarray] = {}
    for name, values in zip(names, cols, strict=True):
        try:
            out[name] = np.array([float(v) if v else np.nan for v in values])
        except ValueError:
            out[name] = np.array(values, dtype=str)
    return out
