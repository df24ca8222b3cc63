"""Document loaders: any file mm-rag reads (`MMRagLoader`), and media-specific ones — Whisper transcript
windows (audio), images, and videos (keyframes + speech).

Every loader lays its records out with mm-rag's own functions (`MMRagLoader` and `ImageLoader` with
`mm_rag.ingestion.reading.file_records`, the extraction `mm_rag.ingest` runs), so a Document loaded here has
the id, ``doc_id`` and metadata that ingesting the same file would give, and converts them with
`record_to_document`: media Documents carry ``modality``, ``uri``, ``doc_id`` and ``source``; time-based ones
numeric ``start``/``end`` seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.document_loaders import BaseBlobParser, BaseLoader, Blob
from langchain_core.documents import Document

from langchain_mm_rag._convert import record_to_document
from mm_rag.embed.media import MediaError
from mm_rag.embed.transcript import (
    DEFAULT_MAX_CHARS,
    DEFAULT_MAX_SENTENCES,
    DEFAULT_OVERLAP_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    Transcript,
    transcript_records,
    transcript_windows,
)
from mm_rag.embed.video import SCENE_THRESHOLD, keyframe_records, sample_keyframes, video_audio
from mm_rag.embed.whisper import WhisperTranscriber
from mm_rag.errors import InvalidInputError
from mm_rag.ingestion.discover import content_hash, document_id
from mm_rag.ingestion.extract import ExtractOptions
from mm_rag.ingestion.reading import ErrorPolicy, file_records, iter_records
from mm_rag.records import Record

PathLike = str | os.PathLike[str]


class MMRagLoader(BaseLoader):
    """Loads files and folders of every kind mm-rag reads as Documents: exactly the records `mm_rag.ingest`
    would store for them (same ids, text and metadata), before any embedding.

    Text, Markdown, HTML, PDF, Office files, EPUB, notebooks and e-mail become passage Documents (plus a
    Document per picture inside them, with metadata ``picture`` (its locator), ``page`` and ``caption``);
    images become image Documents; audio and video soundtracks become transcript-window Documents (with a
    `transcriber`), and videos keyframe Documents. Each Document is `record_to_document` of its record, with
    ``source`` (the file) added to the metadata, as LangChain loaders do: so beside the record's metadata it
    has ``uri``, ``doc_id``, ``source`` and, for media, ``modality``.

    Args:
        file_path: A file or folder, or several; folders are walked recursively (see
            `mm_rag.ingestion.discover.discover`), files are read in that (sorted) order.
        transcriber: Speech-to-text for audio and video soundtracks (e.g. `mm_rag.WhisperTranscriber`); without
            it, audio files are bad files (nothing to read) and videos give keyframes only.
        ocr: An OCR engine reading text inside pictures and scanned pages, ``"auto"`` to load the default one
            (`mm_rag.embed.ocr.load_ocr`, on first load), or None for no OCR.
        include, exclude: Glob patterns on file names or paths relative to a folder given (``"*.pdf"``).
        options: Chunking, transcript windows and keyframe sampling; the defaults are `mm_rag.ingest`'s.
        errors: ``"raise"``: a file that cannot be read raises `mm_rag.MediaError` naming it (as does a path
            that does not exist); ``"skip"``: it is logged as a warning (file and reason) and left out.

    Raises:
        mm_rag.InvalidInputError: `errors` is neither ``"raise"`` nor ``"skip"``.
    """

    def __init__(
        self,
        file_path: PathLike | Sequence[PathLike],
        *,
        transcriber: Any | None = None,
        ocr: Any | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        options: ExtractOptions | None = None,
        errors: ErrorPolicy = "raise",
    ) -> None:
        if errors not in ("raise", "skip"):
            raise InvalidInputError(f"errors must be 'raise' or 'skip', not {errors!r}")
        self.paths = _paths(file_path)
        self.transcriber, self.ocr, self.options, self.errors = transcriber, ocr, options, errors
        self.include, self.exclude = include, exclude

    def lazy_load(self) -> Iterator[Document]:
        """File after file, one Document per record, in the order `mm_rag.ingest` lays them out.

        Raises:
            mm_rag.MediaError: with ``errors="raise"``, naming the first file that cannot be read.
        """
        found = iter_records(
            self.paths, transcriber=self.transcriber, ocr=self.ocr, include=self.include, exclude=self.exclude,
            options=self.options, errors=self.errors,
        )  # fmt: skip
        for _, records in found:
            for record in records:
                yield record_to_document(_with_source(record))


class WhisperSegmentParser(BaseBlobParser):
    """Parses an audio (or video) blob into one Document per transcript window.

    Args:
        transcriber: A `WhisperTranscriber` (or anything with ``transcribe(path_or_bytes) -> Transcript``);
            None builds a `WhisperTranscriber` from `transcriber_kwargs`.
        window_seconds, overlap_seconds, max_chars, max_sentences: How sentences group into windows (see
            `mm_rag.embed.transcript.transcript_windows`; ``max_sentences=None``: no sentence limit).

    Each Document's page_content is the window's text; its metadata holds numeric ``start``/``end`` seconds,
    ``language``, ``confidence``, ``source``, ``modality`` (``"audio"``), ``uri`` and ``doc_id`` (the path).
    """

    def __init__(
        self,
        transcriber: Any | None = None,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
        max_chars: int = DEFAULT_MAX_CHARS,
        max_sentences: int | None = DEFAULT_MAX_SENTENCES,
        **transcriber_kwargs: Any,
    ) -> None:
        if transcriber is not None and transcriber_kwargs:
            raise InvalidInputError("pass a transcriber or its constructor arguments, not both")
        self.transcriber = transcriber if transcriber is not None else WhisperTranscriber(**transcriber_kwargs)
        self.window_seconds, self.overlap_seconds, self.max_chars = window_seconds, overlap_seconds, max_chars
        self.max_sentences = max_sentences
        transcript_windows([], window_seconds, overlap_seconds, max_chars, max_sentences=max_sentences)  # checks now

    def lazy_parse(self, blob: Blob) -> Iterator[Document]:
        """Transcribe the blob (its file when it has a path, else its bytes) and yield its windows."""
        path = Path(blob.path) if isinstance(blob.path, (str, os.PathLike)) else None
        if path is not None:
            digest, doc_id, uri, transcript = (
                content_hash(path),
                document_id(path),
                str(path),
                self.transcriber.transcribe(path),
            )
        else:
            data = blob.as_bytes()
            digest = hashlib.sha256(data).hexdigest()
            doc_id, uri, transcript = digest, None, self.transcriber.transcribe(data)
        yield from self.documents(transcript, content_hash=digest, doc_id=doc_id, uri=uri, source=blob.source)

    def documents(
        self, transcript: Transcript, *, content_hash: str, doc_id: str, uri: str | None, source: str | None,
        modality: str = "audio",
    ) -> list[Document]:  # fmt: skip
        """The window Documents of a transcript (shared with `VideoLoader` for soundtracks)."""
        windows = transcript_windows(
            transcript.segments,
            self.window_seconds,
            self.overlap_seconds,
            self.max_chars,
            max_sentences=self.max_sentences,
        )
        records = transcript_records(
            windows,
            content_hash=content_hash,
            doc_id=doc_id,
            uri=uri,
            modality=modality,  # type: ignore[arg-type]
            language=transcript.language,
            metadata={"source": source} if source else None,
        )
        return [record_to_document(record) for record in records]


class WhisperSegmentLoader(BaseLoader):
    """Loads audio files as transcript-window Documents (a `WhisperSegmentParser` over each file).

    Args:
        file_path: One audio/video file or several.
        transcriber, window_seconds, overlap_seconds, max_chars, **transcriber_kwargs: As for
            `WhisperSegmentParser`.
    """

    def __init__(
        self, file_path: PathLike | Sequence[PathLike], transcriber: Any | None = None, **options: Any
    ) -> None:
        self.paths = _paths(file_path)
        self.parser = WhisperSegmentParser(transcriber, **options)

    def lazy_load(self) -> Iterator[Document]:
        """One file after another, window by window."""
        for path in self.paths:
            yield from self.parser.lazy_parse(Blob.from_path(path))


class ImageLoader(BaseLoader):
    """Loads image files as image Documents, ready for `MMRagVectorStore.add_documents` with CLIP embeddings.

    Each Document has empty page_content (or the caption given for its path) and metadata ``modality``
    (``"image"``), ``uri`` and ``source`` (the path), ``doc_id``, ``mime_type``, ``width``, ``height`` and
    ``file_name``; its id is the one `mm_rag.ingest` gives the same file.

    A thin wrapper over `file_records`: the Document is `MMRagLoader`'s for the same image file, with the
    caption as its text.

    Raises:
        mm_rag.MediaError: on loading, naming a file that is not a readable image.
    """

    def __init__(self, file_path: PathLike | Sequence[PathLike], *, captions: dict[str, str] | None = None) -> None:
        self.paths = _paths(file_path)
        self.captions = {str(Path(key)): value for key, value in (captions or {}).items()}

    def lazy_load(self) -> Iterator[Document]:
        """One Document per image, decoded whole to check it and read its size."""
        for path in self.paths:
            records = file_records(path)  # raises MediaError naming the file
            if len(records) != 1 or records[0].modality != "image" or "picture" in records[0].metadata:
                raise MediaError(f"{path}: not an image file")
            record = dataclasses.replace(records[0], text=self.captions.get(str(path)))
            yield record_to_document(_with_source(record))


class VideoLoader(BaseLoader):
    """Loads videos as keyframe Documents and transcript-window Documents that share ``doc_id`` and a clock.

    Args:
        file_path: One video or several.
        transcriber: Transcribes the soundtrack into windows (``modality: "video"``, numeric ``start``/``end``);
            None loads keyframes only.
        frames_dir: Where to write each keyframe as a JPEG; its path goes into the keyframe Document's
            ``frame_uri``, so `MMRagVectorStore` can embed the frame and the agent tool can show it. Without
            it, keyframe Documents only describe the frames (time, scene change).
        every_seconds, scene_threshold: Keyframe sampling (see `mm_rag.embed.video.iter_keyframes`).
        window_seconds, overlap_seconds, max_chars, max_sentences: Transcript windows, as for
            `WhisperSegmentParser`.

    Keyframe Documents have empty page_content and metadata ``modality`` (``"video"``), ``uri``, ``doc_id``,
    ``source``, ``start``/``end`` (the frame's span), ``frame_time``, ``scene_change`` and ``mime_type``.
    """

    def __init__(
        self,
        file_path: PathLike | Sequence[PathLike],
        *,
        transcriber: Any | None = None,
        frames_dir: PathLike | None = None,
        every_seconds: float = 2.0,
        scene_threshold: float | None = SCENE_THRESHOLD,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
        max_chars: int = DEFAULT_MAX_CHARS,
        max_sentences: int | None = DEFAULT_MAX_SENTENCES,
    ) -> None:
        self.paths = _paths(file_path)
        self.frames_dir = None if frames_dir is None else Path(frames_dir)
        self.every_seconds, self.scene_threshold = every_seconds, scene_threshold
        self.transcripts = (
            None
            if transcriber is None
            else WhisperSegmentParser(
                transcriber,
                window_seconds=window_seconds,
                overlap_seconds=overlap_seconds,
                max_chars=max_chars,
                max_sentences=max_sentences,
            )
        )

    def lazy_load(self) -> Iterator[Document]:
        """Per video: its keyframes in time order, then its transcript windows."""
        for path in self.paths:
            digest, doc_id, uri = content_hash(path), document_id(path), str(path)
            keyframes = sample_keyframes(path, self.every_seconds, self.scene_threshold)
            records = keyframe_records(
                keyframes, doc_id=doc_id, uri=uri, metadata={"file_name": path.name, "source": uri}
            )
            for keyframe, record in zip(keyframes, records):
                document = record_to_document(record)
                if self.frames_dir is not None:
                    document.metadata["frame_uri"] = _save_frame(self.frames_dir, keyframe.image, record.id)
                yield document
            if self.transcripts is not None:
                audio = video_audio(path)
                if audio is not None:
                    transcript = self.transcripts.transcriber.transcribe(audio)
                    yield from self.transcripts.documents(
                        transcript, content_hash=digest, doc_id=doc_id, uri=uri, source=uri, modality="video"
                    )


def _save_frame(folder: Path, image: Any, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.jpg"
    image.save(target, format="JPEG", quality=90)
    return str(target)


def _with_source(record: Record) -> Record:
    """`record` with LangChain's ``source`` (the file) in its metadata."""
    return dataclasses.replace(record, metadata={**record.metadata, "source": record.uri})


def _paths(file_path: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(file_path, (str, os.PathLike)):
        return [Path(file_path)]
    return [Path(path) for path in file_path]
