"""`MMRagVectorStore`: a LangChain vector store over one space of an mm-rag `MultimodalStore`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore

from langchain_mm_rag._convert import (
    FilterLike,
    document_to_record,
    picture_of,
    picture_source,
    prepare_filter,
    record_to_document,
)
from langchain_mm_rag._search import (
    check_lengths,
    distance_relevance,
    filter_exactly,
    similarity_relevance,
)
from langchain_mm_rag._spaces import check_space, default_space, model_spec, only_space
from langchain_mm_rag.embeddings import ImageInput, MMRagEmbeddings, embeddings_from_spec
from mm_rag.errors import InvalidInputError
from mm_rag.mmr import mmr_select
from mm_rag.records import Hit, Record
from mm_rag.retrieval import fuse_rankings
from mm_rag.store import MultimodalStore


class MMRagVectorStore(VectorStore):
    """A LangChain vector store backed by an mm-rag `MultimodalStore` (SQLite catalog + Faiss).

    Args:
        embedding: Embeds texts (and, with an ``embed_image`` method such as `OpenCLIPEmbeddings`'s, images).
        path: A store directory, opened or created there; None (and no `store`) gives a temporary store.
        store: An existing `MultimodalStore` to wrap, e.g. one filled by `mm_rag.ingest`.
        space: The store space searched and written. Default: the embedding's space for `OpenCLIPEmbeddings`
            and `TextEmbeddings`; else the store's only space when it has exactly one; else ``"langchain"``.
        metric: ``"cosine"``, ``"ip"`` or ``"l2"`` for a new space (default cosine); checked against an
            existing one.

    Raises:
        IncompatibleSpaceError: the space exists with another dimension, metric or recorded model.

    The space is created on the first add, with the adapter's declared dimension (and its model `spec`,
    recorded with the space, so `load` can rebuild it) or else the width of the first vectors. Documents map
    onto records as `langchain_mm_rag._convert` describes (``Document.id`` is the record id; media Documents
    carry ``modality``/``uri``/``doc_id``/``start``/``end`` in metadata).

    Filters are mm-rag's filter language (``$eq $ne $gt $gte $lt $lte $in $nin $exists $contains $icontains
    $and $or $not``; ``$neq`` is accepted for ``$ne``), or a callable ``Document -> bool`` applied exactly. Keys
    ``id``, ``modality``, ``text``, ``uri``, ``doc_id`` address the record fields (``text`` is page_content);
    every other key a metadata field. Scores of ``*_with_score`` are mm-rag's: higher is better (cosine
    similarity for cosine spaces); ``similarity_search_with_relevance_scores`` maps them into [0, 1].
    """

    def __init__(
        self,
        embedding: Embeddings,
        *,
        path: str | os.PathLike[str] | None = None,
        store: MultimodalStore | None = None,
        space: str | None = None,
        metric: str | None = None,
    ) -> None:
        if store is not None and path is not None:
            raise InvalidInputError("MMRagVectorStore: pass a store or a path, not both")
        self._embedding = embedding
        self.store = store if store is not None else MultimodalStore(path)
        self.space = space or default_space(embedding, self.store)
        existing = self.store.spaces.get(self.space)
        if existing is not None:
            check_space(existing, embedding, metric)
        self._metric = existing.metric if existing is not None else metric or "cosine"

    @property
    def embeddings(self) -> Embeddings:
        """The embedding used for queries and added documents."""
        return self._embedding

    # --- writes -----------------------------------------------------------------------------------------
    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Embed and upsert `documents` (same id: replaced). Returns their ids.

        Ids come from the ``ids`` keyword, else ``Document.id``, else a new UUID. A Document whose metadata
        says ``modality: "image"`` with a ``uri``, or a video keyframe (``frame_uri``, or ``uri`` and
        ``frame_time`` without text), is embedded as that picture when the embedding has ``embed_image``;
        every other one by its page_content.
        """
        documents = list(documents)
        ids = _ids(kwargs.get("ids"), [document.id for document in documents])
        records = [document_to_record(document, id) for document, id in zip(documents, ids)]
        return self._upsert(records, self._embed_documents(documents) if documents else [])

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and upsert texts with optional metadata and ids (None ids get new UUIDs). Returns the ids."""
        texts = list(texts)
        check_lengths("metadatas", metadatas, len(texts))
        documents = [
            Document(page_content=text, metadata=dict(metadatas[i]) if metadatas else {})
            for i, text in enumerate(texts)
        ]
        return self.add_documents(documents, ids=ids)

    def add_embeddings(
        self,
        text_embeddings: Iterable[tuple[str, Sequence[float]]],
        metadatas: list[dict[str, Any]] | None = None,
        ids: list[str | None] | None = None,
    ) -> list[str]:
        """Upsert texts with vectors computed elsewhere (same dimension as the space). Returns the ids."""
        pairs = list(text_embeddings)
        check_lengths("metadatas", metadatas, len(pairs))
        documents = [
            Document(page_content=text, metadata=dict(metadatas[i]) if metadatas else {})
            for i, (text, _) in enumerate(pairs)
        ]
        records = [document_to_record(document, id) for document, id in zip(documents, _ids(ids, [None] * len(pairs)))]
        return self._upsert(records, [vector for _, vector in pairs])

    def add_images(
        self,
        images: Sequence[ImageInput],
        metadatas: list[dict[str, Any]] | None = None,
        ids: list[str | None] | None = None,
    ) -> list[str]:
        """Embed images (paths or bytes) with the embedding's ``embed_image`` and upsert them as ``"image"``
        records; a path is kept as the record's ``uri``. Returns the ids."""
        images = list(images)
        check_lengths("metadatas", metadatas, len(images))
        uris = [os.fspath(image) if isinstance(image, (str, os.PathLike)) else None for image in images]
        records = [
            Record(id, "image", uri=uri, metadata=dict(metadatas[i]) if metadatas else {})
            for i, (uri, id) in enumerate(zip(uris, _ids(ids, [None] * len(images))))
        ]
        return self._upsert(
            records, self._embed_images([uri or image for uri, image in zip(uris, images)]) if images else []
        )

    def _upsert(self, records: list[Record], vectors: Any) -> list[str]:
        """The one write path: check the vectors, create the space on first use, upsert atomically."""
        if not records:
            return []
        try:
            array = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"embeddings are not a rectangular array of numbers: {error}") from error
        if array.ndim != 2 or array.shape[0] != len(records) or array.shape[1] == 0:
            raise InvalidInputError(
                f"expected one vector per item ({len(records)}), got an array of shape {array.shape}"
            )
        created = self.space not in self.store.spaces
        if created:
            dim = self._embedding.dim if isinstance(self._embedding, MMRagEmbeddings) else int(array.shape[1])
            self.store.create_space(self.space, dim, self._metric, model=model_spec(self._embedding))
        try:
            self.store.upsert(records, {self.space: array})
        except InvalidInputError:
            if created:  # a refused first batch leaves no empty space behind
                self.store.drop_space(self.space)
            raise
        return [record.id for record in records]

    def _embed_documents(self, documents: list[Document]) -> list[Sequence[float]]:
        """Vectors in order: images (one batch) through ``embed_image``, the rest (one batch) as texts."""
        visual = {i: source for i, document in enumerate(documents) if (source := picture_source(document))}
        if visual and not hasattr(self._embedding, "embed_image"):
            blank = [i for i in visual if not documents[i].page_content]
            if blank:
                raise InvalidInputError(
                    f"document {blank[0]} is an image without text, and {type(self._embedding).__name__} cannot"
                    " embed images (use OpenCLIPEmbeddings, or give it a caption as page_content)"
                )
            visual = {}
        vectors: list[Sequence[float]] = [[] for _ in documents]
        if visual:
            for i, vector in zip(visual, self._embed_images([picture_of(source) for source in visual.values()])):
                vectors[i] = vector
        texts = [i for i in range(len(documents)) if i not in visual]
        if texts:
            for i, vector in zip(texts, self._embedding.embed_documents([documents[i].page_content for i in texts])):
                vectors[i] = vector
        return vectors

    def _embed_images(self, images: list[Any]) -> list[Sequence[float]]:
        embed_image = getattr(self._embedding, "embed_image", None)
        if embed_image is None:
            raise InvalidInputError(
                f"{type(self._embedding).__name__} has no embed_image: use OpenCLIPEmbeddings for images"
            )
        return embed_image(images)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete records by id (unknown ids are ignored); ``None`` deletes every record of the store."""
        if ids is None:
            self.store.clear()
        else:
            self.store.delete([ids] if isinstance(ids, str) else list(ids))
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored Documents among `ids`, in the order asked; unknown ids are left out."""
        return [record_to_document(record) for record in self.store.get(list(ids))]

    # --- search -----------------------------------------------------------------------------------------
    def similarity_search_with_score_by_vector(
        self, embedding: Sequence[float], k: int = 4, filter: FilterLike = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The search every other one calls: the `k` best (Document, score) pairs for a query vector."""
        prepared = prepare_filter(filter)
        if self.space not in self.store.spaces:
            return []
        if callable(prepared):
            return filter_exactly(lambda n: self._hits(embedding, n, None), prepared, k, self.store.count(self.space))
        return self._hits(embedding, k, prepared)

    def _hits(self, vector: Sequence[float], k: int, filter: Any) -> list[tuple[Document, float]]:
        if k < 1:
            return []
        return [(record_to_document(hit.record), hit.score) for hit in self.store.search(self.space, vector, k, filter)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: FilterLike = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The `k` Documents nearest to `query`, with mm-rag's scores (higher is better)."""
        return self.similarity_search_with_score_by_vector(self._embedding.embed_query(query), k, filter)

    def similarity_search(self, query: str, k: int = 4, filter: FilterLike = None, **kwargs: Any) -> list[Document]:
        """The `k` Documents nearest to `query`, best first."""
        return [document for document, _ in self.similarity_search_with_score(query, k, filter)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: FilterLike = None, **kwargs: Any
    ) -> list[Document]:
        """The `k` Documents nearest to a query vector, best first."""
        return [document for document, _ in self.similarity_search_with_score_by_vector(embedding, k, filter)]

    def keyword_search_with_score(
        self, query: str, k: int = 4, filter: FilterLike = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The `k` Documents whose text best matches the words of `query` (BM25 over the store's keyword index),
        with their BM25 scores (higher is better). Finds exact names, codes and numbers that embeddings blur."""
        hits = self._exactly(lambda n, where: self.store.search_text(query, n, where, space=self.space), k, filter)
        return [(record_to_document(hit.record), hit.score) for hit in hits]

    def keyword_search(self, query: str, k: int = 4, filter: FilterLike = None, **kwargs: Any) -> list[Document]:
        """`keyword_search_with_score` without the scores."""
        return [document for document, _ in self.keyword_search_with_score(query, k, filter)]

    def hybrid_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: FilterLike = None,
        *,
        fetch_k: int = 20,
        keyword_weight: float = 1.0,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Dense and keyword search together: each ranks `fetch_k` candidates, the rankings are fused as
        `mm_rag.retrieval.fuse_rankings` does by default (a convex combination of each ranking's scores over its
        best; the keyword ranking weighted `keyword_weight`, the dense one 1), the `k` best are returned with
        their fused scores (comparable within one call)."""
        if k < 1 or self.space not in self.store.spaces:
            return []
        vector = self._embedding.embed_query(query)
        fetch = max(k, fetch_k)
        dense = self._exactly(lambda n, where: self.store.search(self.space, vector, n, where), fetch, filter)
        words = self._exactly(lambda n, where: self.store.search_text(query, n, where, space=self.space), fetch, filter)
        fused = fuse_rankings([dense, words], [1.0, keyword_weight])
        return [(record_to_document(hit.record), score) for hit, score in fused[:k]]

    def hybrid_search(self, query: str, k: int = 4, filter: FilterLike = None, **kwargs: Any) -> list[Document]:
        """`hybrid_search_with_score` without the scores."""
        return [document for document, _ in self.hybrid_search_with_score(query, k, filter, **kwargs)]

    def _exactly(self, search: Callable[[int, Any], list[Hit]], k: int, filter: FilterLike) -> list[Hit]:
        """The `k` best hits of ``search(n, dict_filter)``; a callable filter is applied exactly, asking for more
        candidates until `k` pass."""
        prepared = prepare_filter(filter)
        if k < 1 or self.space not in self.store.spaces:
            return []
        if not callable(prepared):
            return search(k, prepared)
        candidates = lambda n: [(record_to_document(hit.record), hit) for hit in search(n, None)]
        return [hit for _, hit in filter_exactly(candidates, prepared, k, self.store.count(self.space))]

    def similarity_search_by_image(
        self, image: ImageInput, k: int = 4, filter: FilterLike = None, **kwargs: Any
    ) -> list[Document]:
        """The `k` Documents nearest to an image (path or bytes) in the embedding's image+text space."""
        vector = self._embed_images([os.fspath(image) if isinstance(image, os.PathLike) else image])[0]
        return self.similarity_search_by_vector(list(vector), k, filter)

    async def asimilarity_search_by_image(
        self, image: ImageInput, k: int = 4, filter: FilterLike = None, **kwargs: Any
    ) -> list[Document]:
        """`similarity_search_by_image` on an executor thread."""
        return await run_in_executor(None, self.similarity_search_by_image, image, k, filter, **kwargs)

    async def aadd_images(
        self,
        images: Sequence[ImageInput],
        metadatas: list[dict[str, Any]] | None = None,
        ids: list[str | None] | None = None,
    ) -> list[str]:
        """`add_images` on an executor thread."""
        return await run_in_executor(None, self.add_images, images, metadatas, ids)

    def max_marginal_relevance_search_with_score_by_vector(
        self,
        embedding: Sequence[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: FilterLike = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """MMR over the `fetch_k` best candidates that pass `filter`, using their stored vectors.

        Returns (Document, similarity score) pairs in the order MMR picks them.
        """
        candidates = self.similarity_search_with_score_by_vector(embedding, max(fetch_k, k), filter)
        if not candidates:
            return []
        stored = self.store.vectors(self.space, [document.id for document, _ in candidates])
        matrix = np.stack([stored[document.id] for document, _ in candidates])
        order = mmr_select(np.asarray(embedding, dtype=np.float32), matrix, k, lambda_mult)
        return [candidates[i] for i in order]

    def max_marginal_relevance_search_by_vector(
        self, embedding: list[float], k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: FilterLike = None, **kwargs: Any,
    ) -> list[Document]:  # fmt: skip
        """`k` relevant yet diverse Documents for a query vector (see the `_with_score_` variant)."""
        pairs = self.max_marginal_relevance_search_with_score_by_vector(embedding, k, fetch_k, lambda_mult, filter)
        return [document for document, _ in pairs]

    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
        filter: FilterLike = None, **kwargs: Any,
    ) -> list[Document]:  # fmt: skip
        """`k` relevant yet diverse Documents for `query`: MMR over the `fetch_k` best filtered candidates."""
        vector = self._embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Scores → [0, 1] Python floats: ``(1 + s) / 2`` clipped for cosine/ip, ``1 / (1 + distance)`` for l2."""
        metric = self.store.spaces[self.space].metric if self.space in self.store.spaces else self._metric
        return distance_relevance if metric == "l2" else similarity_relevance

    # --- construction and persistence -------------------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> Self:
        """A new store (keywords as for the constructor: ``path``, ``store``, ``space``, ``metric``) holding `texts`."""
        vectorstore = cls(embedding, **kwargs)
        vectorstore.add_texts(texts, metadatas, ids=ids)
        return vectorstore

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Make every change durable; with `path`, write a copy of the store there (a temporary store needs one).

        The directory is an ordinary mm-rag store (JSON manifest, SQLite catalog, Faiss/NumPy files, no
        pickle): `load`, `MultimodalStore.open` and the ``mm-rag`` command line all read it.
        """
        self.store.save(path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        embedding: Embeddings | None = None,
        *,
        space: str | None = None,
        **embedder_options: Any,
    ) -> Self:
        """Open the store saved at `path` (it must exist).

        Without `embedding`, the embedder the space recorded when it was created by `OpenCLIPEmbeddings`,
        `TextEmbeddings` or `mm_rag.ingest` is rebuilt (`embedder_options`, e.g. ``device="cpu"``, go to its
        constructor); `space` may be left out when the store has one space.

        Raises:
            mm_rag.StoreFormatError: no store at `path`.
            mm_rag.InvalidInputError: no `embedding` and no recorded model to rebuild (or several spaces).
        """
        store = MultimodalStore.open(path)
        if embedding is None:
            name = space or only_space(store)
            if name not in store.spaces:
                raise InvalidInputError(f"the store at {path} has no space {name!r}; it has {sorted(store.spaces)}")
            embedding = embeddings_from_spec(store.spaces[name].model, space=name, **embedder_options)
            space = name
        return cls(embedding, store=store, space=space)


def _ids(given: Sequence[str | None] | None, own: Sequence[str | None]) -> list[str]:
    """Given ids win over the Documents' own; missing ones become new UUIDs."""
    if given is not None:
        check_lengths("ids", given, len(own))
        own = given
    return [id if id else str(uuid.uuid4()) for id in own]
