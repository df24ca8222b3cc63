"""`MMRagVectorStore`: a LlamaIndex vector store over one space of an mm-rag `MultimodalStore`."""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.simple import DEFAULT_PERSIST_FNAME, DEFAULT_VECTOR_STORE, NAMESPACE_SEP
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.vector_stores.mm_rag import _persist
from llama_index.vector_stores.mm_rag._convert import node_to_record, record_to_node
from llama_index.vector_stores.mm_rag._filters import MMRagFilter, translate_filters

from mm_rag import Hit, InvalidInputError, MMRagError, MultimodalStore
from mm_rag.mmr import mmr_select
from mm_rag.retrieval import fuse_rankings
from mm_rag.store.durable import write_atomically

if TYPE_CHECKING:
    import fsspec

DEFAULT_SPACE = "llama_index"
DEFAULT_MMR_THRESHOLD = 0.5
DEFAULT_PREFETCH_FACTOR = 4.0  # candidates fetched per result before MMR picks
DEFAULT_ALPHA = 0.5  # HYBRID without an alpha: dense and keyword scores weigh the same
_SUPPORTED_MODES = (
    VectorStoreQueryMode.DEFAULT,
    VectorStoreQueryMode.MMR,
    VectorStoreQueryMode.TEXT_SEARCH,
    VectorStoreQueryMode.HYBRID,
)


class MMRagVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store kept in an mm-rag `MultimodalStore` (SQLite catalog + Faiss index).

    Nodes are stored whole (``stores_text=True``): text and image nodes come back exactly as added, with
    their metadata filterable in SQL (every `FilterOperator`, nested `MetadataFilters`). The space is created
    from the first embeddings added, with their dimension.

    Args:
        store: An existing `MultimodalStore` to use; None for a new one (see `path`). The vector store treats
            the records of the store as its nodes.
        path: With no `store`: the directory of a persistent store (opened, or created when empty); None for a
            temporary store, deleted when closed.
        space: The store space that holds this vector store's embeddings.
        metric: The space's similarity when it is created: ``"cosine"``, ``"ip"`` or ``"l2"``.

    Examples:
        >>> store = MMRagVectorStore()                       # temporary
        >>> store = MMRagVectorStore(path="./my-store")      # persistent, saved by `persist`
    """

    stores_text: bool = True
    is_embedding_query: bool = True
    space: str = Field(default=DEFAULT_SPACE, description="The mm-rag space that holds the embeddings.")
    metric: str = Field(default="cosine", description="Similarity of the space: cosine, ip or l2.")

    _store: MultimodalStore = PrivateAttr()

    def __init__(
        self,
        store: MultimodalStore | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        space: str = DEFAULT_SPACE,
        metric: str = "cosine",
        **kwargs: Any,
    ) -> None:
        if store is not None and path is not None:
            raise InvalidInputError("MMRagVectorStore: pass either an existing store or a path, not both")
        if store is not None and not isinstance(store, MultimodalStore):
            raise InvalidInputError(f"MMRagVectorStore: store must be a MultimodalStore, got {type(store).__name__}")
        super().__init__(space=space, metric=metric, **kwargs)
        self._store = store if store is not None else MultimodalStore(path)

    @classmethod
    def class_name(cls) -> str:
        return "MMRagVectorStore"

    @property
    def client(self) -> MultimodalStore:
        """The underlying mm-rag `MultimodalStore`."""
        return self._store

    @property
    def store(self) -> MultimodalStore:
        """The underlying mm-rag `MultimodalStore`."""
        return self._store

    # --- writes ---------------------------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store `nodes` with their embeddings, replacing nodes with the same ids (an id repeated in `nodes`: the
        last one wins, as in LlamaIndex's `SimpleVectorStore`); returns the node ids.

        Raises:
            InvalidInputError: a node without an embedding (named), embeddings of different or wrong
                dimension, non-finite values, or metadata that is not JSON-serialisable. Nothing is stored then.
        """
        nodes = list(nodes)
        ids = [node.node_id for node in nodes]
        if not ids:
            return []
        latest = list({node.node_id: node for node in nodes}.values())  # one record per id: the last node given
        records = [node_to_record(node) for node in latest]
        vectors = _embeddings(latest)
        created = self.space not in self._store.spaces
        if created:
            self._store.create_space(self.space, vectors.shape[1], self.metric)
        try:
            self._store.upsert(records, {self.space: vectors})
        except MMRagError:
            if created:  # leave the store as it was: without the space the failed batch would have made
                self._store.drop_space(self.space)
            raise
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document `ref_doc_id`."""
        self._store.delete_doc(ref_doc_id)

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes among `node_ids` that match `filters` (either may be None, not both: see `clear`)."""
        if node_ids is None and filters is None:
            raise InvalidInputError("delete_nodes: give node_ids or filters (clear() deletes every node)")
        if node_ids is not None and not node_ids:
            return
        found = self._store.find(self._where(filters, node_ids, None))
        if found:
            self._store.delete([record.id for record in found])

    def clear(self) -> None:
        """Delete every node (the space and its dimension stay)."""
        self._store.clear()

    # --- reads ----------------------------------------------------------------------------------------------
    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """The stored nodes among `node_ids` (in that order) that match `filters`; every node when both are None."""
        if node_ids is not None and not node_ids:
            return []
        found = self._store.find(self._where(filters, node_ids, None))
        if node_ids:
            position = {node_id: index for index, node_id in enumerate(node_ids)}
            found.sort(key=lambda record: position[record.id])
        return [record_to_node(record) for record in found]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The `similarity_top_k` nodes nearest to `query.query_embedding` among those matching its filters.

        Modes: ``default`` (nearest first); ``mmr`` (maximal marginal relevance among the nearest
        ``mmr_prefetch_k`` candidates, default ``mmr_prefetch_factor`` (4) × k; ``mmr_threshold`` — from the
        query or `kwargs`, default 0.5 — weighs relevance against diversity); ``text_search`` (the nodes whose
        text best matches `query.query_str`, BM25 over the store's keyword index, `sparse_top_k` or else
        `similarity_top_k` of them); ``hybrid`` (the dense `similarity_top_k` and the keyword `sparse_top_k`
        fused as a convex combination, dense weighted `alpha` (default 0.5) and keywords 1 - `alpha`, best
        `hybrid_top_k` or else `similarity_top_k` kept). Similarities are the store's scores (cosine by
        default; BM25 for text search; the fused score for hybrid), higher is better. Empty
        `node_ids`/`doc_ids` lists do not restrict the search (as `MultiModalVectorStoreIndex` passes them).

        Raises:
            InvalidInputError: no query embedding (no query text for text search and hybrid), an unsupported
                mode, a wrong dimension, a bad filter or an `alpha` outside [0, 1].
        """
        mode = query.mode
        if mode not in _SUPPORTED_MODES:
            raise InvalidInputError(
                f"MMRagVectorStore does not support query mode {str(mode.value)!r};"
                " use 'default', 'mmr', 'text_search' or 'hybrid'"
            )
        keywords = mode in (VectorStoreQueryMode.TEXT_SEARCH, VectorStoreQueryMode.HYBRID)
        if keywords and not (query.query_str or "").strip():
            raise InvalidInputError(f"MMRagVectorStore.query in mode {mode.value!r} needs a query_str")
        if query.query_embedding is None and mode != VectorStoreQueryMode.TEXT_SEARCH:
            raise InvalidInputError("MMRagVectorStore.query needs a query_embedding")
        if query.similarity_top_k < 1:
            raise InvalidInputError(f"similarity_top_k must be at least 1, got {query.similarity_top_k}")
        where = self._where(query.filters, query.node_ids, query.doc_ids)
        if self.space not in self._store.spaces:  # nothing added yet
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        if mode == VectorStoreQueryMode.TEXT_SEARCH:
            return _result([(hit, hit.score) for hit in self._keyword_hits(query, where)])
        vector = np.asarray(query.query_embedding, dtype=np.float32)
        if mode == VectorStoreQueryMode.MMR:
            hits = self._diverse_hits(vector, query, where, kwargs)
        else:
            hits = self._store.search(self.space, vector, query.similarity_top_k, where)
        if mode == VectorStoreQueryMode.HYBRID:
            alpha = DEFAULT_ALPHA if query.alpha is None else float(query.alpha)
            if not 0.0 <= alpha <= 1.0:
                raise InvalidInputError(f"alpha must be in [0, 1], got {query.alpha}")
            fused = fuse_rankings([hits, self._keyword_hits(query, where)], [alpha, 1.0 - alpha], "convex")
            return _result(fused[: query.hybrid_top_k or query.similarity_top_k])
        return _result([(hit, hit.score) for hit in hits])

    # --- async: the same operations on a worker thread, so the event loop is not blocked ----------------------
    async def async_add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **add_kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)

    # --- helpers --------------------------------------------------------------------------------------------
    def _keyword_hits(self, query: VectorStoreQuery, where: MMRagFilter | None) -> list[Hit]:
        k = query.sparse_top_k or query.similarity_top_k
        return self._store.search_text(query.query_str or "", k, where, space=self.space)

    def _diverse_hits(
        self, vector: np.ndarray, query: VectorStoreQuery, where: MMRagFilter | None, options: dict[str, Any]
    ) -> list[Hit]:
        threshold = query.mmr_threshold if query.mmr_threshold is not None else options.get("mmr_threshold")
        threshold = DEFAULT_MMR_THRESHOLD if threshold is None else float(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise InvalidInputError(f"mmr_threshold must be in [0, 1], got {threshold}")
        k = query.similarity_top_k
        factor = float(options.get("mmr_prefetch_factor", DEFAULT_PREFETCH_FACTOR))
        prefetch = int(options.get("mmr_prefetch_k") or math.ceil(k * factor))
        candidates = self._store.search(self.space, vector, max(k, prefetch), where)
        stored = self._store.vectors(self.space, [hit.record.id for hit in candidates])
        candidates = [hit for hit in candidates if hit.record.id in stored]
        if not candidates:
            return []
        matrix = np.stack([stored[hit.record.id] for hit in candidates])
        return [candidates[index] for index in mmr_select(vector, matrix, k, threshold)]

    def _where(
        self, filters: MetadataFilters | None, node_ids: list[str] | None, doc_ids: list[str] | None
    ) -> MMRagFilter | None:
        parts = [part for part in (translate_filters(filters),) if part is not None]
        if node_ids:
            parts.append({"id": {"$in": list(node_ids)}})
        if doc_ids:
            parts.append({"doc_id": {"$in": list(doc_ids)}})
        return None if not parts else parts[0] if len(parts) == 1 else {"$and": parts}

    # --- persistence ----------------------------------------------------------------------------------------
    def persist(self, persist_path: str, fs: fsspec.AbstractFileSystem | None = None) -> None:
        """Save the store to the directory derived from `persist_path` and describe it in `persist_path`.

        `persist_path` is what `StorageContext.persist` passes (``<dir>/<namespace>__vector_store.json``); the
        store goes to ``<dir>/<namespace>__vector_store.mmrag/``. Only the local filesystem is supported.
        """
        _persist.check_local_filesystem(fs)
        target = _persist.store_dir_for(persist_path)
        _persist.write_store(self._store, target)
        described = _persist.sidecar(target, self.space, self.stores_text)
        write_atomically(Path(persist_path), json.dumps(described, indent=2).encode())

    @classmethod
    def from_persist_path(
        cls, persist_path: str, fs: fsspec.AbstractFileSystem | None = None, **kwargs: Any
    ) -> MMRagVectorStore:
        """Open the store that `persist` wrote for `persist_path` (in place: later `persist` calls save it there)."""
        _persist.check_local_filesystem(fs)
        directory, described = _persist.read_sidecar(Path(persist_path))
        kwargs.setdefault("space", described["space"])
        return cls(MultimodalStore.open(directory), **kwargs)

    @classmethod
    def from_persist_dir(
        cls,
        persist_dir: str | os.PathLike[str],
        namespace: str = DEFAULT_VECTOR_STORE,
        fs: fsspec.AbstractFileSystem | None = None,
        **kwargs: Any,
    ) -> MMRagVectorStore:
        """Open the store persisted by `StorageContext.persist(persist_dir)` under `namespace`
        (``"default"`` for the text store, ``"image"`` for a multimodal index's image store)."""
        path = Path(persist_dir) / f"{namespace}{NAMESPACE_SEP}{DEFAULT_PERSIST_FNAME}"
        return cls.from_persist_path(str(path), fs=fs, **kwargs)


def _embeddings(nodes: list[BaseNode]) -> np.ndarray:
    """The nodes' embeddings as one ``(n, dim)`` array; names the first node without one or of another size."""
    dim = None
    for node in nodes:
        if node.embedding is None:
            raise InvalidInputError(
                f"node {node.node_id!r} has no embedding; MMRagVectorStore stores embedded nodes (add them"
                " through an index with an embed_model, or set node.embedding)"
            )
        if dim is None:
            dim = len(node.embedding)
        elif len(node.embedding) != dim:
            raise InvalidInputError(
                f"node {node.node_id!r} has a {len(node.embedding)}-dimensional embedding; the others in the"
                f" batch have {dim}"
            )
    if not dim:
        raise InvalidInputError(f"node {nodes[0].node_id!r} has an empty embedding")
    return np.asarray([node.embedding for node in nodes], dtype=np.float32)


def _result(scored: list[tuple[Hit, float]]) -> VectorStoreQueryResult:
    return VectorStoreQueryResult(
        nodes=[record_to_node(hit.record) for hit, _ in scored],
        similarities=[score for _, score in scored],
        ids=[hit.record.id for hit, _ in scored],
    )
