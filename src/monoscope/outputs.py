"""What may be written where: the kind of an output directory, refusing an ``--out`` that holds
another kind of output (or foreign files of the same names), and removing only a kind's own
files on ``--overwrite`` (docs/integrity.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ._util import MonoscopeError

OWN_FILES = {
    "store": ("manifest.json", "pairs.jsonl", "image", "text", "pairs", "progress"),
    "featuremap": (
        "config.json",
        "model.safetensors",
        "train_log.jsonl",
        "metrics.json",
        "checkpoints",
    ),
    "analysis": (
        "summary.json",
        "features.csv",
        "top",
        "histograms.safetensors",
        "words.json",
        "vocabulary",
    ),
    "ablation": ("ablation.json", "analysis"),
    "comparison": ("compare.json", "mds.png"),
}
ARTEFACTS = ("store", "featuremap", "analysis")  # what other commands read


A_KIND = {
    "store": "a store",
    "featuremap": "a feature map",
    "analysis": "an analysis",
    "ablation": "an ablation",
    "comparison": "a comparison",
}


def kind_of(directory: Path) -> str | None:
    """``store``, ``featuremap``, ``analysis``, ``ablation``, ``comparison``, ``other`` (files
    of something else) or None (missing or empty but for monoscope's lock and temporary files)."""
    if not directory.is_dir():
        return None
    names = {  # our lock files and the temporary files of interrupted atomic writes don't count
        p.name
        for p in directory.iterdir()
        if not (p.name.startswith(".") and p.name.endswith((".lock", ".tmp")))
    }
    if not names:
        return None
    for kind, marker, keys in (
        ("store", "manifest.json", ("format_version", "shards")),
        ("featuremap", "config.json", ("kind", "hparams")),
        ("analysis", "summary.json", ("n_features", "top_kept")),
        ("ablation", "ablation.json", ("baseline", "removals")),
        ("comparison", "compare.json", ("analyses", "win_rate")),
    ):
        if marker in names and _has_keys(directory / marker, keys):
            return kind
    if (directory / "progress" / "header.json").is_file():
        return "store"
    if (directory / "checkpoints" / "latest.json").is_file():
        return "featuremap"
    if names & {"manifest.json", "config.json", "summary.json", "ablation.json", "compare.json"}:
        return "other"
    for kind, own in OWN_FILES.items():  # what an interrupted run of that kind leaves
        if names <= set(own):
            return kind
    return "other"


def _has_keys(path: Path, keys: tuple[str, ...]) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and all(k in data for k in keys)


def prepare_out(out: Path, kind: str, overwrite: bool) -> None:
    """Refuse an ``--out`` that holds something other than a ``kind`` unless ``overwrite``;
    never replace another kind's file of the same name."""
    found = kind_of(out)
    if found is None or found == kind:
        return
    what = "files that are not monoscope outputs" if found == "other" else A_KIND[found]
    clash = [n for n in OWN_FILES[kind] if (out / n).exists()]
    if clash:
        raise MonoscopeError(
            f"{out}: holds {what} with its own {clash[0]}; writing {A_KIND[kind]} there would "
            "replace it: choose another --out"
        )
    if not overwrite:
        raise MonoscopeError(
            f"{out}: not empty and holds {what}, not {A_KIND[kind]}; choose another --out or "
            f"pass --overwrite (which removes only the files of {A_KIND[kind]})"
        )


def refuse_artefact_out(out: Path, what: str) -> None:
    """Refuse to write a ``what`` (ablation, comparison, study) into a store, feature map or
    analysis directory."""
    found = kind_of(out)
    if found in ARTEFACTS:
        raise MonoscopeError(f"{out}: holds {A_KIND[found]}; write the {what} to another --out")


def remove_own_files(out: Path, kind: str) -> None:
    """Delete the files a ``kind`` output consists of, and nothing else."""
    for name in OWN_FILES[kind]:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def prepare_analysis_out(out: Path, overwrite: bool) -> None:
    """An analysis starts from a clean directory: refuse an existing one unless ``overwrite``,
    then remove every file of the earlier analysis, so none survives into the new one."""
    prepare_out(out, "analysis", overwrite)
    if kind_of(out) == "analysis" or any((out / n).exists() for n in OWN_FILES["analysis"]):
        if not overwrite:
            raise MonoscopeError(f"{out}: an analysis is already there; pass --overwrite")
        remove_own_files(out, "analysis")
