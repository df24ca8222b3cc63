"""Nothing to do costs nothing: `mm-rag ingest` hashes and compares first, and loads a model only for a change."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MM_RAG = Path(sys.executable).with_name("mm-rag")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def ingest(*args: object) -> subprocess.CompletedProcess[str]:
    command = [str(MM_RAG), "ingest", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600, check=False)


def test_an_unchanged_folder_loads_no_model_and_a_change_only_the_models_it_needs(tmp_path: Path) -> None:
    folder, store = tmp_path / "notes", tmp_path / "store"
    folder.mkdir()
    (folder / "a.txt").write_text("The fireworks start at ten on Saturday.")
    (folder / "b.md").write_text("# Museum\nThe old maps hang in room four.")
    first = ingest(folder, "--store", store, "--no-clip")
    assert first.returncode == 0, first.stderr
    assert "2 added" in first.stdout

    # A model that cannot load: were any model loaded, the run would say so (or fail for want of an embedder).
    again = ingest(folder, "--store", store, "--text-model", tmp_path / "no-such-model", "--no-clip")
    assert again.returncode == 0, again.stderr
    assert (
        again.stdout.splitlines()[0]
        == "0 added, 0 updated, 2 unchanged, 0 skipped, 0 failed, 0 pruned; 0 records written"
    )
    assert "note:" not in again.stderr and "cannot load" not in again.stderr

    # A changed text file needs the text model only: no Whisper and no OCR engine is loaded (or named).
    (folder / "a.txt").write_text("The fireworks start at eleven on Saturday.")
    changed = ingest(folder, "--store", store, "--no-clip", "--whisper-model", tmp_path / "no-such-whisper")
    assert changed.returncode == 0, changed.stderr
    assert "0 added, 1 updated, 1 unchanged" in changed.stdout
    assert "audio" not in changed.stderr  # the unloadable Whisper model was never tried
