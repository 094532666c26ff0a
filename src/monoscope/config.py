"""Typed, frozen settings of every stage and of every feature-map kind: one home per option.

Each field carries its help text, its default and (in ``metadata``) how the command line spells
and checks it; :mod:`monoscope.cli_config` turns a config into ``argparse`` options, so that
``monoscope <stage> --help`` lists exactly these fields. The stage functions of :mod:`monoscope.api`
keep their keyword arguments (a test keeps their names and defaults equal to the fields here),
and every config round-trips through its JSON (:meth:`Settings.to_dict`, :meth:`Settings.from_dict`).

This module imports neither torch nor numpy: ``--help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from . import cli_types as T
from ._util import MonoscopeError

# --- option vocabularies (the CLI's choices come from these Literals) -------------------------
Rule = Literal["evidence", "std", "fixed", "quantile", "test"]
Definition = Literal["ratio-of-means", "mean-of-ratios", "signed"]
Center = Literal["mean", "gap"]
Method = Literal[
    "identity",
    "sae-relu",
    "sae-topk",
    "sae-batchtopk",
    "sae-jumprelu",
    "sae-matryoshka",
    "ncl",
]
Profile = Literal["easy", "clip", "null"]
Modality = Literal["image", "text"]
Objective = Literal["zeroshot", "matching"]
SaeImportFormat = Literal["saelens", "sparsify", "saev", "dictionary_learning"]
SaeExportFormat = Literal["saelens"]
Decoder = Literal["auto", "dense", "sparse"]
IdentityMode = Literal["sign-split", "abs"]

ALL_RULES: tuple[Rule, ...] = typing.get_args(Rule)
DEFAULT_RULE = "evidence"
METHODS: tuple[str, ...] = typing.get_args(Method)
OBJECTIVES: tuple[str, ...] = typing.get_args(Objective)
PSEUDO_FIRINGS = 0.5  # chosen on the planted clip profile (docs/method.md)
MIN_FIRINGS = 40  # chosen on the planted clip and null profiles (docs/method.md)
DEFAULT_MAX_PIXELS = 64_000_000  # larger images are skipped undecoded (monoscope.data.pixels)

GENDER_TEMPLATES = ("a photo of a {}",)  # the bundled emoji's: monoscope.data.emoji.GENDER
CLASS_TEMPLATES = ("a photo of {}",)  # class prompt templates when none are given
EPSILONS = (1.0, 2.0, 4.0, 8.0)  # L-inf budgets, in units of 1/255
ALPHAS = (0.0, 0.15, 0.3, 0.6, 1.0)


def option(
    default: Any = MISSING,
    help: str = "",
    *,
    parse: Callable[[str], Any] | None = None,
    flag: str | None = None,
    positional: bool = False,
    repeat: bool = False,
    metavar: str | None = None,
    const: Any = MISSING,
    saved: bool = True,
) -> Any:
    """A config field with its command-line spelling.

    ``parse``: the argparse validator (default: from the type); ``flag``: the flag when it is not
    ``--field-name`` (for booleans that default to true: the flag that turns them off);
    ``repeat``: a list option given once per value (``--template A --template B``); ``const``: the
    value of a bare ``--flag`` for an optional value; ``saved``: part of the saved
    hyperparameters (a kind's options only).
    """
    meta = {
        "help": help,
        "parse": parse,
        "flag": flag,
        "positional": positional,
        "repeat": repeat,
        "metavar": metavar,
        "const": const,
        "saved": saved,
    }
    if isinstance(default, list):
        raise TypeError("use a tuple default (configs are frozen)")
    return field(default=default, metadata=meta)


def templates_option(default: tuple[str, ...], what: str) -> Any:
    """Prompt templates with one ``{}`` slot, given once per template (``--template A``)."""
    return option(
        default,
        f"{what} template with {{}} (repeatable)",
        flag="--template",
        repeat=True,
        parse=T.template,
    )


S = TypeVar("S", bound="Settings")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Base of every config: JSON round trip and keyword views. Paths given as strings and
    lists given for tuples are converted, so equal settings make equal configs."""

    def __post_init__(self) -> None:
        for name, hint in _hints(type(self)).items():
            object.__setattr__(self, name, _from_json(hint, getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, tuples as lists, nested configs as dicts."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
        """The config a :meth:`to_dict` wrote (unknown keys are an error, missing ones default)."""
        unknown = sorted(set(data) - set(_hints(cls)))
        if unknown:
            raise MonoscopeError(f"{cls.__name__}: unknown option(s) {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The field names."""
        return tuple(_hints(cls))

    @classmethod
    def record(cls, values: Mapping[str, Any], *exclude: str) -> dict[str, Any]:
        """JSON of a stage call's ``values`` (its keywords) for the fields of ``cls``, less
        ``exclude`` (the inputs, recorded beside with their fingerprints)."""
        return {
            n: _jsonable(values[n]) for n in cls.field_names() if n in values and n not in exclude
        }

    def keywords(self, *exclude: str) -> dict[str, Any]:
        """The fields as keyword arguments of the stage function, less ``exclude``."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in exclude
        }


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type[Settings]) -> dict[str, Any]:
    """The type of every field of ``cls`` (resolved once per class)."""
    if cls not in _HINTS:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return _HINTS[cls]


def _jsonable(v: Any) -> Any:
    if isinstance(v, Settings):
        return v.to_dict()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return v


def _from_json(hint: Any, v: Any) -> Any:
    """``v`` as the type ``hint`` names, where JSON or a caller gave a looser one."""
    if v is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and args:
        return _from_json(args[0], v)
    if isinstance(hint, type) and issubclass(hint, Settings) and isinstance(v, Mapping):
        return hint.from_dict(v)
    if hint is Path and isinstance(v, str):
        return Path(v)
    if origin is tuple and isinstance(v, list | tuple):
        return tuple(_from_json(args[0], x) for x in v) if args else tuple(v)
    return v


# --- shared run options ----------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Device(Settings):
    device: str = option("auto", "cpu, cuda[:N], mps or auto", parse=T.device)


@dataclass(frozen=True, kw_only=True)
class Progress(Settings):
    progress: bool = option(True, "no progress bars", flag="--quiet")


@dataclass(frozen=True, kw_only=True)
class Seeded(Settings):
    seed: int = option(0, "random seed", parse=T.seed)


@dataclass(frozen=True, kw_only=True)
class Run(Device, Seeded, Progress):
    """Device, seed and progress bars: what every long stage takes."""


@dataclass(frozen=True, kw_only=True)
class Centred(Settings):
    center: Center | None = option(
        None,
        "centre each modality on its own mean before the feature map (gap: also remove the "
        "gap direction); default: off",
        const="mean",
    )


# --- embed -----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class EmbedConfig(Device, Progress):
    """``monoscope embed``: a paired dataset through a dual encoder into a store."""

    model: str = option(help="pocket | HF hub id or local dir | open_clip:NAME[/PRETRAINED]")
    data: str = option(
        help="emoji | a .jsonl/.csv file of pairs | tar shards ('shards/{00000..00099}.tar', "
        "a glob or a directory) | hf:NAME_OR_DIR[:SPLIT]"
    )
    out: Path = option(help="store directory")
    image_column: str | None = option(None, "hf: image column (default: auto-detected)")
    caption_column: str | None = option(None, "hf: caption column (default: auto-detected)")
    batch_size: int = option(64, "pairs per model batch", parse=T.positive)
    shard_size: int = option(
        4096,
        "source records per shard (the unit of resume and of data parallelism)",
        parse=T.positive,
    )
    workers: int = option(
        0, "DataLoader processes decoding images beside the model", parse=T.non_negative
    )
    dtype: str | None = option(
        None,
        "model compute dtype: auto (checkpoint's), fp32, fp16, bf16 (default: fp32); stored "
        "embeddings are always float32",
        parse=T.dtype,
    )
    normalize: bool = option(True, "store raw, not L2-normalised", flag="--no-normalize")
    max_pixels: int = option(
        DEFAULT_MAX_PIXELS,
        "larger images are skipped (counted) without being decoded",
        parse=T.positive,
    )
    resume: bool = option(False, "continue an interrupted run")
    overwrite: bool = option(False, "replace an existing store")


# --- feature-map kinds -----------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class KindConfig(Settings):
    """The options of one feature-map kind (its constructor's keywords, less ``dim``)."""

    kind: ClassVar[str]

    @classmethod
    def saved(cls) -> tuple[str, ...]:
        """The fields saved as the map's hyperparameters (all but run-time choices)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("saved", True))


@dataclass(frozen=True, kw_only=True)
class IdentityConfig(KindConfig):
    """``identity``: the embedding's own dimensions, made non-negative."""

    kind: ClassVar[str] = "identity"
    mode: IdentityMode = option("sign-split", "sign-split: x+ and x- as 2d features; abs: |x|")


@dataclass(frozen=True, kw_only=True)
class SAEConfig(KindConfig):
    latents: int = option(2048, "number of features K", parse=T.positive)


@dataclass(frozen=True, kw_only=True)
class ReLUConfig(SAEConfig):
    kind: ClassVar[str] = "sae-relu"
    l1: float = option(5.0, "sparsity penalty", parse=T.positive_float)


@dataclass(frozen=True, kw_only=True)
class TopKConfig(SAEConfig):
    kind: ClassVar[str] = "sae-topk"
    k: int = option(32, "active latents per sample", parse=T.positive)
    aux_k: int | None = option(
        None, "dead latents in the AuxK loss (default: min(K, max(2k, d / 2)))", parse=T.positive
    )
    aux_coef: float = option(1 / 32, "weight of the AuxK loss", parse=T.non_negative_float)
    decoder: Decoder = option(
        "auto",
        "training kernels: dense, sparse (gather over the selected latents) or auto "
        "(by K / k and the device); not saved: both give the same model",
        saved=False,
    )


@dataclass(frozen=True, kw_only=True)
class BatchTopKConfig(TopKConfig):
    kind: ClassVar[str] = "sae-batchtopk"
    threshold_momentum: float = option(
        0.99,
        "EMA momentum of the inference threshold",
        parse=T.number(0.0, high=1.0, strict_high=True),
    )


@dataclass(frozen=True, kw_only=True)
class MatryoshkaConfig(BatchTopKConfig):
    kind: ClassVar[str] = "sae-matryoshka"
    prefixes: tuple[int, ...] | None = option(
        None, "nested prefix sizes (default: K/8 K/4 K/2; K is always added)", parse=T.positive
    )


@dataclass(frozen=True, kw_only=True)
class JumpReLUConfig(SAEConfig):
    kind: ClassVar[str] = "sae-jumprelu"
    l0: float = option(1.0, "L0 sparsity penalty", parse=T.non_negative_float)
    bandwidth: float = option(0.1, "straight-through kernel width", parse=T.positive_float)
    init_threshold: float = option(0.5, "initial per-feature threshold", parse=T.positive_float)


@dataclass(frozen=True, kw_only=True)
class NCLConfig(KindConfig):
    kind: ClassVar[str] = "ncl"
    latents: int = option(2048, "number of features K", parse=T.positive)
    shared: bool = option(True, "separate image and text heads", flag="--no-shared")
    tau: float = option(0.07, "contrastive temperature", parse=T.positive_float)
    rep_relu: bool = option(False, "ReLU on the representation before the head")


KIND_CONFIGS: dict[str, type[KindConfig]] = {
    c.kind: c
    for c in (
        IdentityConfig,
        ReLUConfig,
        TopKConfig,
        BatchTopKConfig,
        JumpReLUConfig,
        MatryoshkaConfig,
        NCLConfig,
    )
}


# --- train -----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TrainConfig(Centred, Run):
    """``monoscope train``: a feature map of ``method`` on a store (each kind's own options are
    its config in ``KIND_CONFIGS``)."""

    store: Path = option(help="store directory")
    method: Method = option(help="feature-map kind")
    out: Path = option(help="feature-map directory")
    batch_size: int = option(
        1024, "embeddings per batch (SAEs) or pairs per batch (NCL)", parse=T.positive
    )
    lr: float | None = option(
        None, "Adam learning rate (default: by method and dimension)", parse=T.positive_float
    )
    epochs: float | None = option(
        None, "passes over the store (default: max(1 epoch, 2000 steps))", parse=T.positive_float
    )
    steps: int | None = option(None, "training steps (instead of --epochs)", parse=T.positive)
    per_modality: bool = option(False, "one SAE per modality")
    checkpoint_every: int = option(
        1000, "steps between checkpoints (0: none)", parse=T.non_negative
    )
    dead_window: int | None = option(
        None,
        "a latent silent on this many training embeddings is dead (default: min(2^20, 1 epoch))",
        parse=T.positive,
    )
    buffer_pairs: int = option(32768, "pairs shuffled together in memory", parse=T.positive)
    init_samples: int = option(
        16384, "embeddings the data-dependent initialisation looks at", parse=T.positive
    )
    log_every: int | None = option(
        None, "steps between log lines (default: about 100 lines a run)", parse=T.positive
    )
    resume: bool = option(False, "continue an interrupted run")
    overwrite: bool = option(False, "replace an existing feature map")


# --- analyze ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RuleSettings(Settings):
    """A verdict rule and its settings (docs/method.md)."""

    rule: Rule = option(
        DEFAULT_RULE,
        "verdict rule: evidence (each feature's own interval vs --low/--high, with FDR control; "
        "undetermined and rare features get no group), std (the paper's mean ± std), fixed "
        "thresholds, quantiles, or a sign-flip test",
    )
    low: float = option(0.25, "TextD below this MDS (evidence, fixed)", parse=T.unit_interval)
    high: float = option(0.75, "ImgD above this MDS (evidence, fixed)", parse=T.unit_interval)
    quantile: float = option(0.2, "tail share, in (0, 0.5) (quantile)", parse=T.open_half)
    fdr: float = option(0.05, "false-claim rate, in (0, 1) (evidence, test)", parse=T.open_unit)
    min_firings: int = option(
        MIN_FIRINGS,
        "pairs a feature must fire on to get a verdict; fewer: rare (evidence)",
        parse=T.positive,
    )
    pseudo_firings: float = option(
        PSEUDO_FIRINGS,
        "pseudo-pairs per modality added to each feature's interval (evidence intervals)",
        parse=T.non_negative_float,
    )
    min_effect: float = option(
        0.1, "least |MDS - 0.5| for ImgD/TextD, in (0, 0.5) (test)", parse=T.open_half
    )
    permutations: int = option(1000, "sign flips (test)", parse=T.positive)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rule not in ALL_RULES:
            raise ValueError(f"unknown grouping rule {self.rule!r}; expected one of {ALL_RULES}")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or not (
            0 <= self.low < self.high <= 1
        ):
            raise ValueError(
                f"thresholds must satisfy 0 <= low < high <= 1 "
                f"(got low {self.low}, high {self.high})"
            )


@dataclass(frozen=True, kw_only=True)
class AnalyzeOptions(RuleSettings, Centred, Run):
    """How ``analyze`` runs: everything but its inputs and output (saved in summary.json)."""

    top_m: int = option(20, "top samples kept per feature", parse=T.positive)
    definition: Definition = option("ratio-of-means", "MDS definition", flag="--mds")
    null_sets: int = option(
        1000, "random feature sets of the monosemanticity null", parse=T.positive
    )
    batch_size: int = option(4096, "pairs per batch of the streaming pass", parse=T.positive)
    gap_bootstrap: int = option(
        200, "bootstrap replicates of the modality-gap intervals", parse=T.non_negative
    )
    force: bool = option(False, "analyse with a feature map trained on another model's embeddings")
    overwrite: bool = option(False, "replace an existing analysis")


@dataclass(frozen=True, kw_only=True)
class AnalyzeConfig(AnalyzeOptions):
    """``monoscope analyze``: MDS, verdicts, monosemanticity and top samples of every feature."""

    store: Path = option(help="store directory")
    featuremap: Path = option(help="feature-map directory")
    out: Path = option(help="analysis directory")


@dataclass(frozen=True, kw_only=True)
class AnalyzeCommand(AnalyzeConfig):
    """``monoscope analyze``: MDS, verdicts, monosemanticity and top samples of every feature,
    and (loading the encoder) word drivers and vocabulary names."""

    words: bool = option(False, "word-occlusion analysis of text-side features (loads the encoder)")
    model: str | None = option(None, "encoder for --words/--vocab (default: the store's model)")
    vocab: str | None = option(
        None,
        "also name every feature by the nearest text of a vocabulary (default: words and "
        "phrases of the captions; or a file, one term per line); loads the encoder",
        const="",
        metavar="TERMS_FILE",
    )


# --- ablate, compare, agree, report ------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class AblateConfig(Run):
    """``monoscope ablate``: remove each group; zero-shot accuracy and retrieval, with controls."""

    store: Path = option(help="store directory")
    featuremap: Path = option(help="feature-map directory")
    out: Path = option(help="directory for ablation.json")
    analysis: Path | None = option(None, "groups from this analysis (default: computed)")
    model: str | None = option(None, "encoder for class prompts (default: the store's model)")
    label_keys: tuple[str, ...] | None = option(
        None,
        "label keys used as zero-shot classes (default: every label that can serve)",
        flag="--labels",
    )
    templates: tuple[str, ...] = templates_option(CLASS_TEMPLATES, "class prompt")
    control_seeds: int = option(5, "random same-size controls", parse=T.positive)
    max_pairs: int = option(4000, "pairs evaluated", parse=T.integer(2))
    overwrite: bool = option(
        False, "allow a non-empty --out of another kind (replaces only own files)"
    )


@dataclass(frozen=True, kw_only=True)
class CompareConfig(Settings):
    """``monoscope compare``: analyses of several models or feature maps side by side."""

    analyses: tuple[Path, ...] = option(help="analysis directories", positional=True)
    out: Path = option(help="directory for compare.json")
    names: tuple[str, ...] | None = option(None, "display names, one per analysis")
    overwrite: bool = option(
        False, "allow a non-empty --out of another kind (replaces only own files)"
    )


@dataclass(frozen=True, kw_only=True)
class AgreeConfig(Seeded):
    """``monoscope agree``: agreement of blind ratings with each other and with the verdict."""

    analysis: Path = option(help="the rated analysis")
    ratings: tuple[Path, ...] = option(help="ratings files exported by the report", positional=True)
    out: Path = option(help="directory for agree.json")
    bootstrap: int = option(1000, "bootstrap replicates for CIs", parse=T.positive)


@dataclass(frozen=True, kw_only=True)
class ReportConfig(Settings):
    """``monoscope report``: the self-contained HTML report of an analysis."""

    analysis: Path = option(help="analysis directory")
    out: Path = option(help="HTML file to write")
    ablation: Path | None = option(None, "ablation.json or its directory")
    compare: Path | None = option(None, "compare.json or its directory")
    agree: Path | None = option(None, "agree.json of `monoscope agree` or its directory")
    studies: tuple[Path, ...] = option((), "study directories (or their parent)")
    discover: bool = option(
        True,
        "do not look for ablation/, compare/, agree/ and studies/ beside the analysis",
        flag="--no-discover",
    )
    open: bool = option(False, "open it in the browser")


@dataclass(frozen=True, kw_only=True)
class DoctorConfig(Settings):
    """``monoscope doctor``: validate a store, feature map or analysis."""

    path: Path = option(help="a store, feature-map or analysis directory", positional=True)
    verify: bool = option(
        False, "also re-hash every shard and weights file against the recorded checksums"
    )


# --- benchmarks, demo, pocket, interop -------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class PlantedConfig(Seeded, Progress):
    """``monoscope bench planted``: every method on planted ground truth, every rule scored."""

    out: Path = option(help="benchmark directory")
    profile: Profile = option(
        "clip",
        "easy: MDS exactly 0, 1/2, 1; clip: CLIP-like geometry, continuous preferences, "
        "heavy-tailed frequencies; null: clip geometry, every atom balanced",
    )
    replicates: int = option(5, "fresh datasets each map is scored on", parse=T.positive)
    dim: int | None = option(None, "embedding dimension (default: the profile's)", parse=T.positive)
    atoms: int = option(256, "planted atoms", parse=T.positive)
    n_pairs: int = option(20000, "pairs per dataset", parse=T.positive)
    methods: tuple[Method, ...] = option(METHODS, "feature maps to train")
    steps: int = option(1500, "training steps per map", parse=T.positive)


@dataclass(frozen=True, kw_only=True)
class DemoConfig(Run):
    """``monoscope demo``: the whole pipeline on the embedded default (emoji + pocket)."""

    out: Path = option(Path("runs/demo"), "output directory")
    latents: int = option(1024, "SAE features", parse=T.positive)
    k: int = option(16, "SAE active latents", parse=T.positive)
    epochs: int = option(30, "SAE epochs", parse=T.positive)
    studies: bool = option(
        False, "also run the gender, adversarial and steering studies (a few minutes)"
    )


@dataclass(frozen=True, kw_only=True)
class PocketTrainConfig(Run):
    """``monoscope pocket train``: retrain the built-in pocket model on the emoji pairs."""

    out: Path = option(help="directory for the weights")
    epochs: int = option(80, "training epochs", parse=T.positive)


@dataclass(frozen=True, kw_only=True)
class ImportSaeConfig(Settings):
    """``monoscope import-sae``: an SAE trained with another library, as a feature map."""

    format: SaeImportFormat = option(help="the library that wrote it")
    src: Path = option(
        help="saelens/sparsify: the directory with cfg.json; saev: sae.pt (or its directory); "
        "dictionary_learning: ae.pt (or its trainer directory)",
        positional=True,
    )
    out: Path = option(help="feature-map directory")
    overwrite: bool = option(False, "replace a feature map in --out")
    input_scale: float | None = option(
        None,
        "the SAE was trained on embeddings multiplied by this dataset factor, which its "
        "checkpoint does not hold",
        parse=T.positive_float,
    )


@dataclass(frozen=True, kw_only=True)
class ExportSaeConfig(Settings):
    """``monoscope export-sae``: a feature map in another library's layout."""

    format: SaeExportFormat = option(help="the library to write for")
    featuremap: Path = option(help="a monoscope SAE feature-map directory", positional=True)
    out: Path = option(help="output directory")


# --- studies ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class StudyInputs(Run):
    store: Path = option(help="store directory")
    featuremap: Path = option(help="feature-map directory")
    analysis: Path | None = option(
        None, "groups from this analysis; computed into OUT/analysis if omitted"
    )
    out: Path = option(help="output directory")
    model: str | None = option(None, "encoder spec; the store's own model if omitted")


@dataclass(frozen=True, kw_only=True)
class GenderConfig(StudyInputs):
    """``monoscope study gender``: zero-shot gender bias and the features that carry gender."""

    templates: tuple[str, ...] = templates_option(GENDER_TEMPLATES, "prompt")
    label_key: str | None = option(
        None, "label holding the gender (default: the one taking both classes)"
    )
    classes: tuple[str, str] = option(("woman", "man"), "the two label values")
    neutral: str = option("neutral", "label value of gender-neutral images")
    pair_keys: tuple[str, ...] | None = option(
        None,
        "labels shared by counterfactual pairs (default: a 'pair' label; the bundled emoji: "
        "base skin_tone)",
    )
    role_key: str | None = option(None, "label grouping neutral images into roles (default: role)")
    fdr: float = option(0.05, "BH false discovery rate", parse=T.open_unit)
    min_effect: float = option(0.2, "minimum |d_z| of a feature", parse=T.non_negative_float)
    permutations: int = option(2000, "sign-flip permutations", parse=T.positive)
    control_seeds: int = option(5, "random same-size controls", parse=T.positive)
    top_roles: int = option(12, "rows of the skewed-roles table", parse=T.positive)


@dataclass(frozen=True, kw_only=True)
class AdversarialConfig(StudyInputs):
    """``monoscope study adversarial``: PGD attacks, group-targeted attacks and defences."""

    label_key: str | None = option(
        None, "label used as zero-shot classes (default: the one that can serve)"
    )
    templates: tuple[str, ...] = templates_option(CLASS_TEMPLATES, "class prompt")
    n_images: int = option(256, "images attacked", parse=T.positive)
    epsilons: tuple[float, ...] = option(
        EPSILONS, "L-inf budgets, x 1/255", flag="--eps", parse=T.non_negative_float
    )
    steps: int = option(10, "PGD steps", parse=T.positive)
    step_size: float | None = option(
        None, "x 1/255 (default: 2.5 * eps / steps)", parse=T.positive_float
    )
    objectives: tuple[Objective, ...] = option(
        ("zeroshot",), "attacked tasks (zeroshot, matching); defences train on the first"
    )
    group_eps: float = option(4.0, "eps of group-targeted attacks", parse=T.non_negative_float)
    adapter_rank: int = option(
        0, "low-rank MLP in the adapter (0: affine only)", parse=T.non_negative
    )
    adapter_steps: int = option(300, "training steps of the adapter", parse=T.non_negative)
    batch_size: int = option(128, "images per attack batch", parse=T.positive)
    examples: int = option(6, "images in the examples figure", parse=T.non_negative)


@dataclass(frozen=True, kw_only=True)
class SteerConfig(StudyInputs):
    """``monoscope study steer``: steer embeddings with one group's concept features."""

    concept: str = option("woman", "concept prompt, e.g. woman, red, cat")
    modality: Modality = option("image", "edited side")
    alphas: tuple[float, ...] = option(ALPHAS, "strengths", parse=T.finite_float)
    n_sources: int = option(64, "source embeddings edited", flag="--sources", parse=T.positive)
    concept_images: int = option(
        16,
        "gallery images nearest the prompt averaged into the concept (0: prompt only)",
        parse=T.non_negative,
    )
    examples: int = option(2, "sources rendered as grids", parse=T.non_negative)
    max_gallery: int = option(20000, "gallery size cap", parse=T.positive)
    decoder: Path | None = option(
        None, "decoder dir; trained into (or reused from) OUT/decoder if omitted"
    )
    render_decoder: bool = option(True, "skip decoder renders", flag="--no-decoder")
    decoder_epochs: int = option(15, "decoder epochs when training one here", parse=T.positive)
    unclip: str | None = option(None, "diffusers Stable unCLIP img2img pipeline id or dir")
    unclip_steps: int = option(20, "unCLIP denoising steps", parse=T.positive)
    unclip_norm: float | None = option(
        None, "rescale embeddings to this norm for unCLIP", parse=T.positive_float
    )


@dataclass(frozen=True, kw_only=True)
class DecoderTrainConfig(Run):
    """``monoscope decoder train``: the embedding-conditioned image decoder on a store's images."""

    store: Path = option(help="store directory")
    out: Path = option(help="decoder directory")
    size: Literal[32, 64] = option(32, "output pixels")
    width: int = option(128, "channels at 4x4", parse=T.positive)
    epochs: int = option(15, "training epochs", parse=T.positive)
    batch_size: int = option(128, "images per batch", parse=T.positive)
    lr: float = option(2e-3, "Adam learning rate", parse=T.positive_float)
    noise: float = option(0.05, "input-embedding noise (x RMS)", parse=T.non_negative_float)
    edge_weight: float = option(0.5, "image-gradient L1 weight", parse=T.non_negative_float)
    max_images: int = option(20000, "images used", parse=T.positive)
    val_fraction: float = option(
        0.05, "images held out for validation", parse=T.number(0.0, high=1.0, strict_high=True)
    )
