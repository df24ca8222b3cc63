"""LlamaIndex readers over mm-rag's media decoding: speech (Whisper), images and video (keyframes + speech).

Each file's documents share ``media_id`` (mm-rag's document id of the file: its absolute path) and ``source``
(the file's path). Transcript windows and keyframes carry numeric ``start``/``end`` seconds on one clock, so a
keyframe and the speech around it can be joined by ``media_id`` and time. Document ids are stable: derived
from the file's content and the item's position, as mm-rag's own ingestion derives record ids.
"""

from __future__ import annotations

import base64
import io
import mimetypes
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import Document, ImageDocument

from mm_rag import InvalidInputError, Record, WhisperTranscriber, make_id
from mm_rag._optional import require
from mm_rag.embed.media import load_image
from mm_rag.embed.transcript import (
    DEFAULT_MAX_CHARS,
    DEFAULT_OVERLAP_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    Transcriber,
    Transcript,
    transcript_records,
    transcript_windows,
)
from mm_rag.embed.video import SCENE_THRESHOLD, keyframe_records, sample_keyframes, video_audio
from mm_rag.ingestion.discover import content_hash, document_id

FilePath = str | os.PathLike[str]
# Bookkeeping fields: kept out of the text that is embedded (they would only add noise to the vector).
_NOT_EMBEDDED = [
    "start",
    "end",
    "language",
    "confidence",
    "media_id",
    "source",
    "file_name",
    "frame_time",
    "scene_change",
    "mime_type",
    "width",
    "height",
]


class _Windows:
    """How transcripts are cut into passages (see `mm_rag.embed.transcript.transcript_windows`)."""

    def __init__(self, window_seconds: float, overlap_seconds: float, max_chars: int) -> None:
        self.window_seconds, self.overlap_seconds, self.max_chars = window_seconds, overlap_seconds, max_chars
        transcript_windows([], window_seconds, overlap_seconds, max_chars)  # checks the settings now

    def documents(
        self, transcript: Transcript, path: Path, digest: str, modality: str, extra: dict[str, Any]
    ) -> list[Document]:
        windows = transcript_windows(transcript.segments, self.window_seconds, self.overlap_seconds, self.max_chars)
        records = transcript_records(
            windows,
            content_hash=digest,
            doc_id=document_id(path),
            uri=str(path),
            modality=modality,  # type: ignore[arg-type]
            language=transcript.language,
            metadata=_base_metadata(path, extra),
        )
        return [
            Document(
                id_=record.id,
                text=record.text or "",
                metadata=dict(record.metadata),
                excluded_embed_metadata_keys=list(_NOT_EMBEDDED),
            )
            for record in records
        ]


