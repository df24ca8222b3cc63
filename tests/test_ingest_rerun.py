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


def test_files_skipped_for_want_of_a_model_wait_without_loading_until_something_would_change(tmp_path: Path) -> None:
    """A picture without CLIP weights and a recording without speech are left out; run again on the same
    content with the same models asked for, they are left out for the same reasons without loading a model;
    the weights appearing in the cache, or another request, puts them back in the run."""
    import wave

    import numpy as np
    from PIL import Image

    folder, store, hub = tmp_path / "media", tmp_path / "store", tmp_path / "hf"
    folder.mkdir()
    (folder / "notes.txt").write_text("The ferry leaves the harbour at noon.")
    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "red.png")
    with wave.open(str(folder / "quiet.wav"), "wb") as silent:
        silent.setnchannels(1), silent.setsampwidth(2), silent.setframerate(16000)
        silent.writeframes((np.random.default_rng(0).normal(0, 20, 16000 * 3)).astype("<i2").tobytes())
    env = {**ENV, "HF_HOME": str(hub)}  # an empty cache: the default CLIP weights are missing

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        command = [str(MM_RAG), "ingest", folder, "--store", store, *args]
        done = subprocess.run(
            list(map(str, command)), capture_output=True, text=True, env=env, timeout=600, check=False
        )
        assert done.returncode == 0, done.stderr
        return done

    first = run()
    assert "1 added, 0 updated, 0 unchanged, 2 skipped" in first.stdout
    reasons = sorted(line for line in first.stdout.splitlines() if line.startswith("skipped:"))
    assert [line.split(": ", 2)[2] for line in reasons] == [
        "no speech found",
        "image: no image embedder (CLIP) configured, and no text found by OCR",
    ]

    # Were any model loaded, the unloadable text model would be reported (nothing waits on the text model).
    again = run("--text-model", tmp_path / "no-such-model")
    assert "0 added, 0 updated, 1 unchanged, 2 skipped" in again.stdout
    assert sorted(line for line in again.stdout.splitlines() if line.startswith("skipped:")) == reasons
    assert "note:" not in again.stderr and "cannot load" not in again.stderr

    # The weights appear in the cache (here a damaged file): the picture is tried again, and only it.
    snapshot = hub / "hub" / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"not weights")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    retried = run()
    assert "cannot load open_clip model 'ViT-B-32'" in retried.stderr
    assert "tiny.en" not in retried.stderr  # the recording still waits: Whisper was not loaded for it
    assert "0 added, 0 updated, 1 unchanged, 2 skipped" in retried.stdout
