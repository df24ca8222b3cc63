"""`MMRagRetriever`: text passages and images for one query, from a text store and an image store."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import NodeWithScore, QueryBundle, QueryType
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from mm_rag import InvalidInputError

DEFAULT_TOP_K = 2


class MMRagRetriever(BaseRetriever):
    """Retrieves the `similarity_top_k` nearest text nodes and the `image_similarity_top_k` nearest images.

    A drop-in for ``MultiModalVectorStoreIndex(...).as_retriever(...)``: `retrieve` returns the text hits then
    the image hits, and `text_retrieve`, `text_to_image_retrieve` and `image_to_image_retrieve` ask one store.
    The text store is queried with `embed_model`'s query embedding, the image store with `image_embed_model`'s
    (a CLIP text embedding, so a sentence finds pictures). Either store may be None.

    Args:
        vector_store: The store of text nodes (any LlamaIndex vector store that keeps nodes, e.g. `MMRagVectorStore`).
        image_store: The store of image nodes.
        embed_model: Embeds queries for `vector_store`.
        image_embed_model: Embeds queries (and query images) for `image_store`.
        filters: Metadata filters applied to both stores.
        vector_store_query_mode: ``"default"`` or ``"mmr"``; `vector_store_kwargs` go to each store's query.
    """

    def __init__(
        self,
        vector_store: BasePydanticVectorStore | None = None,
        image_store: BasePydanticVectorStore | None = None,
        *,
        embed_model: BaseEmbedding | None = None,
        image_embed_model: MultiModalEmbedding | None = None,
        similarity_top_k: int = DEFAULT_TOP_K,
        image_similarity_top_k: int = DEFAULT_TOP_K,
        filters: MetadataFilters | None = None,
        vector_store_query_mode: VectorStoreQueryMode | str = VectorStoreQueryMode.DEFAULT,
        vector_store_kwargs: dict[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if vector_store is None and image_store is None:
            raise InvalidInputError("MMRagRetriever needs a vector_store, an image_store or both")
        if vector_store is not None and embed_model is None:
            raise InvalidInputError("MMRagRetriever: a vector_store needs an embed_model to embed queries")
        if image_store is not None and not isinstance(image_embed_model, MultiModalEmbedding):
            raise InvalidInputError("MMRagRetriever: an image_store needs a MultiModalEmbedding image_embed_model")
        for name, value in (("similarity_top_k", similarity_top_k), ("image_similarity_top_k", image_similarity_top_k)):
            if not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"MMRagRetriever: {name} must be a positive integer, got {value!r}")
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self.vector_store = vector_store
        self.image_store = image_store
        self.embed_model = embed_model
        self.image_embed_model = image_embed_model
        self.similarity_top_k = similarity_top_k
        self.image_similarity_top_k = image_similarity_top_k
        self.filters = filters
        self.mode = VectorStoreQueryMode(vector_store_query_mode)
        self.vector_store_kwargs = dict(vector_store_kwargs or {})

    @classmethod
    def from_index(cls, index: Any, **kwargs: Any) -> MMRagRetriever:
        """The retriever over a `MultiModalVectorStoreIndex`'s two stores and two embedding models."""
        return cls(
            index.vector_store,
            index.image_vector_store,
            embed_model=index._embed_model,
            image_embed_model=index.image_embed_model,
            **kwargs,
        )

    # --- the one implementation -------------------------------------------------------------------------------
    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._text_hits(query_bundle) + self._image_hits(query_bundle)

    def _text_hits(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.vector_store is None or self.embed_model is None:
            return []
        embedding = self.embed_model.get_agg_embedding_from_queries(query_bundle.embedding_strs)
        return self._search(self.vector_store, embedding, query_bundle.query_str, self.similarity_top_k)

    def _image_hits(self, query_bundle: QueryBundle, image: Any = None) -> list[NodeWithScore]:
        if self.image_store is None or self.image_embed_model is None:
            return []
        if image is not None:
            embedding = self.image_embed_model.get_image_embedding(image)
        else:
            embedding = self.image_embed_model.get_agg_embedding_from_queries(query_bundle.embedding_strs)
        return self._search(self.image_store, embedding, query_bundle.query_str, self.image_similarity_top_k)

    def _search(
        self, store: BasePydanticVectorStore, embedding: list[float], query_str: str, top_k: int
    ) -> list[NodeWithScore]:
        query = VectorStoreQuery(
            query_embedding=embedding,
            similarity_top_k=top_k,
            query_str=query_str,
            filters=self.filters,
            mode=self.mode,
        )
        result = store.query(query, **self.vector_store_kwargs)
        scores = result.similarities or [None] * len(result.nodes or [])
        return [NodeWithScore(node=node, score=score) for node, score in zip(result.nodes or [], scores)]

    # --- thin wrappers ----------------------------------------------------------------------------------------
    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)

    def text_retrieve(self, query: QueryType) -> list[NodeWithScore]:
        """Only the text store's hits."""
        return self._text_hits(_bundle(query))

    def text_to_image_retrieve(self, query: QueryType) -> list[NodeWithScore]:
        """Only the image store's hits for a text query."""
        return self._image_hits(_bundle(query))

    def image_to_image_retrieve(self, image_path: str) -> list[NodeWithScore]:
        """The image store's hits nearest to the image at `image_path`."""
        return self._image_hits(QueryBundle(query_str="", image_path=image_path), image=image_path)


def _bundle(query: QueryType) -> QueryBundle:
    return QueryBundle(query_str=query) if isinstance(query, str) else query
