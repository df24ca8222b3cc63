"""`TextEmbedder` loading (its embeddings are exercised by the retrieval and ingestion tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mm_rag import InvalidInputError, TextEmbedder
from mm_rag.embed import base


def test_load_loads_the_model_now_and_returns_the_embedder(minilm_dir: Path) -> None:
    embedder = TextEmbedder(minilm_dir, device="cpu")
    assert embedder.load() is embedder
    assert any(key[:2] == ("sentence-transformers", str(minilm_dir)) for key in base._MODELS)
    assert embedder.dim == 384


def test_load_fails_clearly_when_the_model_is_missing(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot load sentence-transformers model .*missing"):
        TextEmbedder(tmp_path / "missing", device="cpu").load()