class WhisperReader(BaseReader):
    """Speech in an audio (or video) file → one `Document` per transcript window.

    Each document's metadata holds numeric ``start``/``end`` (seconds), ``language``, ``confidence``,
    ``source``, ``media_id`` and ``file_name``.

    Args:
        transcriber: A ready `WhisperTranscriber` (or any mm-rag `Transcriber`); None builds one from `model`.
        model: Whisper model name or local path, when no transcriber is given.
        window_seconds, overlap_seconds, max_chars: How consecutive segments are grouped into passages.
    """

    def __init__(
        self,
        transcriber: Transcriber | None = None,
        *,
        model: FilePath = "tiny.en",
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        self.transcriber = transcriber if transcriber is not None else WhisperTranscriber(model)
        self._windows = _Windows(window_seconds, overlap_seconds, max_chars)

    def lazy_load_data(
        self, file: FilePath, extra_info: dict[str, Any] | None = None, fs: Any = None
    ) -> Iterator[Document]:
        """Transcribe `file` and yield its windows (none for silence).

        Raises:
            MediaError: the file cannot be decoded, naming it.
        """
        path = _local_file(file, fs)
        transcript = self.transcriber.transcribe(path)
        yield from self._windows.documents(transcript, path, content_hash(path), "audio", extra_info or {})


class ImageReader(BaseReader):
    """An image file → one `ImageDocument` with ``image_path``, ``image_mimetype`` and metadata ``width``,
    ``height`` (as stored, before any EXIF rotation), ``file_name``, ``source`` and ``media_id``."""

    def lazy_load_data(
        self, file: FilePath, extra_info: dict[str, Any] | None = None, fs: Any = None
    ) -> Iterator[ImageDocument]:
        """Check that `file` decodes as an image and yield its document.

        Raises:
            MediaError: unreadable, not an image, corrupt or too large, naming the file.
        """
        path = _local_file(file, fs)
        image = load_image(path)
        width, height = image.info["source_size"]
        metadata = {**_base_metadata(path, extra_info or {}), "width": width, "height": height}
        yield ImageDocument(
            id_=make_id(content_hash(path), document_id(path)),
            image_path=str(path),
            image_mimetype=_image_mimetype(path),
            metadata=metadata,
            excluded_embed_metadata_keys=list(_NOT_EMBEDDED),
        )


class VideoReader(BaseReader):
    """A video → keyframes as `ImageDocument`s, then its speech as transcript `Document`s.

    Keyframes carry metadata ``start``/``end`` (the span of video the frame stands for), ``frame_time``,
    ``scene_change``, ``mime_type`` (of the video), ``source``, ``media_id`` and ``file_name``; their image is a
    PNG, inline (``image``) or, with `frames_dir`, a file there (``image_path``). Transcript windows have the
    metadata `WhisperReader` gives, on the same clock.

    Args:
        transcriber: Transcribes the audio track; None reads keyframes only.
        every_seconds, scene_threshold: Keyframe sampling (see `mm_rag.embed.video.sample_keyframes`).
        frames_dir: Folder to write keyframe PNGs to; None keeps them inside the documents.
        window_seconds, overlap_seconds, max_chars: Transcript windows, as for `WhisperReader`.
    """

    def __init__(
        self,
        transcriber: Transcriber | None = None,
        *,
        every_seconds: float = 2.0,
        scene_threshold: float | None = SCENE_THRESHOLD,
        frames_dir: FilePath | None = None,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        self.transcriber = transcriber
        self.every_seconds = every_seconds
        self.scene_threshold = scene_threshold
        self.frames_dir = None if frames_dir is None else Path(frames_dir)
        self._windows = _Windows(window_seconds, overlap_seconds, max_chars)

    def lazy_load_data(
        self, file: FilePath, extra_info: dict[str, Any] | None = None, fs: Any = None
    ) -> Iterator[Document]:
        """Yield `file`'s keyframes, then its transcript windows (when there is a transcriber and speech).

        Raises:
            MediaError: the video cannot be decoded, naming it.
        """
        path = _local_file(file, fs)
        extra = extra_info or {}
        keyframes = sample_keyframes(path, self.every_seconds, self.scene_threshold)
        records = keyframe_records(
            keyframes, doc_id=document_id(path), uri=str(path), metadata=_base_metadata(path, extra)
        )
        for record, keyframe in zip(records, keyframes):
            yield self._frame_document(record, keyframe.image)
        if self.transcriber is not None:
            audio = video_audio(path)
            if audio is not None:
                transcript = self.transcriber.transcribe(audio)
                yield from self._windows.documents(transcript, path, content_hash(path), "video", extra)

    def _frame_document(self, record: Record, image: Any) -> ImageDocument:
        common = {
            "id_": record.id,
            "metadata": dict(record.metadata),
            "excluded_embed_metadata_keys": list(_NOT_EMBEDDED),
        }
        if self.frames_dir is not None:
            self.frames_dir.mkdir(parents=True, exist_ok=True)
            target = self.frames_dir / f"{record.id}.png"
            image.save(target, format="PNG")
            return ImageDocument(image_path=str(target), image_mimetype="image/png", **common)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return ImageDocument(
            image=base64.b64encode(buffer.getvalue()).decode("ascii"), image_mimetype="image/png", **common
        )


def _local_file(file: FilePath, fs: Any) -> Path:
    """`file` as an absolute path; refuses an fsspec filesystem other than the local one."""
    protocol = "file" if fs is None else getattr(fs, "protocol", None)
    protocols = {protocol} if isinstance(protocol, str) else set(protocol or ())
    if not protocols & {"file", "local"}:
        raise InvalidInputError(f"mm-rag readers read local files only, not from {type(fs).__name__} ({protocol!r})")
    return Path(file).absolute()


def _base_metadata(path: Path, extra: dict[str, Any]) -> dict[str, Any]:
    return {**extra, "file_name": path.name, "source": str(path), "media_id": document_id(path)}


def _image_mimetype(path: Path) -> str | None:
    Image = require("PIL.Image", "image reading")

    with Image.open(path) as opened:  # the format the content has, whatever the file is called
        return Image.MIME.get(opened.format or "") or mimetypes.guess_type(path.name)[0]
