"""The example script runs offline, end to end, with the tiny test CLIP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "langchain_multimodal.py"


@pytest.mark.slow  # a fresh interpreter imports torch and open_clip
def test_the_example_runs(tiny_clip_paths, tmp_path: Path) -> None:
    command = [sys.executable, str(EXAMPLE), "--model", str(tiny_clip_paths.config),
               "--pretrained", str(tiny_clip_paths.checkpoint), "--store", str(tmp_path / "store")]  # fmt: skip
    result = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 0, result.stderr
    assert "text → image:" in result.stdout and "agent tool: ['text', 'image'" in result.stdout
    assert "reopened with 11 records" in result.stdout
    assert (tmp_path / "store" / "mmrag.json").is_file()
