"""`MMRagRetriever`: a retriever over `MMRagVectorStore` with `k`, `filter` and the search type as fields."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict

from langchain_mm_rag._convert import FilterLike
from langchain_mm_rag.vectorstores import MMRagVectorStore
from mm_rag.errors import InvalidInputError

SearchType = Literal["similarity", "mmr", "similarity_score_threshold", "hybrid", "keyword"]


class MMRagRetriever(BaseRetriever):
    """Retrieves Documents from an `MMRagVectorStore`.

    Attributes:
        vectorstore: The store searched.
        k: Documents returned (``invoke(query, k=…)`` overrides it for one call, as do the other fields).
        filter: mm-rag filter dict (``$neq`` accepted) or a ``Document -> bool`` callable.
        search_type: ``"similarity"``, ``"mmr"`` (diverse results), ``"similarity_score_threshold"``,
            ``"hybrid"`` (dense and keyword (BM25) rankings fused: exact names, codes and numbers found too) or
            ``"keyword"`` (BM25 only).
        score_threshold: Least relevance in [0, 1] kept by ``"similarity_score_threshold"``.
        fetch_k: Candidates MMR chooses from, and that each ranking of ``"hybrid"`` contributes.
        lambda_mult: MMR's balance: 1 is plain similarity, 0 maximal diversity.
        keyword_weight: Weight of the keyword ranking against the dense one (1) in ``"hybrid"``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    vectorstore: MMRagVectorStore
    k: int = 4
    filter: FilterLike = None
    search_type: SearchType = "similarity"
    score_threshold: float | None = None
    fetch_k: int = 20
    lambda_mult: float = 0.5
    keyword_weight: float = 1.0

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        unknown = set(kwargs) - {"k", "filter", "search_type", "score_threshold", "fetch_k", "lambda_mult", "keyword_weight"}
        if unknown:
            raise InvalidInputError(f"MMRagRetriever: unknown search arguments {sorted(unknown)}")
        settings = {name: kwargs.get(name, getattr(self, name)) for name in ("k", "filter", "search_type")}
        k, filter, search_type = settings["k"], settings["filter"], settings["search_type"]
        if search_type == "similarity":
            return self.vectorstore.similarity_search(query, k, filter)
        if search_type == "mmr":
            fetch_k = kwargs.get("fetch_k", self.fetch_k)
            lambda_mult = kwargs.get("lambda_mult", self.lambda_mult)
            return self.vectorstore.max_marginal_relevance_search(query, k, fetch_k, lambda_mult, filter)
        if search_type == "similarity_score_threshold":
            threshold = kwargs.get("score_threshold", self.score_threshold)
            pairs = self.vectorstore.similarity_search_with_relevance_scores(
                query, k, filter=filter, score_threshold=threshold
            )
            return [document for document, _ in pairs]
        if search_type == "hybrid":
            fetch_k = kwargs.get("fetch_k", self.fetch_k)
            weight = kwargs.get("keyword_weight", self.keyword_weight)
            return self.vectorstore.hybrid_search(query, k, filter, fetch_k=fetch_k, keyword_weight=weight)
        if search_type == "keyword":
            return self.vectorstore.keyword_search(query, k, filter)
        raise InvalidInputError(
            f"unknown search_type {search_type!r}; expected similarity, mmr, similarity_score_threshold, hybrid"
            " or keyword"
        )

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return await run_in_executor(
            None, self._get_relevant_documents, query, run_manager=run_manager.get_sync(), **kwargs
        )
