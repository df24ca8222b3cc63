"""Messages that send users the right way: a missing CLIP model names the option or the step that fixes it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from mm_rag import MultimodalStore, TextEmbedder, ingest


def mm_rag(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "mm_rag.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_an_image_query_and_a_caption_without_clip_say_how_to_get_one(tmp_path: Path, minilm_dir: Path) -> None:
    (tmp_path / "notes.txt").write_text("The harbour festival has fireworks on Saturday.")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "query.png")
    with MultimodalStore(tmp_path / "store") as store:  # text only: no space of pictures
        assert not ingest(tmp_path / "notes.txt", store, text=TextEmbedder(minilm_dir, device="cpu")).failed
    searched = mm_rag("search", "--image", tmp_path / "query.png", "--store", tmp_path / "store", "--device", "cpu")
    assert searched.returncode == 2 and "Traceback" not in searched.stderr
    assert f"--image {tmp_path / 'query.png'} needs a CLIP model" in searched.stderr
    assert "has none (no space of pictures)" in searched.stderr and "--clip-model" in searched.stderr
    assert "clip=" not in searched.stderr  # no Python argument offered as a fix on the command line
    captioned = mm_rag("caption", tmp_path / "query.png", "--store", tmp_path / "store", "--device", "cpu")
    assert captioned.returncode == 2 and "captioning needs a CLIP model" in captioned.stderr
    assert "note above" not in captioned.stderr and "--clip-model" in captioned.stderr
