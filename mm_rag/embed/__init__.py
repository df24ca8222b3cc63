"""Embedders and media decoding: CLIP (images + texts), text embedders, Whisper transcription, documents, video.

Importing this package is cheap; torch, open_clip, whisper, PyAV… load when a model or decoder is first used.
"""

from mm_rag.embed.base import Embedder, MultimodalEmbedder
from mm_rag.embed.clip import OpenCLIPEmbedder
from mm_rag.embed.media import MediaError, load_image
from mm_rag.embed.text import TextEmbedder
from mm_rag.embed.transcript import Segment, Transcript, Window, transcript_records, transcript_windows
from mm_rag.embed.whisper import WhisperTranscriber

__all__ = [
    "Embedder",
    "MediaError",
    "MultimodalEmbedder",
    "OpenCLIPEmbedder",
    "Segment",
    "TextEmbedder",
    "Transcript",
    "WhisperTranscriber",
    "Window",
    "load_image",
    "transcript_records",
    "transcript_windows",
]
