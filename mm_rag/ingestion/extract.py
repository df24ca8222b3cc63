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
from mm_rag.embed.transcript import (
    DEFAULT_MAX_SENTENCES,
    DEFAULT_OVERLAP_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    transcript_records,
    transcript_windows,
)
from mm_rag.errors import InvalidInputError
from mm_rag.ingestion import noise
from mm_rag.ingestion.discover import content_hash, document_id
from mm_rag.records import Modality, Record


@dataclass(frozen=True)
class ExtractOptions:
    """How files become records.

    Attributes:
        chunk_tokens, chunk_overlap: Token-aware chunking of documents (overlap None: a default share).
        tokenizer: Tokenizer that counts chunk tokens (a HuggingFace tokenizer or its path); None: words.
        window_seconds, window_overlap, window_sentences: Transcript windows of audio and of video soundtracks
            alike (see `mm_rag.embed.transcript.transcript_windows`): at most `window_sentences` sentences
            (None: no limit) and `window_seconds`, each starting again `window_overlap` seconds before its
            predecessor's end. The defaults are the library's one set (a sentence or two, overlapping by one).
        keyframe_every: Seconds between sampled video frames (scene changes add frames).

    Raises:
        InvalidInputError: transcript window settings out of range, named with their value.
    """

    chunk_tokens: int = 200
    chunk_overlap: int | None = None
    tokenizer: Any = None
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    window_overlap: float = DEFAULT_OVERLAP_SECONDS
    window_sentences: int | None = DEFAULT_MAX_SENTENCES
    keyframe_every: float = 2.0

    def __post_init__(self) -> None:
        # Checked here, before any file is read or model runs, rather than on the first transcript.
        try:
            transcript_windows([], self.window_seconds, self.window_overlap, max_sentences=self.window_sentences)
        except InvalidInputError as error:
            message = str(error).replace("overlap_seconds", "window_overlap")
            message = message.replace("max_sentences", "window_sentences")
            raise InvalidInputError(f"transcript windows: {message}") from None


@dataclass(frozen=True)
class Capabilities:
    """What the configured models can do with content.

    Attributes:
        images: Whether an image embedder is configured.
        speech: Whether a transcriber is configured.
        image_size: The image embedder's input size, if it declares one: JPEGs then decode at a reduced
            scale no smaller than it, several times faster than a full decode (when no OCR needs the pixels).
        words: Whether a text embedder is configured: a picture with words (OCR text, a caption) is then
            findable by them even without an image embedder.
        ocr: The OCR engine (`mm_rag.embed.ocr.OcrEngine`) reading text inside pictures, scanned pages and
            video keyframes at scene changes; None: no OCR.
    """

    images: bool
    speech: bool
    image_size: tuple[int, int] | None = None
    words: bool = False
    ocr: Any = None

    @classmethod
    def of(
        cls, clip: Any | None, transcriber: Any | None, text: Any | None = None, ocr: Any | None = None
    ) -> Capabilities:
        """What an image embedder, a transcriber, a text embedder and an OCR engine (each or None) can do."""
        return cls(
            images=clip is not None,
            speech=transcriber is not None,
            image_size=getattr(clip, "image_size", None),
            words=text is not None,
            ocr=ocr,
        )


UNCHANGED = "unchanged"  # the reason a file is skipped when its content is already stored


@dataclass(frozen=True)
class Skip:
    """A file left out, and why. `needs`: the model roles (``"clip"``, ``"audio"``, ``"ocr"``) whose model
    decided it (missing, or as a transcriber that heard no speech): the same content with the same models
    would be left out again (`mm_rag.ingestion.waiting`)."""

    reason: str
    needs: tuple[str, ...] = ()
    content_hash: str | None = None


@dataclass(frozen=True)
class Failure:
    reason: str


