"""LlamaIndex readers over mm-rag's extraction: every file kind mm-rag reads (`MMRagReader`), and media-specific
ones — speech (Whisper), images and video (keyframes + speech).

`MMRagReader` and `ImageReader` convert the records of `mm_rag.ingestion.reading.file_records` (what
`mm_rag.ingest` stores), so their document ids are the record ids. The media readers' documents of one file
share ``media_id`` (mm-rag's document id of the file: its absolute path) and ``source`` (the file's path).
Transcript windows and keyframes carry numeric ``start``/``end`` seconds on one clock, so a keyframe and the
speech around it can be joined by ``media_id`` (``doc_id`` for `MMRagReader`) and time. Document ids are stable: derived from the file's
content and the item's position, as mm-rag's own ingestion derives record ids.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import Document, ImageDocument

from mm_rag import InvalidInputError, Record, WhisperTranscriber
from mm_rag.embed.media import MediaError
from mm_rag.embed.transcript import (
    DEFAULT_MAX_CHARS,
    DEFAULT_MAX_SENTENCES,
    DEFAULT_OVERLAP_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    Transcriber,
    Transcript,
    transcript_records,
    transcript_windows,
)
from mm_rag.embed.video import SCENE_THRESHOLD, keyframe_records, sample_keyframes, video_audio
from mm_rag.ingestion.discover import content_hash, document_id
from mm_rag.ingestion.extract import ExtractOptions
from mm_rag.ingestion.reading import ErrorPolicy, file_records, iter_records

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
# What `MMRagReader` adds to those: record bookkeeping, and a picture's caption (already part of its text).
_RECORD_NOT_EMBEDDED = [
    *_NOT_EMBEDDED,
    "doc_id",
    "modality",
    "page",
    "chunk",
    "char_start",
    "char_end",
    "picture",
    "caption",
    "document_type",
    "ocr_engine",
    "ocr_confidence",
]


class _Windows:
    """How transcripts are cut into passages (see `mm_rag.embed.transcript.transcript_windows`)."""

    def __init__(
        self, window_seconds: float, overlap_seconds: float, max_chars: int, max_sentences: int | None
    ) -> None:
        self.window_seconds, self.overlap_seconds, self.max_chars = window_seconds, overlap_seconds, max_chars
        self.max_sentences = max_sentences
        transcript_windows([], window_seconds, overlap_seconds, max_chars, max_sentences=max_sentences)  # checks now

    def documents(
        self, transcript: Transcript, path: Path, digest: str, modality: str, extra: dict[str, Any]
    ) -> list[Document]:
        windows = transcript_windows(
            transcript.segments,
            self.window_seconds,
            self.overlap_seconds,
            self.max_chars,
            max_sentences=self.max_sentences,
        )
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
        window_seconds, overlap_seconds, max_chars, max_sentences: How consecutive sentences are grouped into
            passages (see `mm_rag.embed.transcript.transcript_windows`; None: no sentence limit).
    """

    def __init__(
        self,
        transcriber: Transcriber | None = None,
        *,
        model: FilePath = "tiny.en",
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
        max_chars: int = DEFAULT_MAX_CHARS,
        max_sentences: int | None = DEFAULT_MAX_SENTENCES,
    ) -> None:
        self.transcriber = transcriber if transcriber is not None else WhisperTranscriber(model)
        self._windows = _Windows(window_seconds, overlap_seconds, max_chars, max_sentences)

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
    """An image file → one `ImageDocument` with ``image_path``, ``image_mimetype`` (of the content, whatever
    the file is called) and metadata ``width``, ``height`` (as stored, before any EXIF rotation),
    ``file_name``, ``source`` and ``media_id``. Its id is the image record's of `file_records`."""

    def lazy_load_data(
        self, file: FilePath, extra_info: dict[str, Any] | None = None, fs: Any = None
    ) -> Iterator[ImageDocument]:
        """Check that `file` decodes as an image and yield its document.

        Raises:
            MediaError: unreadable, not an image, corrupt or too large, naming the file.
        """
        path = _local_file(file, fs)
        records = file_records(path)
        if len(records) != 1 or records[0].modality != "image" or "picture" in records[0].metadata:
            raise MediaError(f"{path}: not an image file")
        record = records[0]
        size = {"width": record.metadata["width"], "height": record.metadata["height"]}
        yield ImageDocument(
            id_=record.id,
            image_path=str(path),
            image_mimetype=record.metadata["mime_type"],
            metadata={**_base_metadata(path, extra_info or {}), **size},
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
        window_seconds, overlap_seconds, max_chars, max_sentences: Transcript windows, as for `WhisperReader`.
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
        max_sentences: int | None = DEFAULT_MAX_SENTENCES,
    ) -> None:
        self.transcriber = transcriber
        self.every_seconds = every_seconds
        self.scene_threshold = scene_threshold
        self.frames_dir = None if frames_dir is None else Path(frames_dir)
        self._windows = _Windows(window_seconds, overlap_seconds, max_chars, max_sentences)

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
        return ImageDocument(image=_png_base64(image), image_mimetype="image/png", **common)


