"""`export_to`: copy one space of an mm-rag store into any LlamaIndex vector store, embeddings included."""

from __future__ import annotations

from llama_index.core.vector_stores.types import BasePydanticVectorStore
from llama_index.vector_stores.mm_rag._convert import record_to_node

from mm_rag import MultimodalStore
from mm_rag.export import iter_export


def export_to(vector_store: BasePydanticVectorStore, store: MultimodalStore, space: str, batch_size: int = 1024) -> int:
    """Add every record with a vector in `space` to `vector_store` as nodes with their stored embedding.

    Records become the nodes `MMRagVectorStore` returns (`TextNode`, or `ImageNode` for pictures and
    keyframes), each with ``embedding`` set, and go to ``vector_store.add`` one batch at a time (a Qdrant or
    Milvus store of LlamaIndex included). Returns how many were added.
    """
    total = 0
    for records, vectors in iter_export(store, space, batch_size):
        nodes = [record_to_node(record) for record in records]
        for node, vector in zip(nodes, vectors.tolist()):
            node.embedding = vector
        vector_store.add(nodes)
        total += len(nodes)
    return total