@dataclass
class Extracted:
    """One file's records and what remains to compute for them.

    `images` and `texts` pair a record's position in `records` with the decoded image (for the CLIP image
    tower) or the text (for the text space, and for the CLIP text tower unless the record is a picture, whose
    CLIP vector is its image). A picture with words is in both. `audio` is a soundtrack still to be
    transcribed into `modality` records. `notes` are warnings about parts of the file that were left out.
    """

    path: Path
    doc_id: str
    content_hash: str
    records: list[Record] = field(default_factory=list)
    images: list[tuple[int, Any]] = field(default_factory=list)
    texts: list[tuple[int, str]] = field(default_factory=list)
    audio: np.ndarray | None = None
    modality: Modality = "audio"
    notes: list[str] = field(default_factory=list)

    def add(self, records: list[Record], images: list[Any] | None = None) -> None:
        """Append records (owned by this file: its doc_id and content hash); with images, one per record
        (None for a record whose picture no image embedder takes)."""
        start = len(self.records)
        for offset, record in enumerate(records):
            self.records.append(dataclasses.replace(record, doc_id=self.doc_id, content_hash=self.content_hash))
            if images is not None and images[offset] is not None:
                self.images.append((start + offset, images[offset]))
            if record.text:
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
        return Skip(UNCHANGED)
    outcome = extract_file(path, doc_id, digest, options, can)
    if isinstance(outcome, Skip):
        return dataclasses.replace(outcome, content_hash=digest)
    if isinstance(outcome, Extracted) and outcome.audio is not None:
        try:
            with transcription_lock or threading.Lock():
                transcribe_into(outcome, transcriber, options)
        except InvalidInputError as error:
            return Failure(str(error))
        if not outcome.records:  # silence: nothing to store, and nothing wrong with the file
            video_without_frames = outcome.modality == "video" and not can.images  # CLIP would have stored them
            needs = ("audio", "clip") if video_without_frames else ("audio",)
            return Skip("no speech found", needs, digest)
    return outcome


def extract_file(
    path: Path, doc_id: str, content_hash: str, options: ExtractOptions, can: Capabilities
) -> Extracted | Skip | Failure:
    """Decode one file into records waiting for embeddings; a bad file gives a `Failure` with its reason.

    Reasons never repeat the path (the report puts it in front) and name the kind the content really is.
    """
    from mm_rag.embed.documents import READERS
    from mm_rag.embed.sniff import sniff

    item = Extracted(path, doc_id, content_hash)
    name = str(path)
    try:
        kind = sniff(path)
        if kind is None:
            return Failure("unsupported content (not an image, audio, video or a document format mm-rag reads)")
        if kind == "image":
            outcome = _image(item, can)
            if outcome is not None:
                return outcome
        elif kind in READERS:
            _document(item, options, can)
        elif kind == "audio":
            if not can.speech:
                return Skip("audio: no transcriber configured", ("audio",))
            from mm_rag.embed.audio import load_audio

            with noise.c_output():  # libmpg123 prints its complaints about a damaged MP3 on stderr
                item.audio = load_audio(path)
        elif kind == "video":
            if not (can.images or can.speech):
                return Skip("video: neither an image embedder nor a transcriber configured", ("clip", "audio"))
            _video(item, options, can)
    except (MediaError, InvalidInputError) as error:
        return Failure(_without_name(str(error), name))
    except OSError as error:
        return Failure(f"cannot read: {error.strerror or error}")
    if not item.records and item.audio is None:
        return _nothing_found(item, kind)
    return item


def _without_name(message: str, name: str) -> str:
    """An error message without the leading file name (the report names the file once)."""
    return message.removeprefix(f"{name}: ")


def _nothing_found(item: Extracted, kind: str) -> Skip | Failure:
    if item.notes:  # e.g. scanned pages and no OCR engine: the file is fine, this set-up cannot read it
        return Skip(f"{kind}: " + "; ".join(item.notes))
    if kind == "video":
        return Failure("video: no frames and no soundtrack found")
    return Failure(f"{kind}: no text or pictures found (empty document)")


def _image(item: Extracted, can: Capabilities) -> Skip | None:
    """An image file: decoded and verified always, read by OCR when an engine is set, then one record."""
    from mm_rag.ingestion import pictures

    # Without OCR only the embedder's scale is needed (a JPEG then decodes in its DCT at 1/2–1/8); the whole
    # file is decoded either way, so truncation and corruption are found even with no embedder at all.
    draft = None if can.ocr is not None else (can.image_size or (256, 256))
    image = pictures.decode_picture(item.path, str(item.path), draft_size=draft)
    words = pictures.read_words(image, can.ocr)
    if not can.images and not (can.words and words.text):
        reason = "no text found by OCR" if can.ocr is not None else "no OCR engine"
        needs = ("clip",) if can.ocr is not None else ("clip", "ocr")
        return Skip(f"image: no image embedder (CLIP) configured, and {reason}", needs)
    metadata = {"file_name": item.path.name, **_image_type(image)}
    record = pictures.picture_record(
        image, words, content_hash=item.content_hash, doc_id=item.doc_id, uri=str(item.path), locator=None,
        metadata=metadata,
    )  # fmt: skip
    item.add([record], [pictures.for_embedder(image) if can.images else None])
    return None


def _image_type(image: Any) -> dict[str, str]:
    """``{"mime_type": …}`` of a decoded picture whose format is known (not of one rendered from a PDF)."""
    from PIL import Image

    mime_type = Image.MIME.get(image.info.get("format") or "")
    return {"mime_type": mime_type} if mime_type else {}


