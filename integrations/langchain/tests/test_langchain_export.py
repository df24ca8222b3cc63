"""`export_to`: a store's space lands in LangChain vector stores with the stored vectors, not re-embedded."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_mm_rag import export_to

from mm_rag import InvalidInputError, MultimodalStore, Record


@pytest.fixture
def store():
    with MultimodalStore() as opened:
        opened.create_space("clip", 8, model={"kind": "fake"})
        records = [Record(f"r{i}", "image" if i % 2 else "text", text=f"text {i}", uri=f"/p/{i}.jpg" if i % 2 else None,
                          metadata={"i": i}, doc_id="doc") for i in range(25)]  # fmt: skip
        opened.add(records[:20], {"clip": np.random.default_rng(0).normal(size=(20, 8))})
        opened.add(records[20:])  # no vectors: not exported
        yield opened


def test_export_to_in_memory_vector_store_keeps_ids_vectors_and_metadata(store) -> None:
    target = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    assert export_to(target, store, "clip", batch_size=7) == 20
    stored = store.vectors("clip", [f"r{i}" for i in range(25)])
    assert sorted(target.store) == sorted(stored)
    for id, vector in stored.items():
        np.testing.assert_allclose(target.store[id]["vector"], vector, rtol=1e-6)
    assert target.store["r3"]["metadata"] == {"i": 3, "modality": "image", "uri": "/p/3.jpg", "doc_id": "doc"}
    assert target.store["r4"]["text"] == "text 4"
    hit = target.similarity_search_by_vector(stored["r5"].tolist(), k=1)[0]
    assert hit.id == "r5"


class PairsStore:
    """`add_embeddings` in the form of LangChain's FAISS store."""

    def __init__(self) -> None:
        self.added: dict[str, tuple[str, list[float], dict]] = {}

    def add_embeddings(self, text_embeddings, metadatas=None, ids=None, **kwargs):
        for (text, vector), metadata, id in zip(text_embeddings, metadatas, ids):
            self.added[id] = (text, vector, metadata)
        return ids


class ColumnsStore(PairsStore):
    """`add_embeddings` in the form of langchain-milvus."""

    def add_embeddings(self, texts, embeddings, metadatas=None, ids=None, **kwargs):  # type: ignore[override]
        return super().add_embeddings(list(zip(texts, embeddings)), metadatas, ids)


@pytest.mark.parametrize("kind", [PairsStore, ColumnsStore])
def test_export_to_uses_add_embeddings_in_either_form(store, kind) -> None:
    target = kind()
    assert export_to(target, store, "clip", batch_size=6) == 20  # type: ignore[arg-type]
    vector = store.vectors("clip", ["r7"])["r7"]
    text, added, metadata = target.added["r7"]
    np.testing.assert_allclose(added, vector, rtol=1e-6)
    assert text == "text 7" and metadata["uri"] == "/p/7.jpg" and len(target.added) == 20


def test_a_store_without_add_embeddings_is_refused(store) -> None:
    class Plain:
        pass

    with pytest.raises(InvalidInputError, match="add_embeddings"):
        export_to(Plain(), store, "clip")  # type: ignore[arg-type]
