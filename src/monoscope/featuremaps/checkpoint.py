"""Training checkpoints and the output directory of a training run.

``out/checkpoints/step-NNNNNNNN/`` holds the map as :meth:`~.base.FeatureMap.save` writes it
plus ``optimizer.safetensors`` (Adam moments, the torch RNG state, the dead-latent counters)
and ``trainer_state.json`` (step, settings, the open logging interval's sums, Adam's param
groups); ``out/checkpoints/latest.json`` names the newest complete one, and older ones are
removed once it is written.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .._util import MonoscopeError, read_json, write_json, write_text
from ..integrity import save_safetensors
from ..outputs import prepare_out
from .base import FeatureMap

TRAIN_STATE_VERSION = 1
OUTPUTS = ("config.json", "model.safetensors", "train_log.jsonl", "metrics.json")


def save_checkpoint(
    ckdir: Path,
    model: FeatureMap,
    opt: torch.optim.Optimizer,
    state: dict[str, Any],
    since: torch.Tensor,
) -> None:
    """Write checkpoint ``state["step"]`` (``state``: the trainer's scalars) into ``ckdir``."""
    step_dir = ckdir / f"step-{state['step']:08d}"
    model.save(step_dir, extra={"training": state["settings"]})
    sd = opt.state_dict()
    tensors = {
        f"optim.{i}.{key}": v.detach().cpu().contiguous()
        for i, st in sd["state"].items()
        for key, v in st.items()
    }
    tensors["torch_rng"] = torch.get_rng_state()
    tensors["since"] = since.cpu()
    save_safetensors(step_dir / "optimizer.safetensors", tensors)
    write_json(step_dir / "trainer_state.json", {**state, "param_groups": sd["param_groups"]})
    write_json(ckdir / "latest.json", {"step": state["step"], "dir": step_dir.name})
    for old in ckdir.glob("step-*"):
        if old != step_dir:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    ckdir: Path,
    model: FeatureMap,
    opt: torch.optim.Optimizer,
    settings: dict[str, Any],
    device: str,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Restore the newest checkpoint of ``ckdir`` into ``model``, ``opt`` and the torch RNG;
    returns (trainer state, dead-latent counters). Refuses one whose settings differ."""
    step_dir = ckdir / read_json(ckdir / "latest.json")["dir"]
    state = read_json(step_dir / "trainer_state.json")
    for key, value in settings.items():
        if json.loads(json.dumps(state["settings"].get(key))) != json.loads(json.dumps(value)):
            if key == "store":
                raise MonoscopeError(
                    f"{ckdir.parent}: cannot resume: the store changed since the interrupted run "
                    "(another path, count or fingerprint: re-embedded?); start over with "
                    "--overwrite"
                )
            raise MonoscopeError(
                f"{ckdir.parent}: cannot resume: '{key}' differs from the interrupted run "
                f"({state['settings'].get(key)!r} != {value!r})"
            )
    model.load_state_dict(load_file(str(step_dir / "model.safetensors"), device=device))
    tensors = load_file(str(step_dir / "optimizer.safetensors"))
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, i, key = name.split(".", 2)
            opt_state.setdefault(int(i), {})[key] = v.to(device) if v.dim() else v
    opt.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    torch.set_rng_state(tensors["torch_rng"])
    return state, tensors["since"].to(device)


def trim_log(log_path: Path, step: int) -> None:
    """Keep the lines of ``train_log.jsonl`` up to ``step`` (and drop torn or blank ones)."""
    lines = log_path.read_text().splitlines() if log_path.exists() else []
    kept = [ln for ln in lines if _log_step(ln) <= step]
    write_text(log_path, "".join(ln + "\n" for ln in kept))


def _log_step(line: str) -> float:
    """The step of a train_log.jsonl line; inf for a torn or blank line."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def prepare_run(out: Path, resume: bool, overwrite: bool) -> bool:
    """Check/clean the output directory; True if it already holds a finished run to keep."""
    prepare_out(out, "featuremap", overwrite)
    finished = (out / "config.json").is_file() and (out / "metrics.json").is_file()
    if overwrite:
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        return False
    if finished:
        if resume:
            return True
        raise MonoscopeError(f"{out}: a trained feature map is already there; pass --overwrite")
    if (out / "checkpoints" / "latest.json").is_file() and not resume:
        raise MonoscopeError(
            f"{out}: holds an interrupted run; pass --resume to continue it or --overwrite"
        )
    return False
