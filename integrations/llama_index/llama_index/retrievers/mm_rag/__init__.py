"""mm-rag for LlamaIndex: retrievers — `MMRagRetriever` (text passages + images for one query)."""

from llama_index.retrievers.mm_rag.base import MMRagRetriever

__all__ = ["MMRagRetriever"]
