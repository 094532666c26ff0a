"""The analyze stage: one streaming pass over a store through a feature map.

The pass feeds every batch of paired activations (and the embeddings they came from) to a set
of accumulators: per-modality top-m heaps, the pair moments (sums, squares, image x text
products, firing counts) behind MDS, its intervals and the cross-modal correlation, MDS ratio
sums, the sign-flip test and the MonoSemanticity sums. Memory is
O(K * (m + B + d)), independent of the number of pairs.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

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
from ..artefacts import HISTOGRAMS_FILE, read_feature_table  # noqa: F401 (also importable here)
from ..config import DEFAULT_RULE, MIN_FIRINGS, PSEUDO_FIRINGS, AnalyzeOptions
from ..featuremaps import FeatureMap, load_featuremap
from ..featuremaps.center import CenteredMap, center_featuremap
from ..integrity import analysis_inputs, check_featuremap_for_store
from ..locks import locked
from ..outputs import prepare_analysis_out
from ..store import Store
from .evidence import (
    DEAD,
    RARE,
    UNDETERMINED,
    Evidence,
    MomentAccumulator,
    expected_counts,
)
from .gap import GapAccumulator
from .histograms import HistogramAccumulator
from .mds import (
    DEFINITIONS,
    GROUPS,
    Grouping,
    alive_mask,
    is_bimodal,
    modality_dominance,
    unit_scale,
)
from .monosemanticity import (
    BootstrapMeans,
    MSAccumulator,
    embsim,
    mean_pairwise_cosine,
    random_embsim,
)
from .naming import feature_names
from .rules import apply_rule
from .sparse import Encoder, SparseCodes, sparse_encoder
from .stats import FeatureStats, RatioStats, column_sums
from .threads import one_thread
from .uncertainty import SignFlipTest

M_SWEEP = (5, 10, 20, 50)
Codes = torch.Tensor | SparseCodes


@dataclass(frozen=True)
class Batch:
    """One batch of pairs: row offset, embeddings and feature activations of both modalities,
    as dense (B, K) tensors or, from maps with sparse codes, as :class:`SparseCodes`
    (``codes_*``); ``a_img`` / ``a_txt`` are always dense (made on first use)."""

    start: int
    x_img: np.ndarray
    x_txt: np.ndarray
    codes_img: Codes
    codes_txt: Codes

    @cached_property
    def a_img(self) -> torch.Tensor:
        return _dense(self.codes_img)

    @cached_property
    def a_txt(self) -> torch.Tensor:
        return _dense(self.codes_txt)


def _dense(codes: Codes) -> torch.Tensor:
    return codes.dense() if isinstance(codes, SparseCodes) else codes


def stream(
    store: Store,
    fmap: FeatureMap,
    consumers: Sequence[Callable[[Batch], None]],
    *,
    batch_size: int = 4096,
    device: str = "cpu",
    progress: bool = True,
) -> None:
    """Pass the store through ``fmap`` once, shard by shard, calling each consumer per batch."""
    if store.dim != fmap.dim:
        raise MonoscopeError(
            f"the store has dimension {store.dim} but the feature map expects {fmap.dim}"
        )
    fmap = fmap.to(device).eval()
    sparse = sparse_encoder(fmap)
    bar = tqdm(total=store.count, unit="pair", desc="analyze", disable=not progress)
    with torch.inference_mode():
        for shard in store.shards():
            for lo in range(0, len(shard.image), batch_size):
                x_img = np.array(shard.image[lo : lo + batch_size], dtype=np.float32)
                x_txt = np.array(shard.text[lo : lo + batch_size], dtype=np.float32)
                a_img = _encode(fmap, sparse, x_img, "image", device)
                a_txt = _encode(fmap, sparse, x_txt, "text", device)
                batch = Batch(shard.start + lo, x_img, x_txt, a_img, a_txt)
                with one_thread() if sparse else nullcontext():
                    for consume in consumers:
                        consume(batch)
                bar.update(len(x_img))
    bar.close()


def _encode(
    fmap: FeatureMap, sparse: Encoder | None, x: np.ndarray, modality: str, device: str
) -> Codes:
    x_dev = torch.from_numpy(x).to(device)
    if sparse is not None:
        c = sparse(x_dev, modality)
        with one_thread():
            entries = SparseCodes(c.rows.cpu(), c.cols.cpu(), c.vals.float().cpu(), c.shape)
            finite = entries.is_finite()
        codes: Codes = entries
    else:
        dense = fmap.encode(x_dev, modality).float().cpu()
        finite = bool(torch.isfinite(column_sums(dense)).all())  # a NaN or inf reaches its sum
        codes = dense
    if not finite:
        raise MonoscopeError("the feature map produced non-finite activations")
    return codes


@locked()
def analyze(
    store: str | Path | Store,
    featuremap: str | Path | FeatureMap,
    out: str | Path,
    *,
    top_m: int = 20,
    definition: str = "ratio-of-means",
    rule: str = DEFAULT_RULE,
    low: float = 0.25,
    high: float = 0.75,
    quantile: float = 0.2,
    fdr: float = 0.05,
    min_firings: int = MIN_FIRINGS,
    pseudo_firings: float = PSEUDO_FIRINGS,
    min_effect: float = 0.1,
    permutations: int = 1000,
    null_sets: int = 1000,
    batch_size: int = 4096,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    center: str | None = None,
    gap_bootstrap: int = 200,
    force: bool = False,
    overwrite: bool = False,
) -> Path:
    """Score every feature's MDS with a 95% interval, give each a verdict, find their top-m
    samples and measure their monosemanticity.

    ``rule``: ``evidence`` (default: ImgD / TextD / CrossD when the feature's own evidence puts
    its MDS above ``high`` / below ``low`` / between them, Benjamini-Hochberg at ``fdr``;
    ``undetermined`` when it does not; ``rare`` below ``min_firings`` firing pairs), or the
    point-estimate rules ``std`` (the paper's), ``fixed``, ``quantile``, or ``test`` (sign-flip
    permutation test with BH FDR ``fdr`` and an MDS effect floor ``min_effect``). Intervals are
    Fieller intervals with ``pseudo_firings`` pseudo-pairs per modality
    (:mod:`monoscope.analysis.evidence`). EmbSim uses the store's own embeddings as the
    evaluator and ``null_sets`` random m-sets as its null. Writes ``features.csv``,
    ``summary.json`` and ``top/{image,text}_{idx,val}.npy`` (the ``max(top_m, 50)`` largest
    activations, sorted).
    ``center`` (``mean`` or ``gap``) centres the embeddings on this store's modality means
    before the feature map (a map trained with ``--center`` centres on its own).
    ``gap_bootstrap`` Poisson replicates give the modality gap's intervals.
    The files of an earlier analysis in ``out`` are removed first (refused if not
    ``overwrite``); a feature map trained on another model's embeddings is refused unless
    ``force``. summary.json records the fingerprints of the store and the feature map.
    """
    given = {
        name: value for name, value in locals().items() if name in AnalyzeOptions.field_names()
    }
    if definition not in DEFINITIONS:
        raise MonoscopeError(f"unknown MDS definition {definition!r}")
    try:
        options = AnalyzeOptions(**given)  # also the verdict rule's settings
    except ValueError as e:
        raise MonoscopeError(str(e)) from None
    device = resolve_device(device)
    store = store if isinstance(store, Store) else Store(store)
    fmap_path = None
    if not isinstance(featuremap, FeatureMap):
        fmap_path = Path(featuremap)
        featuremap = load_featuremap(fmap_path)
    note = check_featuremap_for_store(fmap_path, store, force) if fmap_path else None
    if store.count < min(M_SWEEP):
        raise MonoscopeError(
            f"{store.path}: {store.count} pairs; an analysis needs at least {min(M_SWEEP)}"
        )
    out = Path(out)
    prepare_analysis_out(out, overwrite)
    featuremap = center_featuremap(featuremap, store, center)
    k, keep = featuremap.n_features, max(top_m, *M_SWEEP)
    img, txt = FeatureStats(k, keep), FeatureStats(k, keep)
    ratios = RatioStats(k) if definition == "mean-of-ratios" else None
    ms_img, ms_txt = MSAccumulator(k, store.dim), MSAccumulator(k, store.dim)
    moments_acc = MomentAccumulator(k)
    test = SignFlipTest(k, permutations, seed) if rule == "test" else None
    gap = GapAccumulator(store.dim, gap_bootstrap, seed)
    hist = HistogramAccumulator(k)
    consumers: list[Callable[[Batch], None]] = [
        lambda b: gap.update(b.x_img, b.x_txt),
        lambda b: img.update(b.codes_img, b.start),
        lambda b: txt.update(b.codes_txt, b.start),
        lambda b: ms_img.update(b.codes_img, b.x_img),
        lambda b: ms_txt.update(b.codes_txt, b.x_txt),
        lambda b: hist.update(b.codes_img, b.codes_txt),
        *(
            partial(lambda acc, b: acc.update(b.codes_img, b.codes_txt), acc)
            for acc in (moments_acc, ratios, test)
            if acc is not None
        ),
    ]
    stream(store, featuremap, consumers, batch_size=batch_size, device=device, progress=progress)

    moments = moments_acc.result()
    n = max(moments.n, 1)
    mu_img, mu_txt = moments.sum_img / n, moments.sum_txt / n
    alive = alive_mask(mu_img, mu_txt)
    if not alive.any():
        raise MonoscopeError("no feature is active on this store: nothing to analyse")
    mds = modality_dominance(mu_img, mu_txt, definition, ratios.mean if ratios else None)
    try:
        grouping, q, ev = apply_rule(
            options, moments, unit_scale(mds, definition), test.p_values() if test else None
        )
    except ValueError as e:
        raise MonoscopeError(str(e)) from None
    to_def = (lambda r: 2 * r - 1) if definition == "signed" else (lambda r: r)
    columns: dict[str, np.ndarray] = {
        "feature": np.arange(k),
        "alive": alive.astype(int),
        "mu_img": mu_img,
        "mu_txt": mu_txt,
        "mds": mds,
        "mds_ci_low": to_def(ev.ci_low),
        "mds_ci_high": to_def(ev.ci_high),
    }
    columns.update(p_img=ev.p_img, p_txt=ev.p_txt)
    if q is not None:
        columns["q_value"] = q
    columns["group"] = grouping.groups
    columns["confidence"] = _confidence(ev, grouping.groups)
    columns.update(
        fired_img=moments.fired_img,
        fired_txt=moments.fired_txt,
        freq_img=moments.fired_img / n,
        freq_txt=moments.fired_txt / n,
    )
    groups = _verdict_summary(ev, grouping, alive)

    out.mkdir(parents=True, exist_ok=True)
    tops = {}
    for modality, stats in (("image", img), ("text", txt)):
        tops[modality] = stats.top()
        save_npy(out / "top" / f"{modality}_idx.npy", tops[modality][0])
        save_npy(out / "top" / f"{modality}_val.npy", tops[modality][1])
    hist.save(out / HISTOGRAMS_FILE)
    means = BootstrapMeans(seed=seed)
    mono, mono_summary = _monosemanticity(
        store, {m: tops[m][0] for m in tops}, grouping.groups, top_m, null_sets, seed, means
    )
    columns.update(mono)
    columns["name"] = feature_names(store, tops["image"][0], tops["text"][0], grouping.groups)
    columns.update(ms_img=ms_img.scores(), ms_txt=ms_txt.scores(), xcorr=moments.correlation)
    for name in ("ms_img", "ms_txt", "xcorr"):
        mono_summary[name] = _per_group(columns[name], grouping.groups, means)
    write_feature_table(out / "features.csv", columns)
    alive_mds = mds[alive]
    summary: dict[str, Any] = {
        "format_version": 2,
        "n_features": int(k),
        "n_alive": int(alive.sum()),
        "n_pairs": store.count,
        "mds": {
            "definition": definition,
            "mean": float(alive_mds.mean()),
            "std": float(alive_mds.std()),
            "bimodal": is_bimodal(unit_scale(alive_mds, definition)),
        },
        "grouping": {
            "rule": grouping.rule,
            "low": grouping.low,
            "high": grouping.high,
            "description": describe_rule(grouping, fdr, min_firings, min_effect),
        },
        "groups": groups,
        "intervals": {
            "method": "fieller",
            "level": 0.95,
            "pseudo_firings": pseudo_firings,
            "of": "ratio-of-means MDS" + (" (as signed MDS)" if definition == "signed" else ""),
        },
        "warnings": _warnings(grouping, groups, alive, learned=featuremap.trainable),
        "metrics": mono_summary,
        "modality_gap": gap.result(),
        "center": (
            {**featuremap.describe(), "means_from": "this store" if center else "training store"}
            if isinstance(featuremap, CenteredMap)
            else None
        ),
        "top_m": top_m,
        "top_kept": keep,
        "store": str(store.path.resolve()),
        "featuremap": str(fmap_path.resolve()) if fmap_path else None,
        "featuremap_kind": featuremap.kind,
        "model": store.manifest.get("model"),
        "source": store.manifest.get("source"),
        "skipped": store.manifest.get("skipped"),
        "seed": seed,
        "options": options.to_dict(),
        "versions": versions(),
        **analysis_inputs(store, fmap_path, note),
    }
    if rule == "evidence":
        summary["grouping"].update(fdr=fdr, min_firings=min_firings)
    elif rule == "test":
        summary["grouping"].update(fdr=fdr, min_effect=min_effect, permutations=permutations)
    elif rule == "quantile":
        summary["grouping"]["quantile"] = quantile
    if fmap_path and (fmap_path / "metrics.json").is_file():
        summary["featuremap_metrics"] = read_json(fmap_path / "metrics.json")
    for message in summary["warnings"]:
        warnings.warn(message, stacklevel=2)
    write_json(out / "summary.json", summary)
    return out


def _confidence(ev: Evidence, groups: np.ndarray) -> np.ndarray:
    """The confidence that each feature's MDS lies in its group's region (for features with no
    confident group: in its most likely region)."""
    probs = ev.region_probs()
    stacked = np.stack([probs[g] for g in GROUPS])
    out = np.nanmax(np.where(np.isfinite(stacked), stacked, -np.inf), axis=0)
    for i, g in enumerate(GROUPS):
        out = np.where(groups == g, stacked[i], out)
    return np.where(groups == DEAD, np.nan, out)


def _verdict_summary(ev: Evidence, grouping: Grouping, alive: np.ndarray) -> dict[str, Any]:
    """Per group: confident verdicts (``count``) and the estimated number of alive features
    whose MDS lies in the group's region (``estimate`` with a 95% ``ci``); counts of
    ``undetermined`` and ``rare`` features."""
    estimated = expected_counts(ev, mask=alive)
    out: dict[str, Any] = {}
    for g in GROUPS:
        out[g] = {"count": int((grouping.groups == g).sum()), **estimated[g]}
    for label in (UNDETERMINED, RARE):
        out[label] = {"count": int((grouping.groups == label).sum())}
    return out


def describe_rule(grouping: Grouping, fdr: float, min_firings: int, min_effect: float) -> str:
    """The grouping rule in words, with its thresholds."""
    lo, hi = f"{grouping.low:.3g}", f"{grouping.high:.3g}"
    if grouping.rule == "evidence":
        return (
            f"ImgD when a feature's MDS is shown to exceed {hi}, TextD when shown to be below {lo}, "
            f"CrossD when shown to lie between them (one-sided Fieller tests, false claims "
            f"controlled at {fdr:g} by Benjamini-Hochberg); undetermined when the evidence does "
            f"not decide; rare when the feature fires on fewer than {min_firings} pairs"
        )
    if grouping.rule == "test":
        return (
            f"ImgD / TextD when the paired sign-flip test is significant at FDR {fdr:g} and MDS is "
            f"at least {min_effect:g} from 0.5 (beyond {hi} / below {lo}); else CrossD"
        )
    how = {
        "std": "mean +- one std of alive MDS (the paper's rule; relative to the data)",
        "fixed": "fixed thresholds",
        "quantile": "quantiles of alive MDS",
    }[grouping.rule]
    return f"ImgD when MDS > {hi}, TextD when MDS < {lo}, else CrossD ({how}; point estimates)"


def _warnings(
    grouping: Grouping, groups: dict[str, Any], alive: np.ndarray, learned: bool
) -> list[str]:
    """What makes this analysis weak; ``learned``: a trained map (fewer latents can help)."""
    notes = list(grouping.warnings)
    n_alive = max(int(alive.sum()), 1)
    rare = groups[RARE]["count"]
    if rare > n_alive / 2:
        notes.append(
            f"{rare} of {n_alive} alive features are rare (fire on too few pairs for a verdict): "
            "this analysis says little; use more pairs" + (" or fewer latents" if learned else "")
        )
    if grouping.rule == "evidence" and groups[UNDETERMINED]["count"] > n_alive / 2:
        notes.append(
            f"{groups[UNDETERMINED]['count']} of {n_alive} alive features are undetermined: "
            "the data do not decide most verdicts"
        )
    return notes


def _per_group(values: np.ndarray, groups: np.ndarray, means: BootstrapMeans) -> dict[str, Any]:
    """Mean and 95% CI of a per-feature metric within each group and over all alive features."""
    out = {g: means(values[groups == g]) for g in GROUPS}
    out["all"] = means(values[groups != "dead"])
    return out


def top_embsim(
    store: Store, modality: str, top_idx: np.ndarray, ms: Sequence[int], chunk: int = 256
) -> np.ndarray:
    """(len(ms), K) EmbSim of each feature's top-m samples for every m in ``ms``, evaluated with
    the store's own embeddings (one gather of the top max(ms) rows per feature chunk)."""
    out = np.full((len(ms), len(top_idx)), np.nan)
    m_max = max(ms)
    for lo in range(0, len(top_idx), chunk):
        idx = top_idx[lo : lo + chunk, :m_max]
        out[:, lo : lo + chunk] = embsim(store.rows(modality, idx), idx >= 0, ms)
    return out


