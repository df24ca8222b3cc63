"""Stream a space's records and vectors out of a store, e.g. into another framework's vector store.

`iter_export` reads the catalog page by page and the space's stored vectors (normalised, for cosine) for each
page, so a store of any size leaves in batches of bounded memory. The integrations' ``export_to`` functions
(`langchain_mm_rag.export_to`, `llama_index.vector_stores.mm_rag.export_to`) push those batches into any
LangChain or LlamaIndex vector store — a Milvus or Qdrant cluster included — without re-embedding.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import numpy as np

from mm_rag.errors import InvalidInputError
from mm_rag.records import Record
from mm_rag.store.store import MultimodalStore


def iter_export(
    store: MultimodalStore, space: str, batch_size: int = 1024
) -> Iterator[tuple[list[Record], np.ndarray]]:
    """Batches of (records, vectors) of every record with a vector in `space`, oldest first.

    Each batch holds at most `batch_size` records and an ``(n, dim)`` float32 array, row i the vector of
    record i. Records without a vector in `space` are left out.

    Raises:
        UnknownSpaceError: no such space.
        InvalidInputError: `batch_size` is not a positive integer.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InvalidInputError(f"iter_export: batch_size must be a positive integer, got {batch_size!r}")
    dim = store.spaces[space].dim if space in store.spaces else store.count(space)  # count raises for unknown
    records = iter(store)
    while page := list(islice(records, batch_size)):
        vectors = store.vectors(space, [record.id for record in page])
        kept = [record for record in page if record.id in vectors]
        if kept:
            yield (
                kept,
                np.stack([vectors[record.id] for record in kept]).astype(np.float32, copy=False).reshape(-1, dim),
            )


__all__ = ["iter_export"]
