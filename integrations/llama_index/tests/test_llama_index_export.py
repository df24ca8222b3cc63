"""`export_to`: a store's space lands in a LlamaIndex vector store as nodes carrying the stored embeddings."""

from __future__ import annotations

import numpy as np
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.vector_stores.mm_rag import export_to

from mm_rag import MultimodalStore, Record


def test_export_to_simple_vector_store_keeps_embeddings() -> None:
    with MultimodalStore() as store:
        store.create_space("clip", 8)
        records = [Record(f"r{i}", "image" if i % 2 else "text", text=None if i % 2 else f"text {i}",
                          uri=f"/p/{i}.jpg" if i % 2 else None, metadata={"i": i}) for i in range(15)]  # fmt: skip
        store.add(records, {"clip": np.random.default_rng(1).normal(size=(15, 8))})
        store.add([Record("bare", "text", text="no vector")])
        target = SimpleVectorStore()
        assert export_to(target, store, "clip", batch_size=4) == 15
        stored = store.vectors("clip", [record.id for record in records])
    embeddings = target.data.embedding_dict
    assert sorted(embeddings) == sorted(stored)
    for id, vector in stored.items():
        np.testing.assert_allclose(embeddings[id], vector, rtol=1e-6)
    result = target.query(VectorStoreQuery(query_embedding=stored["r4"].tolist(), similarity_top_k=1))
    assert result.ids == ["r4"]
