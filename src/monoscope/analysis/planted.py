"""Planted ground truth (METHOD.md §5): synthetic paired embeddings with known answers.

A :class:`PlantedWorld` is a dictionary of unit atoms in R^d, each with a true modality
preference p (its MDS: the share of its expected activation mass on images) and a firing rate.
On every pair, atom j has an event with probability rate_j; the event shows on the image with
probability pi_img = p / max(p, 1 - p) and on the text with pi_txt = (1 - p) / max(p, 1 - p),
both from one uniform draw (so a balanced atom shows on both sides of the pair), with
log-normal magnitudes correlated between the two sides. Embeddings are the codes times the
atoms, plus a direction shared by both modalities (the cone), plus or minus half a gap vector
(the modality gap), plus isotropic noise, L2-normalised.

Profiles (:data:`PROFILES`):

- ``easy``: preferences exactly 0, 1/2 or 1 (a quarter of the atoms image-only, a quarter
  text-only), equal rates, a small gap, almost no noise.
- ``clip``: CLIP-like geometry at d = 128, calibrated to CLIP ViT-B/32 statistics: matched
  image-text cosine about 0.33, distance between the L2-normalised modality centroids about
  0.84 (Liang et al. 2022 report 0.82 on MSCOCO), each modality in a narrow cone (mean cosine
  between random embeddings of one modality about 0.55); continuous preferences (20% exactly 1, 20% exactly 0,
  60% uniform on [0, 1], so that mass lies near every threshold); Zipf(1.2) firing rates (many
  rare atoms); noise.
- ``null``: the ``clip`` geometry with every atom balanced (p = 1/2).

:func:`run_planted_benchmark` trains each method once, then scores every grouping rule on
``replicates`` fresh datasets drawn from the same world. The truth a feature's verdict and
interval are scored against is its *population MDS*: its MDS on a large fresh sample. Scores
(``methods.<method>``, and per rule ``methods.<method>.rules.<rule>``) are documented in
docs/method.md.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .._util import write_json
from ..config import ALL_RULES, DEFAULT_RULE, Rule
from ..featuremaps.base import FeatureMap
from ..featuremaps.ncl import NCLMap
from ..featuremaps.train import METHODS
from ..store import Store, StoreWriter
from .evidence import PairMoments, evidence, expected_counts
from .mds import GROUPS
from .rules import RuleSettings, apply_rule
from .uncertainty import SignFlipTest

DEFAULT_METHODS = METHODS
MATCH_MIN_COSINE = 0.7  # a learned direction this close to an atom can be matched to it
COVERAGE_MIN_FIRINGS = 20
BOUNDARY = 0.01  # a population MDS this close to 0 or 1 lies on the boundary (one-modality)
STRATA = ((1, 4), (5, 9), (10, 19), (20, 49), (50, 199), (200, None))

# Settings for the benchmark's short runs (1500 steps): the L1 and JumpReLU SAEs need a larger
# step than the library default to converge in that budget, the L1 coefficient suits the
# planted sparsity, and NCL's B x B logits make 256 pairs a batch the affordable size. TopK at
# 1.6 x the library step (0.0028 at d = 128): at the library step its spare latents survive as
# weak slot fillers on embeddings with few events (a tenth of an atom's activation, mostly one
# modality) whose confident verdicts cost macro-F1; at a larger step atom features take the
# spare codes and the fillers fall silent. 0.006 removes more of them but raised the false
# ImgD/TextD rate on ``null`` to 5.4% (docs/method.md, "Training settings"). Entries override
# train_featuremap's arguments; ``k`` defaults to :func:`planted_k`.
PLANTED_METHOD_KWARGS: dict[str, dict[str, Any]] = {
    "sae-relu": {"l1": 2.0, "lr": 0.01},
    "sae-jumprelu": {"lr": 0.01},
    "sae-topk": {"lr": 0.0045},
    "ncl": {"batch_size": 256},
}
TOPK_METHODS = ("sae-topk", "sae-batchtopk", "sae-matryoshka")  # the methods that take a k
MEAN_K_METHODS = ("sae-batchtopk", "sae-matryoshka")  # k is a mean over the batch


@dataclass(frozen=True)
class PlantedProfile:
    """How a planted world is drawn (see the module docstring)."""

    preference: str = "groups"  # groups (0, 1/2, 1) | continuous | balanced
    shared_fraction: float = 0.5  # groups: share of balanced atoms
    image_fraction: float = 0.25  # groups: share of image-only atoms
    zipf: float = 0.0  # firing-rate exponent; 0: equal rates
    zipf_offset: float = 0.0  # rate of the atom of rank j ~ (j + offset)^-zipf
    active: float = 8.0  # expected atom events per pair
    magnitude_sd: float = 0.35
    magnitude_corr: float = 0.8
    gap: float = 1.0  # norm of the gap vector between the modality means (before norming)
    cone: float = 0.0  # norm of the direction shared by both modalities
    noise: float = 0.02  # norm of the isotropic noise, roughly
    normalize: bool = True
    dim: int = 64  # the embedding dimension the profile is calibrated at


PROFILES: dict[str, PlantedProfile] = {
    "easy": PlantedProfile(),
    "clip": PlantedProfile(
        preference="continuous", zipf=1.2, gap=1.6, cone=1.3, noise=0.3, dim=128
    ),
    "null": PlantedProfile(preference="balanced", zipf=1.2, gap=1.6, cone=1.3, noise=0.3, dim=128),
}


@dataclass(frozen=True)
class PlantedTruth:
    """The answers: atoms (n_atoms, d), their true MDS (``preference``) and groups, firing
    rates, the gap vector (d,), and the codes (n_pairs, n_atoms) of the drawn pairs."""

    atoms: np.ndarray
    groups: np.ndarray
    offset: np.ndarray
    codes_image: np.ndarray = field(repr=False)
    codes_text: np.ndarray = field(repr=False)
    preference: np.ndarray | None = None
    rate: np.ndarray | None = None


@dataclass(frozen=True)
class PlantedWorld:
    """A planted dictionary and geometry; :meth:`sample` draws paired embeddings from it."""

    profile: PlantedProfile
    atoms: np.ndarray
    preference: np.ndarray
    rate: np.ndarray
    gap_dir: np.ndarray
    cone_dir: np.ndarray

    @classmethod
    def draw(cls, profile: PlantedProfile, dim: int, n_atoms: int, seed: int = 0) -> PlantedWorld:
        if not 0 <= profile.shared_fraction + profile.image_fraction <= 1:
            raise ValueError("shared_fraction + image_fraction must lie in [0, 1]")
        rng = np.random.default_rng([seed, 0])
        atoms = _unit(rng.standard_normal((n_atoms, dim)))
        gap_dir = _unit(rng.standard_normal(dim))
        cone = rng.standard_normal(dim)
        cone_dir = _unit(cone - (cone @ gap_dir) * gap_dir)
        if profile.preference == "groups":
            n_shared = round(n_atoms * profile.shared_fraction)
            n_image = round(n_atoms * profile.image_fraction)
            pref = np.r_[
                np.full(n_shared, 0.5), np.ones(n_image), np.zeros(n_atoms - n_shared - n_image)
            ]
        elif profile.preference == "continuous":
            kind = rng.random(n_atoms)
            pref = np.where(kind < 0.2, 1.0, np.where(kind < 0.4, 0.0, rng.random(n_atoms)))
        elif profile.preference == "balanced":
            pref = np.full(n_atoms, 0.5)
        else:
            raise ValueError(f"unknown preference model {profile.preference!r}")
        if profile.zipf > 0:
            ranks = np.arange(n_atoms) + 1.0 + profile.zipf_offset
            rate = rng.permutation(ranks**-profile.zipf)
        elif profile.preference == "groups":  # as many shared as specific events per side
            rate = np.where(pref == 0.5, 4.0 / max(n_shared, 1), 2.0 / max(n_image, 1))
        else:
            rate = np.ones(n_atoms)
        rate = np.minimum(rate * profile.active / rate.sum(), 1.0)
        return cls(profile, atoms, pref, rate, gap_dir, cone_dir)

    def groups(self, low: float = 0.25, high: float = 0.75) -> np.ndarray:
        """Each atom's true group under the thresholds ``low`` / ``high``."""
        g = np.full(len(self.preference), "CrossD", dtype=object)
        g[self.preference > high] = "ImgD"
        g[self.preference < low] = "TextD"
        return g.astype(str)

    def events_per_embedding(self) -> float:
        """Expected atom events per embedding, the mean over the two modalities of the number
        of atoms an embedding shows: sum_j rate_j (pi_img_j + pi_txt_j) / 2, where
        pi_img + pi_txt = 1 / max(p, 1 - p)."""
        shown = 1 / np.maximum(self.preference, 1 - self.preference)
        return float((self.rate * shown).sum() / 2)

    def sample(
        self, n_pairs: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(image, text, codes_image, codes_text)`` for ``n_pairs`` fresh pairs."""
        p = self.profile
        rng = np.random.default_rng([seed, 1])
        n_atoms, dim = self.atoms.shape
        scale = 1 / np.maximum(self.preference, 1 - self.preference)
        events = rng.random((n_pairs, n_atoms)) < self.rate
        u = rng.random((n_pairs, n_atoms))
        on_img = events & (u < self.preference * scale)
        on_txt = events & (u >= 1 - (1 - self.preference) * scale)
        g1 = rng.standard_normal((n_pairs, n_atoms))
        g2 = p.magnitude_corr * g1 + np.sqrt(1 - p.magnitude_corr**2) * rng.standard_normal(
            g1.shape
        )
        codes_img = np.where(on_img, np.exp(p.magnitude_sd * g1), 0.0)
        codes_txt = np.where(on_txt, np.exp(p.magnitude_sd * g2), 0.0)
        sigma = p.noise / np.sqrt(dim)
        common = p.cone * self.cone_dir
        half_gap = p.gap / 2 * self.gap_dir
        image = codes_img @ self.atoms + common + half_gap
        text = codes_txt @ self.atoms + common - half_gap
        image += sigma * rng.standard_normal(image.shape)
        text += sigma * rng.standard_normal(text.shape)
        if p.normalize:
            image, text = _unit(image), _unit(text)
        return image.astype(np.float32), text.astype(np.float32), codes_img, codes_txt


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def make_planted(
    dim: int = 64,
    n_atoms: int = 256,
    n_pairs: int = 20000,
    seed: int = 0,
    *,
    profile: str | PlantedProfile = "easy",
    **overrides: Any,
) -> tuple[np.ndarray, np.ndarray, PlantedTruth]:
    """Synthetic paired embeddings ``(image (n_pairs, d), text (n_pairs, d), truth)`` of a
    profile (a name in :data:`PROFILES` or a :class:`PlantedProfile`), with fields of the
    profile overridden by ``overrides`` (e.g. ``gap=0``, ``normalize=False``)."""
    world = PlantedWorld.draw(_profile(profile, overrides), dim, n_atoms, seed)
    image, text, codes_img, codes_txt = world.sample(n_pairs, seed)
    offset = world.profile.gap * world.gap_dir
    truth = PlantedTruth(
        world.atoms, world.groups(), offset, codes_img, codes_txt, world.preference, world.rate
    )
    return image, text, truth


def _profile(profile: str | PlantedProfile, overrides: dict[str, Any]) -> PlantedProfile:
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(
                f"unknown planted profile {profile!r}; expected one of {list(PROFILES)}"
            )
        profile = PROFILES[profile]
    return replace(profile, **overrides)


def geometry(image: np.ndarray, text: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Matched and unmatched image-text cosine, the distance between the normalised modality
    centroids, and each modality's cone (mean cosine between its random embeddings)."""
    img, txt = _unit(image.astype(np.float64)), _unit(text.astype(np.float64))
    shuffled = txt[np.random.default_rng(seed).permutation(len(txt))]
    c_img, c_txt = img.mean(0), txt.mean(0)
    return {
        "matched_cosine": float((img * txt).sum(1).mean()),
        "unmatched_cosine": float((img * shuffled).sum(1).mean()),
        "centroid_distance": float(np.linalg.norm(c_img - c_txt)),
        "cone_image": float(c_img @ c_img),
        "cone_text": float(c_txt @ c_txt),
    }


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
        pairs: list[dict[str, Any]] = [
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


def match_atoms(
    cos: np.ndarray, usable: np.ndarray, min_cosine: float = MATCH_MIN_COSINE
) -> np.ndarray:
    """One-to-one matching of atoms to features (Hungarian, maximising total cosine) among the
    ``usable`` features; (n_atoms,) matched feature index or -1 (no feature within
    ``min_cosine``)."""
    match = np.full(cos.shape[0], -1)
    cols = np.flatnonzero(usable)
    if cols.size == 0:
        return match
    rows, picked = linear_sum_assignment(-cos[:, cols])
    good = cos[rows, cols[picked]] >= min_cosine
    match[rows[good]] = cols[picked[good]]
    return match


def matched_f1(
    truth_groups: np.ndarray, match: np.ndarray, verdicts: np.ndarray, spurious: bool = True
) -> float:
    """Macro-F1 of verdicts under a one-to-one matching: an atom counts as found in group g when
    its matched feature's verdict is g (unmatched atoms are misses); a confident verdict on a
    feature matched to no atom is a false positive of its group (``spurious=False``: such
    features are left out)."""
    predicted = np.where(match >= 0, verdicts[np.maximum(match, 0)], "none")
    unmatched = np.full(len(verdicts), spurious)
    unmatched[match[match >= 0]] = False
    extra = verdicts[unmatched]
    scores = []
    for g in GROUPS:
        tp = float(((predicted == g) & (truth_groups == g)).sum())
        fp = float(((predicted == g) & (truth_groups != g)).sum() + (extra == g).sum())
        fn = float(((predicted != g) & (truth_groups == g)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


@torch.no_grad()
def encode_pairs(
    fmap: FeatureMap, image: np.ndarray, text: np.ndarray, batch: int = 16384
) -> PairMoments:
    """:class:`PairMoments` of a map's activations on paired embeddings, in batches."""
    from .evidence import MomentAccumulator

    acc = MomentAccumulator(fmap.n_features)
    for lo in range(0, len(image), batch):
        a = fmap.encode(torch.from_numpy(image[lo : lo + batch]), "image").float()
        b = fmap.encode(torch.from_numpy(text[lo : lo + batch]), "text").float()
        acc.update(a, b)
    return acc.result()


@torch.no_grad()
def _activations(
    fmap: FeatureMap, image: np.ndarray, text: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        fmap.encode(torch.from_numpy(image), "image").float(),
        fmap.encode(torch.from_numpy(text), "text").float(),
    )


def _region(mds: np.ndarray, low: float, high: float) -> np.ndarray:
    g = np.full(mds.shape, "CrossD", dtype=object)
    g[mds > high] = "ImgD"
    g[mds < low] = "TextD"
    return g.astype(str)


def score_featuremap(
    fmap: FeatureMap,
    world: PlantedWorld,
    *,
    n_pairs: int,
    replicates: int = 10,
    population: int | None = None,
    rules: tuple[Rule, ...] = ALL_RULES,
    seed: int = 0,
    rule_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score a trained map on a planted world: atom recovery, and per rule the verdicts,
    shares, intervals and counts over ``replicates`` fresh datasets of ``n_pairs`` pairs,
    against each feature's population MDS (on ``population`` fresh pairs, default 20 x n)."""
    fmap = fmap.cpu().eval()
    base = RuleSettings(**{"permutations": 500, **(rule_options or {})})
    population = population or 20 * n_pairs
    pop = encode_pairs(fmap, *world.sample(population, seed + 10_000)[:2])
    pop_mds = pop.mds
    cos = world.atoms @ feature_directions(fmap).T
    match = match_atoms(cos, pop.fired_any > 0)
    truth_groups = world.groups(base.low, base.high)
    on_atom = np.zeros(fmap.n_features, bool)
    on_atom[match[match >= 0]] = True
    duplicate = ~on_atom & (cos.max(0) >= MATCH_MIN_COSINE)  # near an atom another one took
    per_rule: dict[str, dict[str, list[Any]]] = {r: {} for r in rules}
    firings: list[np.ndarray] = []  # per replicate, of the alive features
    hits: list[np.ndarray] = []  # whether their interval covers the population MDS
    truths: list[np.ndarray] = []  # their population MDS
    for r in range(replicates):
        image, text, _, _ = world.sample(n_pairs, seed + 1 + r)
        a_img, a_txt = _activations(fmap, image, text)
        m = PairMoments.of(a_img.numpy(), a_txt.numpy())
        alive = (m.fired_any > 0) & np.isfinite(pop_mds)
        n_alive = max(int(alive.sum()), 1)
        p_values = None
        if "test" in rules:
            test = SignFlipTest(len(pop_mds), base.permutations, seed + r)
            test.update(a_img, a_txt)
            p_values = test.p_values()
        for rule in rules:
            grouping, _, ev = apply_rule(replace(base, rule=rule), m, m.mds, p_values)
            verdicts = grouping.groups
            acc = per_rule[rule]
            acc.setdefault("macro_f1", []).append(matched_f1(truth_groups, match, verdicts))
            acc.setdefault("macro_f1_atoms", []).append(
                matched_f1(truth_groups, match, verdicts, spurious=False)
            )
            true_region = _region(pop_mds, grouping.low, grouping.high)
            estimated = expected_counts(ev, mask=alive)
            errors, covered = [], []
            for g in GROUPS:
                true_count = int((alive & (true_region == g)).sum())
                if rule == "evidence":
                    share = estimated[g]["estimate"] / n_alive
                else:
                    share = float((alive & (verdicts == g)).sum()) / n_alive
                errors.append(abs(share - true_count / n_alive))
                c_lo, c_hi = estimated[g]["ci"]
                covered.append(c_lo <= true_count <= c_hi)
            acc.setdefault("share_error", []).append(max(errors))
            acc.setdefault("count_ci_coverage", []).append(float(np.mean(covered)))
            sided = alive & np.isin(verdicts, ["ImgD", "TextD"])
            acc.setdefault("false_group_rate", []).append(float(sided.sum()) / n_alive)
            acc.setdefault("false_group_rate_atoms", []).append(
                float(sided[on_atom].sum()) / max(int((alive & on_atom).sum()), 1)
            )
            acc.setdefault("confident_share", []).append(
                float((alive & np.isin(verdicts, GROUPS)).sum()) / n_alive
            )
            spurious = alive & ~on_atom & np.isin(verdicts, GROUPS)
            acc.setdefault("spurious_confident", []).append(int(spurious.sum()))
            acc.setdefault("duplicate_confident", []).append(int((spurious & duplicate).sum()))
        ev = evidence(m, base.low, base.high, prior=base.pseudo_firings)
        inside = (ev.ci_low <= pop_mds) & (pop_mds <= ev.ci_high)
        firings.append(m.fired_any[alive])
        hits.append(inside[alive])
        truths.append(pop_mds[alive])
    fired, hit, truth = np.concatenate(firings), np.concatenate(hits), np.concatenate(truths)
    by_stratum = {}
    for lo_f, hi_f in STRATA:
        sel = (fired >= lo_f) & (fired <= (hi_f or np.inf))
        name = f"{lo_f}+" if hi_f is None else f"{lo_f}-{hi_f}"
        by_stratum[name] = {
            "n": int(sel.sum()),
            "coverage": float(hit[sel].mean()) if sel.any() else None,
        }
    well = fired >= COVERAGE_MIN_FIRINGS
    coverage = float(hit[well].mean()) if well.any() else None
    edge = well & ((truth < BOUNDARY) | (truth > 1 - BOUNDARY))
    interior = well & ~edge
    scores: dict[str, Any] = {
        "atom_recovery_mmcs": float(cos.max(1).mean()),
        "atoms_matched": int((match >= 0).sum()),
        "alive_features": int((pop.fired_any > 0).sum()),
        "n_features": int(fmap.n_features),
        "mds_ci_coverage": coverage,
        "mds_ci_coverage_by_firings": by_stratum,
        # features with >= 20 firings whose population MDS is inside (0.01, 0.99) / at an end
        "mds_ci_coverage_interior": float(hit[interior].mean()) if interior.any() else None,
        "mds_ci_coverage_boundary": float(hit[edge].mean()) if edge.any() else None,
        "mds_ci_boundary_share": float(edge.sum() / well.sum()) if well.any() else None,
        "rules": {},
    }
    for rule in rules:
        acc = per_rule[rule]
        scores["rules"][rule] = {
            "macro_f1": float(np.mean(acc["macro_f1"])),
            "macro_f1_atoms": float(np.mean(acc["macro_f1_atoms"])),
            "share_error": float(np.mean(acc["share_error"])),
            "mds_ci_coverage": coverage,
            "count_ci_coverage": float(np.mean(acc["count_ci_coverage"])),
            "false_group_rate": float(np.mean(acc["false_group_rate"])),
            "false_group_rate_atoms": float(np.mean(acc["false_group_rate_atoms"])),
            "confident_share": float(np.mean(acc["confident_share"])),
            "spurious_confident": float(np.mean(acc["spurious_confident"])),
            "duplicate_confident": float(np.mean(acc["duplicate_confident"])),
        }
    return scores


def planted_k(world: PlantedWorld, method: str) -> int:
    """The TopK family's k for a world, plus one code for the modality's constant offset (cone
    and half gap) that every embedding carries.

    BatchTopK and Matryoshka spend k codes per embedding *on average*: k is the expected atom
    events per embedding, rounded (``clip``: 4.0 events, k 5; ``null``: 7.0, k 8). With a
    larger k the surplus of the batch's budget goes to split atoms and mixtures of atoms whose
    confident verdicts are false positives of the one-to-one macro-F1. TopK gives *every*
    embedding k codes, so its k must cover event-rich embeddings: the expected events per
    pair, rounded (``clip`` and ``null``: 7.0, k 8), of which an embedding shows a subset.
    """
    if method in MEAN_K_METHODS:
        return round(world.events_per_embedding()) + 1
    return round(float(world.rate.sum())) + 1


def run_planted_benchmark(
    out_dir: str | Path,
    seed: int = 0,
    dim: int | None = None,
    atoms: int = 256,
    n_pairs: int = 20000,
    methods: tuple[str, ...] | list[str] = DEFAULT_METHODS,
    *,
    profile: str = "clip",
    replicates: int = 5,
    latents: int | None = None,
    k: int | None = None,
    steps: int = 1500,
    batch_size: int = 1024,
    progress: bool = False,
    planted_kwargs: dict[str, Any] | None = None,
    method_kwargs: dict[str, dict[str, Any]] | None = None,
    rule_options: dict[str, Any] | None = None,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Train each method on one planted store, score it on ``replicates`` fresh datasets and
    write ``out_dir/planted.json``.

    Returns ``{"profile", "default_rule", "methods": {method: scores}, "settings"}``; the maps
    are kept in ``out_dir/maps/<method>``. ``latents`` defaults to 2 x atoms; ``k`` (the
    TopK family's active latents per embedding) to :func:`planted_k` of the world and method;
    ``method_kwargs`` (per method) update :data:`PLANTED_METHOD_KWARGS`. ``threads``: torch
    threads while it runs (restored after; None: leave as is): one thread avoids OpenMP stalls
    on shared CPUs.
    """
    from ..featuremaps.base import load_featuremap
    from ..featuremaps.train import train_featuremap

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        out_dir = Path(out_dir)
        prof = _profile(profile, dict(planted_kwargs or {}))
        dim = dim or prof.dim
        world = PlantedWorld.draw(prof, dim, atoms, seed)
        image, text, _, _ = world.sample(n_pairs, seed)
        store = write_planted_store(out_dir / "store", image, text)
        latents = latents or 2 * atoms
        ks = {m: k or planted_k(world, m) for m in methods}
        kwargs = {
            m: {**PLANTED_METHOD_KWARGS.get(m, {}), **(method_kwargs or {}).get(m, {})}
            for m in methods
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
                    "k": ks[method],
                    "steps": steps,
                    "batch_size": batch_size,
                    "seed": seed,
                    "overwrite": True,
                    "checkpoint_every": 0,
                    "progress": progress,
                    **kwargs[method],
                },
            )
            scores = score_featuremap(
                load_featuremap(path),
                world,
                n_pairs=n_pairs,
                replicates=replicates,
                seed=seed,
                rule_options=rule_options,
            )
            scores["seconds"] = round(time.perf_counter() - t0, 2)
            results[method] = scores
        report = {
            "profile": profile,
            "default_rule": DEFAULT_RULE,
            "methods": results,
            "settings": {
                "seed": seed,
                "dim": dim,
                "atoms": atoms,
                "n_pairs": n_pairs,
                "replicates": replicates,
                "latents": latents,
                "k": {m: ks[m] for m in methods if m in TOPK_METHODS},
                "steps": steps,
                "batch_size": batch_size,
                "planted": asdict(prof),
                "geometry": geometry(image, text),
                "method_kwargs": kwargs,
                "rule_options": rule_options or {},
                "true_group_counts": {g: int((world.groups() == g).sum()) for g in GROUPS},
            },
        }
        write_json(out_dir / "planted.json", report)
        return report
    finally:
        torch.set_num_threads(previous)


TABLE_COLUMNS = (
    ("F1 1:1", "macro_f1"),
    ("F1 atoms", "macro_f1_atoms"),
    ("share err", "share_error"),
    ("CI cov", "mds_ci_coverage"),
    ("count cov", "count_ci_coverage"),
    ("false grp", "false_group_rate"),
    ("confident", "confident_share"),
)


def format_table(report: dict[str, Any]) -> str:
    """The benchmark as a plain-text table: one row per method and rule."""
    rows = [
        f"planted profile {report['profile']} (default rule: {report['default_rule']})",
        f"{'method':<15}{'rule':<10}{'mmcs':>6}" + "".join(f"{t:>10}" for t, _ in TABLE_COLUMNS),
    ]
    for method, s in report["methods"].items():
        for rule, r in s["rules"].items():
            cells = ("-" if r[key] is None else f"{r[key]:.3f}" for _, key in TABLE_COLUMNS)
            rows.append(
                f"{method:<15}{rule:<10}{s['atom_recovery_mmcs']:>6.3f}"
                + "".join(f"{c:>10}" for c in cells)
            )
    return "\n".join(rows)
