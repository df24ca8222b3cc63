"""The distribution's surface: namespace-package layout, pinned public names, and the example, run as users run it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO = PACKAGE_ROOT.parents[1]
PUBLIC = {
    "llama_index.vector_stores.mm_rag": [
        "DEFAULT_SPACE",
        "MMRagVectorStore",
        "NODE_KEY",
        "export_to",
        "node_to_record",
        "record_to_node",
        "translate_filters",
    ],
    "llama_index.embeddings.mm_rag": ["OpenCLIPEmbedding", "TextEmbedding"],
    "llama_index.readers.mm_rag": ["ImageReader", "MMRagReader", "VideoReader", "WhisperReader"],
    "llama_index.retrievers.mm_rag": ["MMRagRetriever"],
    "llama_index.tools.mm_rag": [
        "ImageHit",
        "Passage",
        "SearchResults",
        "chat",
        "context_to_blocks",
        "make_query_engine_tool",
        "make_search_tool",
        "search_results",
    ],
}


def test_public_names_are_pinned_and_importable():
    for module_name, names in PUBLIC.items():
        module = importlib.import_module(module_name)
        assert sorted(module.__all__) == names, module_name
        for name in names:
            assert getattr(module, name) is not None


def test_namespace_packages_have_no_init_above_mm_rag():
    top = PACKAGE_ROOT / "llama_index"
    assert not (top / "__init__.py").exists()
    kinds = sorted(path.name for path in top.iterdir() if path.is_dir() and path.name != "__pycache__")
    assert kinds == ["embeddings", "readers", "retrievers", "tools", "vector_stores"]
    for kind in kinds:
        assert not (top / kind / "__init__.py").exists()
        assert (top / kind / "mm_rag" / "__init__.py").is_file()
    # llama-index-core's own subpackages still resolve beside ours
    assert importlib.import_module("llama_index.core.vector_stores").__name__ == "llama_index.core.vector_stores"


def test_source_files_stay_small():
    for path in (PACKAGE_ROOT / "llama_index").rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path


@pytest.mark.slow  # a real model
def test_example_runs_offline(tiny_clip_paths, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "llama_index_multimodal.py"),
            "--model",
            str(tiny_clip_paths.config),
            "--pretrained",
            str(tiny_clip_paths.checkpoint),
            "--persist",
            str(tmp_path / "index"),
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Query: 'a red circle'"
    assert lines[2].endswith("red-circle.png")  # the best image for the sentence
    assert lines[4].startswith("Only squares: [") and "circle" not in lines[4]
    assert (tmp_path / "index" / "image__vector_store.mmrag").is_dir()
    assert "blue-square.png" in result.stdout.split("after reload:")[1]
