"""LangChain integration of mm-rag: a multimodal vector store, CLIP/text embeddings, a loader for every file
kind mm-rag reads and Whisper/image/video loaders, a retriever, and a retrieval tool for agents that answers
with text and images."""

from langchain_mm_rag._spaces import IncompatibleSpaceError
from langchain_mm_rag.context import context_to_blocks, documents_to_context
from langchain_mm_rag.embeddings import MMRagEmbeddings, OpenCLIPEmbeddings, TextEmbeddings
from langchain_mm_rag.export import export_to
from langchain_mm_rag.loaders import (
    ImageLoader,
    MMRagLoader,
    VideoLoader,
    WhisperSegmentLoader,
    WhisperSegmentParser,
)
from langchain_mm_rag.retrievers import MMRagRetriever
from langchain_mm_rag.tools import MultimodalSearchTool, create_multimodal_retriever_tool
from langchain_mm_rag.vectorstores import MMRagVectorStore

__all__ = [
    "ImageLoader",
    "IncompatibleSpaceError",
    "MMRagEmbeddings",
    "MMRagLoader",
    "MMRagRetriever",
    "MMRagVectorStore",
    "MultimodalSearchTool",
    "OpenCLIPEmbeddings",
    "TextEmbeddings",
    "VideoLoader",
    "WhisperSegmentLoader",
    "WhisperSegmentParser",
    "context_to_blocks",
    "create_multimodal_retriever_tool",
    "documents_to_context",
    "export_to",
]
