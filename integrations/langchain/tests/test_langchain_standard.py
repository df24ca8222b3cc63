"""LangChain's standard contract suites, run unchanged against the mm-rag integration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_mm_rag import MMRagRetriever, MMRagVectorStore, OpenCLIPEmbeddings, TextEmbeddings
from langchain_tests.integration_tests import (
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests

# The suites' async tests carry no marker of their own and strict-mode pytest-asyncio needs one; the module-wide
# mark also reaches their sync tests, where pytest-asyncio only warns that it does nothing.
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings(
        "ignore:The test <Function .* is marked with '@pytest.mark.asyncio':pytest.PytestWarning"
    ),
]


class TestVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> Iterator[VectorStore]:
        store = MMRagVectorStore(embedding=self.get_embeddings())
        yield store
        store.store.close()


class TestVectorStorePersistentStandard(VectorStoreIntegrationTests):
    """The same contract on a store with a directory of its own, saved after every test."""

    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:
        store = MMRagVectorStore(embedding=self.get_embeddings(), path=tmp_path / "store")
        yield store
        store.save()
        store.store.close()


class _MiniLM:
    @pytest.fixture(autouse=True)
    def _model_dir(self, minilm_dir: Path) -> None:
        self.model_dir = minilm_dir

    @property
    def embeddings_class(self) -> type[Embeddings]:
        return TextEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": str(self.model_dir), "device": "cpu"}


@pytest.mark.slow  # the real all-MiniLM-L6-v2
class TestTextEmbeddingsUnit(_MiniLM, EmbeddingsUnitTests):
    pass


@pytest.mark.slow  # the real all-MiniLM-L6-v2
class TestTextEmbeddingsIntegration(_MiniLM, EmbeddingsIntegrationTests):
    pass


class _TinyClip:
    @pytest.fixture(autouse=True)
    def _model_files(self, tiny_clip_paths: Any) -> None:
        self.files = tiny_clip_paths

    @property
    def embeddings_class(self) -> type[Embeddings]:
        return OpenCLIPEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": self.files.config, "pretrained": self.files.checkpoint, "device": "cpu"}


class TestOpenCLIPEmbeddingsUnit(_TinyClip, EmbeddingsUnitTests):
    pass


class TestOpenCLIPEmbeddingsIntegration(_TinyClip, EmbeddingsIntegrationTests):
    pass


@pytest.fixture(scope="module")
def caption_store(tiny_clip: Any) -> Iterator[MMRagVectorStore]:
    texts = [f"a {colour} {shape}" for colour in ("red", "green", "blue") for shape in ("circle", "square")]
    store = MMRagVectorStore.from_texts(texts, OpenCLIPEmbeddings(tiny_clip), [{"n": i} for i in range(len(texts))])
    yield store
    store.store.close()


class TestRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _store(self, caption_store: MMRagVectorStore) -> None:
        self.vectorstore = caption_store

    @property
    def retriever_constructor(self) -> type[MMRagRetriever]:
        return MMRagRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"vectorstore": self.vectorstore, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "a red circle"