def _monosemanticity(
    store: Store,
    tops: dict[str, np.ndarray],
    groups: np.ndarray,
    top_m: int,
    null_sets: int,
    seed: int,
    means: BootstrapMeans,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """EmbSim per feature and modality (m = ``top_m``), its lift over the random-set mean, the
    share of features above the random sets' 95th percentile, and the m-sweep; group means
    with ``means``."""
    columns: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {"evaluator": "store embeddings", "m_sweep": {}}
    for modality, short in (("image", "img"), ("text", "txt")):
        gather = partial(store.rows, modality)
        sample = gather(np.random.default_rng(seed).permutation(store.count)[:20000])
        baseline = mean_pairwise_cosine(sample)
        summary[f"random_embsim_{short}"] = {"mean": baseline}
        ms = [m for m in sorted({top_m, *M_SWEEP}) if m <= store.count]
        all_sims = top_embsim(store, modality, tops[modality], ms)
        for m, sims in zip(ms, all_sims, strict=True):
            sweep = summary["m_sweep"].setdefault(str(m), {})
            sweep[f"embsim_{short}"] = _per_group(sims, groups, means)
            if m == top_m:
                null = random_embsim(gather, store.count, m, null_sets, seed)
                p95 = float(np.percentile(null, 95))
                summary[f"random_embsim_{short}"]["p95"] = p95
                columns[f"embsim_{short}"] = sims
                columns[f"lift_{short}"] = sims - baseline
                summary[f"embsim_{short}"] = sweep[f"embsim_{short}"]
                summary[f"lift_{short}"] = _per_group(sims - baseline, groups, means)
                alive = (groups != "dead") & np.isfinite(sims)
                summary[f"share_above_random_p95_{short}"] = (
                    float((sims[alive] > p95).mean()) if alive.any() else None
                )
    return columns, summary


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
