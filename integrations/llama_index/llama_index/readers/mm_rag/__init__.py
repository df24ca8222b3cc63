"""mm-rag for LlamaIndex: readers — `MMRagReader` (every file kind mm-rag reads, as `mm_rag.ingest` stores it),
`WhisperReader` (speech), `ImageReader` and `VideoReader` (keyframes + speech)."""

from llama_index.readers.mm_rag.base import ImageReader, MMRagReader, VideoReader, WhisperReader

__all__ = ["ImageReader", "MMRagReader", "VideoReader", "WhisperReader"]