def _document(item: Extracted, options: ExtractOptions, can: Capabilities) -> None:
    """A document: its passages (scanned pages read by OCR) as text records, its pictures as image records."""
    from mm_rag.embed.documents import Passage, read_document, text_records
    from mm_rag.ingestion import pictures

    document = read_document(item.path)
    passages = list(document.passages)
    scans = [picture for picture in document.pictures if picture.scan]
    if scans and can.ocr is None:
        item.notes.append(f"{len(scans)} page(s) without a text layer not read: no OCR engine configured")
    for scan in scans if can.ocr is not None else ():
        words = can.ocr.read(pictures.decode_picture(scan.image, f"page {scan.page}"))
        if words.text:
            ocr = {"ocr_engine": words.engine, "ocr_confidence": round(float(words.confidence), 4)}
            passages.append(Passage(words.text, scan.page, document.mime_type, metadata=ocr))
        else:
            item.notes.append(f"page {scan.page}: no text layer, and OCR found no text")
    passages.sort(key=lambda passage: passage.page or 0)  # stable: a page's passages keep their order
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
    _document_pictures(item, [picture for picture in document.pictures if not picture.scan], document.mime_type, can)


def _document_pictures(item: Extracted, found: list[Any], mime_type: str, can: Capabilities) -> None:
    """Pictures inside a document: decoration dropped, repeats stored once, each linked to its page/slide."""
    from mm_rag.embed.documents import decorative
    from mm_rag.ingestion import pictures

    seen: set[str] = set()
    unfindable = 0
    for picture in found:
        try:
            image = pictures.decode_picture(picture.image, f"picture {picture.locator}")
        except MediaError as error:
            item.notes.append(str(error))
            continue
        if decorative(*image.size):
            continue
        digest = pictures.fingerprint(image)
        if digest in seen:
            continue
        seen.add(digest)
        words = pictures.read_words(image, can.ocr, picture.context)
        if not can.images and not (can.words and words.text):
            unfindable += 1
            continue
        metadata = {"file_name": item.path.name, "page": picture.page, **_image_type(image),
                    "document_type": mime_type}  # fmt: skip
        record = pictures.picture_record(
            image, words, content_hash=item.content_hash, doc_id=item.doc_id, uri=str(item.path),
            locator=picture.locator, metadata=metadata,
        )  # fmt: skip
        item.add([record], [pictures.for_embedder(image) if can.images else None])
    if unfindable:
        item.notes.append(f"{unfindable} picture(s) without words left out: no image embedder (CLIP) configured")


def _video(item: Extracted, options: ExtractOptions, can: Capabilities) -> None:
    from mm_rag.embed.video import keyframe_records, sample_keyframes, video_audio

    item.modality = "video"
    if can.images or can.ocr is not None:
        keyframes = sample_keyframes(item.path, options.keyframe_every)
        records = keyframe_records(
            keyframes, doc_id=item.doc_id, uri=str(item.path), metadata={"file_name": item.path.name}
        )
        records = _keyframe_words(keyframes, records, can)
        kept = [(record, frame.image) for record, frame in zip(records, keyframes) if can.images or record.text]
        item.add([record for record, _ in kept], [image if can.images else None for _, image in kept])
    if can.speech:
        with noise.c_output():
            item.audio = video_audio(item.path)


def _keyframe_words(keyframes: list[Any], records: list[Record], can: Capabilities) -> list[Record]:
    """Text on screen (slides, titles, signs) read by OCR where it pays: on the first frame and at scene
    changes, the frames where new text can appear; frames sampled by the clock in between show the same."""
    if can.ocr is None:
        return records
    worded = []
    for number, (frame, record) in enumerate(zip(keyframes, records)):
        if number and not frame.scene_change:
            worded.append(record)
            continue
        found = can.ocr.read(frame.image)
        if not found.text:
            worded.append(record)
            continue
        ocr = {"ocr_engine": found.engine, "ocr_confidence": round(float(found.confidence), 4)}
        worded.append(dataclasses.replace(record, text=found.text, metadata={**record.metadata, **ocr}))
    return worded


def transcribe_into(item: Extracted, transcriber: Any, options: ExtractOptions) -> None:
    """Transcribe `item.audio` (if any) into timestamped window records; silence adds none."""
    if item.audio is None:
        return
    transcript = transcriber.transcribe(item.audio)
    item.audio = None
    # A video's soundtrack gets the same windows as any recording: keyframes (start/end on the same clock,
    # see `mm_rag.embed.video.video_audio`) then line up with a moment of speech, not with half a minute.
    windows = transcript_windows(
        transcript.segments, options.window_seconds, options.window_overlap, max_sentences=options.window_sentences
    )
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
