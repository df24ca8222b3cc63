"""mm-rag: multimodal retrieval (images, transcribed audio and video, text) for LLM applications.

Heavy libraries (faiss, torch, open_clip, whisper) load on first use, so importing this package is fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mm_rag.errors import (
    FilterError,
    InvalidInputError,
    MMRagError,
    ReadOnlyStoreError,
    StoreFormatError,
    StoreLockedError,
    StoreWriteError,
    UnknownSpaceError,
)
from mm_rag.records import Hit, Modality, Record, make_id

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mm_rag.context import Context, build_context
    from mm_rag.embed import MediaError, OpenCLIPEmbedder, TextEmbedder, WhisperTranscriber
    from mm_rag.ingestion import IngestReport, ingest
    from mm_rag.retrieval import MultimodalRetriever, Retrieved
    from mm_rag.store import MultimodalStore, SpaceConfig

_LAZY = {
    "MultimodalStore": "mm_rag.store",
    "SpaceConfig": "mm_rag.store",
    "OpenCLIPEmbedder": "mm_rag.embed",
    "TextEmbedder": "mm_rag.embed",
    "WhisperTranscriber": "mm_rag.embed",
    "MediaError": "mm_rag.embed",
    "ingest": "mm_rag.ingestion",
    "IngestReport": "mm_rag.ingestion",
    "MultimodalRetriever": "mm_rag.retrieval",
    "Retrieved": "mm_rag.retrieval",
    "Context": "mm_rag.context",
    "build_context": "mm_rag.context",
}

__all__ = [
    "Context",
    "FilterError",
    "Hit",
    "IngestReport",
    "InvalidInputError",
    "MMRagError",
    "MediaError",
    "Modality",
    "MultimodalRetriever",
    "MultimodalStore",
    "OpenCLIPEmbedder",
    "ReadOnlyStoreError",
    "Record",
    "Retrieved",
    "SpaceConfig",
    "StoreFormatError",
    "StoreLockedError",
    "StoreWriteError",
    "TextEmbedder",
    "UnknownSpaceError",
    "WhisperTranscriber",
    "build_context",
    "ingest",
    "make_id",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mm_rag' has no attribute {name!r}")
