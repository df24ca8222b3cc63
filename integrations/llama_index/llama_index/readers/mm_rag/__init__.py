"""mm-rag for LlamaIndex: readers — `WhisperReader` (speech), `ImageReader` and `VideoReader` (keyframes + speech)."""

from llama_index.readers.mm_rag.base import ImageReader, VideoReader, WhisperReader

__all__ = ["ImageReader", "VideoReader", "WhisperReader"]