class MMRagReader(BaseReader):
    """Files and folders of every kind mm-rag reads → exactly the records `mm_rag.ingest` would store for them
    (same ids, text and metadata), as LlamaIndex documents.

    A text record (a passage of a text, Markdown, HTML, PDF, Office, EPUB, notebook or e-mail file, or a
    transcript window) becomes a `Document`; a picture an `ImageDocument`: an image file with ``image_path``
    (the file), a picture inside a document with ``image`` (base64 PNG, read back by
    `mm_rag.embed.documents.picture_at`), a video keyframe with ``image`` (base64 PNG of the frame); its text
    is the record's (OCR text, caption), "" when none. ``id_`` is the record id and ``metadata`` the record's,
    plus ``modality``, ``doc_id`` (the file's document id, what the media readers call ``media_id``) and
    ``source`` (the file), after any ``extra_info``. Bookkeeping keys (times, sizes, locators, ids, OCR
    details) are kept out of the embedded text.

    Args:
        transcriber: Speech-to-text for audio and video soundtracks (e.g. `mm_rag.WhisperTranscriber`); without
            it, audio files are bad files (nothing to read) and videos give keyframes only.
        ocr: An OCR engine reading text inside pictures and scanned pages, ``"auto"`` to load the default one
            (`mm_rag.embed.ocr.load_ocr`, on first read), or None for no OCR.
        include, exclude: Glob patterns on file names or paths relative to a folder given (``"*.pdf"``).
        options: Chunking, transcript windows and keyframe sampling; the defaults are `mm_rag.ingest`'s.
        errors: ``"raise"``: a file that cannot be read raises `mm_rag.MediaError` naming it (as does a path
            that does not exist); ``"skip"``: it is logged as a warning (file and reason) and left out.

    It also serves as a `file_extractor` of `SimpleDirectoryReader` (``load_data(file, extra_info=…)``).

    Raises:
        InvalidInputError: `errors` is neither ``"raise"`` nor ``"skip"``.
    """

    def __init__(
        self,
        *,
        transcriber: Transcriber | None = None,
        ocr: Any | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        options: ExtractOptions | None = None,
        errors: ErrorPolicy = "raise",
    ) -> None:
        if errors not in ("raise", "skip"):
            raise InvalidInputError(f"errors must be 'raise' or 'skip', not {errors!r}")
        self.transcriber, self.ocr, self.options, self.errors = transcriber, ocr, options, errors
        self.include, self.exclude = include, exclude

    def lazy_load_data(
        self, file: FilePath | Sequence[FilePath], extra_info: dict[str, Any] | None = None, fs: Any = None
    ) -> Iterator[Document]:
        """File after file (folders walked, in sorted order), one document per record.

        Raises:
            MediaError: with ``errors="raise"``, naming the first file that cannot be read.
            InvalidInputError: `fs` is not the local file system.
        """
        roots = [file] if isinstance(file, (str, os.PathLike)) else list(file)
        paths = [_local_file(root, fs) for root in roots]
        found = iter_records(
            paths, transcriber=self.transcriber, ocr=self.ocr, include=self.include, exclude=self.exclude,
            options=self.options, errors=self.errors,
        )  # fmt: skip
        for _, records in found:
            for record in records:
                yield _record_document(record, extra_info or {})


def _record_document(record: Record, extra: dict[str, Any]) -> Document:
    """The LlamaIndex document of a record of `file_records` (see `MMRagReader`)."""
    metadata = {**extra, **record.metadata, "modality": record.modality, "doc_id": record.doc_id, "source": record.uri}
    common = {
        "id_": record.id,
        "text": record.text or "",
        "metadata": metadata,
        "excluded_embed_metadata_keys": list(_RECORD_NOT_EMBEDDED),
    }
    if record.modality == "image" and "picture" not in record.metadata:
        return ImageDocument(image_path=record.uri, image_mimetype=record.metadata.get("mime_type"), **common)
    if record.modality == "image":
        from mm_rag.embed.documents import picture_at

        picture = picture_at(record.uri, record.metadata["picture"])
        return ImageDocument(image=_png_base64(picture), image_mimetype="image/png", **common)
    if record.modality == "video" and "frame_time" in record.metadata:
        from mm_rag.embed.video import frame_at

        frame = frame_at(record.uri, record.metadata["frame_time"])
        return ImageDocument(image=_png_base64(frame), image_mimetype="image/png", **common)
    return Document(**common)


def _png_base64(image: Any) -> str:
    """A PIL image as base64 PNG text, what `ImageDocument.image` holds."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _local_file(file: FilePath, fs: Any) -> Path:
    """`file` as an absolute path; refuses an fsspec filesystem other than the local one."""
    protocol = "file" if fs is None else getattr(fs, "protocol", None)
    protocols = {protocol} if isinstance(protocol, str) else set(protocol or ())
    if not protocols & {"file", "local"}:
        raise InvalidInputError(f"mm-rag readers read local files only, not from {type(fs).__name__} ({protocol!r})")
    return Path(file).absolute()


def _base_metadata(path: Path, extra: dict[str, Any]) -> dict[str, Any]:
    return {**extra, "file_name": path.name, "source": str(path), "media_id": document_id(path)}
