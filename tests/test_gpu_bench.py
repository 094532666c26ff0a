"""benchmarks/gpu.py in its reduced CPU mode: every section runs and reports finite ratios."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def _finite_positive(obj, path=""):
    if isinstance(obj, dict):
        for key, value in obj.items():
            _finite_positive(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _finite_positive(value, f"{path}[{i}]")
    elif isinstance(obj, float):
        assert math.isfinite(obj) and obj > 0, path


@pytest.mark.slow
def test_gpu_benchmark_small_mode_runs_every_section(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    out = tmp_path / "gpu.json"
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--small", "--json", str(out)])
    gpu.main()
    result = json.loads(out.read_text())
    assert result["small"] and result["device"] == "cpu"
    assert {"peak_tflops", "embed", "sae", "analysis", "ddp"} <= result.keys()
    assert "error" not in result["ddp"], result["ddp"]
    assert result["embed"][0]["dtype"] == "bf16" and "embed_w0_ratio" in result["embed"][0]
    assert {"dense", "sparse", "sparse_over_dense"} <= result["sae"].keys()
    _finite_positive(result)
