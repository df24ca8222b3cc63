"""Per-file extraction for ingestion: sniff the content, decode it, and lay out its records.

`extract_file` runs on worker threads and never raises for a bad file: it returns a `Failure` (or `Skip`)
with the reason. `transcribe_into` then turns a decoded soundtrack into transcript records.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_rag.embed.media import MediaError
from mm_rag.errors import InvalidInputError
from mm_rag.ingestion.discover import content_hash, document_id
from mm_rag.records import Modality, Record, make_id


@dataclass(frozen=True)
class ExtractOptions:
    """How files become records.

    Attributes:
        chunk_tokens, chunk_overlap: Token-aware chunking of documents (overlap None: a default share).
        tokenizer: Tokenizer that counts chunk tokens (a HuggingFace tokenizer or its path); None: words.
        window_seconds, window_overlap: Transcript windows (consecutive Whisper segments).
        keyframe_every: Seconds between sampled video frames (scene changes add frames).
    """

    chunk_tokens: int = 200
    chunk_overlap: int | None = None
    tokenizer: Any = None
    window_seconds: float = 30.0
    window_overlap: float = 5.0
    keyframe_every: float = 2.0


@dataclass(frozen=True)
class Capabilities:
    """Which kinds of content the configured models can embed.

    Attributes:
        images: Whether an image embedder is configured.
        speech: Whether a transcriber is configured.
        image_size: The image embedder's input size, if it declares one: JPEGs then decode at a reduced
            scale no smaller than it, several times faster than a full decode.
    """

    images: bool
    speech: bool
    image_size: tuple[int, int] | None = None

    @classmethod
    def of(cls, clip: Any | None, transcriber: Any | None) -> Capabilities:
        """What an image embedder (or None) and a transcriber (or None) can handle."""
        return cls(
            images=clip is not None, speech=transcriber is not None, image_size=getattr(clip, "image_size", None)
        )


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Failure:
    reason: str


@dataclass
class Extracted:
    """One file's records and what remains to compute for them.

    `images` and `texts` pair a record's position in `records` with the decoded image (for the CLIP image
    tower) or the text (for the text space and the CLIP text tower). `audio` is a soundtrack still to be
    transcribed into `modality` records.
    """

    path: Path
    doc_id: str
    content_hash: str
    records: list[Record] = field(default_factory=list)
    images: list[tuple[int, Any]] = field(default_factory=list)
    texts: list[tuple[int, str]] = field(default_factory=list)
    audio: np.ndarray | None = None
    modality: Modality = "audio"

    def add(self, records: list[Record], images: list[Any] | None = None) -> None:
        """Append records (owned by this file: its doc_id and content hash); with images, one per record."""
        start = len(self.records)
        for offset, record in enumerate(records):
            self.records.append(dataclasses.replace(record, doc_id=self.doc_id, content_hash=self.content_hash))
            if images is not None:
                self.images.append((start + offset, images[offset]))
            elif record.text:
                self.texts.append((start + offset, record.text))


def prepare_file(
    path: Path,
    options: ExtractOptions,
    can: Capabilities,
    transcriber: Any | None,
    *,
    doc_id: str | None = None,
    unchanged: Mapping[str, str | None] | None = None,
    transcription_lock: threading.Lock | None = None,
) -> Extracted | Skip | Failure:
    """Everything one file needs before its embeddings: hash, decode, transcribe. Never raises for a bad file.

    Args:
        path: The (local) file.
        doc_id: Its document id (default: `document_id(path)`; an object-store URI for a downloaded copy).
        unchanged: doc_id → content hash already stored: a file whose hash matches is a `Skip`.
        transcription_lock: Held while transcribing, when threads share one transcriber.
    """
    if not path.is_file():  # a FIFO or device would block the reader; a dangling link has no content
        return Failure("not a regular file (or a broken link)")
    doc_id = document_id(path) if doc_id is None else doc_id
    try:
        digest = content_hash(path)
    except OSError as error:
        return Failure(f"cannot read: {error.strerror or error}")
    if unchanged is not None and unchanged.get(doc_id) == digest:
        return Skip("unchanged")
    outcome = extract_file(path, doc_id, digest, options, can)
    if isinstance(outcome, Extracted) and outcome.audio is not None:
        try:
            with transcription_lock or threading.Lock():
                transcribe_into(outcome, transcriber, options)
        except InvalidInputError as error:
            return Failure(str(error))
        if not outcome.records:  # silence: nothing to store, and nothing wrong with the file
            return Skip("no speech found")
    return outcome


def extract_file(
    path: Path, doc_id: str, content_hash: str, options: ExtractOptions, can: Capabilities
) -> Extracted | Skip | Failure:
    """Decode one file into records waiting for embeddings; a bad file gives a `Failure` with its reason."""
    from mm_rag.embed.sniff import sniff

    item = Extracted(path, doc_id, content_hash)
    try:
        kind = sniff(path)
        if kind is None:
            return Failure("unsupported content (not an image, audio, video or text document)")
        if kind == "image":
            if not can.images:
                return Skip("image: no image embedder (CLIP) configured")
            _image(item, can.image_size)
        elif kind in ("text", "html", "pdf"):
            _document(item, options)
        elif kind == "audio":
            if not can.speech:
                return Skip("audio: no transcriber configured")
            from mm_rag.embed.audio import load_audio

            item.audio = load_audio(path)
        elif kind == "video":
            if not (can.images or can.speech):
                return Skip("video: neither an image embedder nor a transcriber configured")
            _video(item, options, can)
    except (MediaError, InvalidInputError) as error:
        return Failure(str(error))
    except OSError as error:
        return Failure(f"cannot read: {error.strerror or error}")
    if not item.records and item.audio is None:
        return Failure(f"{kind}: no content found (empty document or video without frames)")
    return item


def _image(item: Extracted, size: tuple[int, int] | None) -> None:
    from mm_rag.embed.media import load_image

    image = load_image(item.path, draft_size=size)  # decoded here, on a worker, at the scale the model needs
    width, height = image.info["source_size"]
    record = Record(
        make_id(item.content_hash, item.doc_id),
        "image",
        uri=str(item.path),
        metadata={"width": width, "height": height, "file_name": item.path.name},
    )
    item.add([record], [image])


def _document(item: Extracted, options: ExtractOptions) -> None:
    from mm_rag.embed.documents import read_document, text_records

    passages = read_document(item.path)
    records = text_records(
        passages,
        doc_id=item.doc_id,
        uri=str(item.path),
        max_tokens=options.chunk_tokens,
        overlap_tokens=options.chunk_overlap,
        tokenizer=options.tokenizer,
        metadata={"file_name": item.path.name},
    )
    item.add(records)


def _video(item: Extracted, options: ExtractOptions, can: Capabilities) -> None:
    from mm_rag.embed.video import keyframe_records, sample_keyframes, video_audio

    item.modality = "video"
    if can.images:
        keyframes = sample_keyframes(item.path, options.keyframe_every)
        records = keyframe_records(
            keyframes, doc_id=item.doc_id, uri=str(item.path), metadata={"file_name": item.path.name}
        )
        item.add(records, [keyframe.image for keyframe in keyframes])
    if can.speech:
        item.audio = video_audio(item.path)


def transcribe_into(item: Extracted, transcriber: Any, options: ExtractOptions) -> None:
    """Transcribe `item.audio` (if any) into timestamped window records; silence adds none."""
    if item.audio is None:
        return
    from mm_rag.embed.transcript import transcript_records, transcript_windows

    transcript = transcriber.transcribe(item.audio)
    item.audio = None
    windows = transcript_windows(transcript.segments, options.window_seconds, options.window_overlap)
    records = transcript_records(
        windows,
        content_hash=item.content_hash,
        doc_id=item.doc_id,
        uri=str(item.path),
        modality=item.modality,
        language=transcript.language,
        metadata={"file_name": item.path.name},
    )
    item.add(records)
