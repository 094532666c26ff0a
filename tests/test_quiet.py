"""``--quiet`` silences the libraries' own progress bars too (transformers, hub, datasets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monoscope.quiet import ENV, silence_library_progress


@pytest.fixture
def restore_bars(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)  # restored after the test
    yield
    import datasets
    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging

    enable_progress_bars()
    logging.enable_progress_bar()
    datasets.enable_progress_bars()


def test_silences_already_imported_libraries(restore_bars):
    import datasets
    import huggingface_hub.utils
    from transformers.utils import logging

    silence_library_progress()
    assert all(os.environ[name] == "1" for name in ENV)
    assert not logging.is_progress_bar_enabled()
    assert huggingface_hub.utils.are_progress_bars_disabled()
    assert datasets.is_progress_bar_enabled() is False


def test_quiet_embed_prints_no_progress_bar(tmp_path: Path):
    """A fresh process: the pocket model's text tower loads through transformers, whose
    "Loading weights" bar --quiet must hide too."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
        lines.append(json.dumps({"image": f"{i}.png", "caption": f"thing {i}"}))
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    cmd = [sys.executable, "-m", "monoscope.cli", "embed", "--model", "pocket", "--device", "cpu"]
    cmd += ["--data", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "s"), "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Loading weights" not in run.stderr and "it/s" not in run.stderr, run.stderr
    assert run.stdout.strip() == f"wrote {tmp_path / 's'}"
