"""`export_to`: copy one space of an mm-rag store into any LangChain vector store, vectors included."""

from __future__ import annotations

import inspect
from typing import Any

from langchain_core.vectorstores import InMemoryVectorStore, VectorStore

from langchain_mm_rag._convert import record_to_document
from mm_rag import InvalidInputError, MultimodalStore
from mm_rag.export import iter_export


def export_to(vectorstore: VectorStore, store: MultimodalStore, space: str, batch_size: int = 1024) -> int:
    """Add every record with a vector in `space` to `vectorstore`, with its stored vector; returns the count.

    Documents read as `MMRagVectorStore` returns them (``Document.id`` = record id). LangChain's `VectorStore`
    interface has no method that takes precomputed vectors (``add_texts``/``add_documents`` always call the
    store's own embedder), so the target must offer ``add_embeddings`` — FAISS's
    ``(text_embeddings, metadatas, ids)`` or Milvus's ``(texts, embeddings, metadatas, ids)`` form — or be an
    `InMemoryVectorStore`, whose entries are written directly. The target's embedder must be the model of
    `space` (``store.spaces[space].model``) for its later queries to make sense.

    Raises:
        InvalidInputError: the target cannot take precomputed vectors.
    """
    add = _adder(vectorstore)
    total = 0
    for records, vectors in iter_export(store, space, batch_size):
        documents = [record_to_document(record) for record in records]
        add(documents, vectors.tolist())
        total += len(records)
    return total


def _adder(vectorstore: VectorStore) -> Any:
    if isinstance(vectorstore, InMemoryVectorStore):

        def add_in_memory(documents: list, vectors: list) -> None:
            for document, vector in zip(documents, vectors):
                vectorstore.store[document.id] = {
                    "id": document.id, "vector": vector, "text": document.page_content, "metadata": document.metadata,
                }  # fmt: skip

        return add_in_memory
    method = getattr(vectorstore, "add_embeddings", None)
    if method is None:
        raise InvalidInputError(
            f"{type(vectorstore).__name__} has no add_embeddings: LangChain's add_texts/add_documents re-embed,"
            " so precomputed vectors cannot be added; re-embed with add_documents, or use a store with add_embeddings"
        )
    parameters = inspect.signature(method).parameters
    if "text_embeddings" in parameters:
        return lambda documents, vectors: method(
            text_embeddings=[(d.page_content, v) for d, v in zip(documents, vectors)],
            metadatas=[d.metadata for d in documents],
            ids=[d.id for d in documents],
        )
    return lambda documents, vectors: method(
        texts=[d.page_content for d in documents],
        embeddings=vectors,
        metadatas=[d.metadata for d in documents],
        ids=[d.id for d in documents],
    )
