"""mm-rag for LlamaIndex: embeddings — `OpenCLIPEmbedding` (texts + images, one CLIP space) and `TextEmbedding`."""

from llama_index.embeddings.mm_rag.base import OpenCLIPEmbedding, TextEmbedding

__all__ = ["OpenCLIPEmbedding", "TextEmbedding"]
