"""What an interrupted command (Ctrl-C) leaves on disk, one line per stage.

``embed`` commits its store shard by shard and ``train`` checkpoints every
``--checkpoint-every`` steps, so both continue with ``--resume``; the other stages write their
outputs whole at the end and are simply run again. The demo lists each of its stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._util import read_json


def _json(path: Path) -> Any:
    try:
        return read_json(path)
    except Exception:  # a torn or missing file: nothing usable there
        return None


def store_line(out: Path, stage: str = "embed") -> str:
    """The state of the store ``out``: complete, committed shards, or nothing."""
    if (out / "manifest.json").is_file():
        return f"{stage}: the store {out} is complete"
    shards = [
        info
        for p in sorted((out / "progress").glob("rank-*.json"))
        for info in ((_json(p) or {}).get("shards") or {}).values()
    ]
    if not shards:
        return f"{stage}: no shard of {out} was committed yet; a rerun starts over"
    pairs = sum(int(s.get("count", 0)) for s in shards)
    skipped = sum(sum((s.get("skipped") or {}).values()) for s in shards)
    n = f"{len(shards)} shard{'s' * (len(shards) != 1)}"
    also = f", {skipped} records skipped" if skipped else ""
    return (
        f"{stage}: {n} ({pairs} pairs{also}) kept in {out}; "
        "the same command with --resume continues from there"
    )


def featuremap_line(out: Path, stage: str = "train") -> str:
    """The state of the feature map ``out``: complete, its newest checkpoint, or nothing."""
    if (out / "config.json").is_file() and (out / "metrics.json").is_file():
        return f"{stage}: the feature map {out} is complete"
    latest = _json(out / "checkpoints" / "latest.json")
    if isinstance(latest, dict) and "step" in latest:
        return (
            f"{stage}: checkpoint at step {latest['step']} kept in {out}; "
            "the same command with --resume continues from there"
        )
    return f"{stage}: no checkpoint in {out} yet (see --checkpoint-every); a rerun starts over"


def _done(stage: str, path: Path, marker: str) -> str:
    state = "complete" if (path / marker).is_file() else "not written"
    return f"{stage}: {path} {state}"


def demo_lines(out: Path) -> list[str]:
    """One line per demo stage; the demo itself has no --resume (a rerun starts over)."""
    lines = [store_line(out / "store", "store"), featuremap_line(out / "featuremap", "featuremap")]
    lines.append(_done("analysis", out / "analysis", "summary.json"))
    lines.append(_done("ablation", out / "ablation", "ablation.json"))
    for name in sorted(p.name for p in (out / "baselines").glob("*") if p.is_dir()):
        lines.append(
            _done(f"{name} analysis", out / "baselines" / name / "analysis", "summary.json")
        )
    lines.append(_done("compare", out / "compare", "compare.json"))
    for study in ("gender", "adversarial", "steer"):
        if (out / "studies" / study).is_dir():
            lines.append(_done(study, out / "studies" / study, f"{study}.json"))
    report = out / "report.html"
    lines.append(f"report: {report} {'complete' if report.is_file() else 'not written'}")
    lines.append("demo: a rerun starts over (the demo has no --resume)")
    return lines


def kept_lines(command: str | None, out: Path | None) -> list[str]:
    """Lines saying what an interrupted ``command`` writing ``out`` kept."""
    if out is None or not Path(out).exists():
        return [f"{command}: nothing was written"]
    out = Path(out)
    if command == "embed":
        return [store_line(out)]
    if command == "train":
        return [featuremap_line(out)]
    if command == "demo":
        return demo_lines(out)
    return [f"{command}: {out} may be incomplete; run the command again (it has no --resume)"]
