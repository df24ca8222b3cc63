"""Timestamped transcripts and what ingestion makes of them: overlapping windows of segments → text records.

Nothing here runs a model: `WhisperTranscriber` (``mm_rag.embed.whisper``) produces a `Transcript`; any other
speech recogniser that returns one fits the `Transcriber` protocol.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from mm_rag.errors import InvalidInputError
from mm_rag.records import Record, make_id

DEFAULT_WINDOW_SECONDS = 30.0
DEFAULT_OVERLAP_SECONDS = 5.0
# ~250 words: about what a MiniLM-class text embedder reads (256 tokens) before it truncates.
DEFAULT_MAX_CHARS = 1200


@dataclass(frozen=True, slots=True)
class Segment:
    """One stretch of recognised speech.

    Attributes:
        start: Start, in seconds from the beginning of the audio.
        end: End, in seconds (``end >= start``).
        text: The recognised words, stripped.
        confidence: In [0, 1]: the geometric-mean token probability, ``exp(avg_logprob)``.
        avg_logprob: The decoder's mean token log-probability (≤ 0).
        no_speech_prob: The model's probability that its 30-s window holds no speech (shared by the
            segments decoded from one window).
    """

    start: float
    end: float
    text: str
    confidence: float
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True, slots=True)
class Transcript:
    """What a transcriber heard: segments in time order (none for silence), the language and the duration."""

    segments: list[Segment]
    language: str | None
    duration: float

    @property
    def text(self) -> str:
        """All segment texts joined by spaces."""
        return " ".join(segment.text for segment in self.segments)


@runtime_checkable
class Transcriber(Protocol):
    """Speech to timestamped text."""

    def transcribe(self, source: Any) -> Transcript:
        """Transcribe a path, the file's bytes, or 16-kHz mono float32 samples."""
        ...


@dataclass(frozen=True, slots=True)
class Window:
    """Consecutive segments joined into one retrievable passage.

    Attributes:
        start: Start of its first segment, in seconds.
        end: End of its last segment, in seconds.
        text: The segment texts joined by spaces.
        segments: Indices of its segments in the list the window was made from.
        confidence: The segments' confidences averaged, weighted by their text length.
    """

    start: float
    end: float
    text: str
    segments: tuple[int, ...]
    confidence: float


def transcript_windows(
    segments: Sequence[Segment],
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> list[Window]:
    """Group consecutive segments into windows of at most `window_seconds` and `max_chars` characters.

    Each window after the first starts again at the earliest segment of its predecessor that reaches into the
    predecessor's last `overlap_seconds`, so speech around a window boundary is found from either side. A
    segment that alone exceeds a limit makes a window of its own; segments are never split. Every segment is
    in at least one window, and windows start strictly later one after another.

    Raises:
        InvalidInputError: a non-positive window or max_chars, or an overlap outside ``[0, window_seconds)``.
    """
    if not (math.isfinite(window_seconds) and window_seconds > 0):
        raise InvalidInputError(f"window_seconds must be a positive number, got {window_seconds!r}")
    if not 0 <= overlap_seconds < window_seconds:
        raise InvalidInputError(f"overlap_seconds must be in [0, window_seconds), got {overlap_seconds!r}")
    if max_chars <= 0:
        raise InvalidInputError(f"max_chars must be positive, got {max_chars!r}")
    windows: list[Window] = []
    first = 0
    while first < len(segments):
        last, chars = first, len(segments[first].text)
        while last + 1 < len(segments):
            following = segments[last + 1]
            if following.end - segments[first].start > window_seconds or chars + 1 + len(following.text) > max_chars:
                break
            last, chars = last + 1, chars + 1 + len(following.text)
        chosen = segments[first : last + 1]
        weights = [max(len(segment.text), 1) for segment in chosen]
        windows.append(
            Window(
                start=float(chosen[0].start),
                end=float(max(segment.end for segment in chosen)),
                text=" ".join(segment.text for segment in chosen if segment.text),
                segments=tuple(range(first, last + 1)),
                confidence=sum(w * s.confidence for w, s in zip(weights, chosen)) / sum(weights),
            )
        )
        if last + 1 >= len(segments):
            break
        boundary = windows[-1].end - overlap_seconds
        first = next((i for i in range(first + 1, last + 1) if segments[i].end > boundary), last + 1)
    return windows


def transcript_records(
    windows: Sequence[Window],
    *,
    content_hash: str,
    doc_id: str | None = None,
    uri: str | None = None,
    modality: Literal["audio", "video"] = "audio",
    language: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[Record]:
    """One text record per transcript window, ready to embed in the text space(s).

    Args:
        windows: From `transcript_windows`.
        content_hash: The source file's content hash; with the window's time range it derives each record's
            id (``make_id(content_hash, "t=12.34-41.00")``), so re-ingesting the same file gives the same ids.
        doc_id: The source document's id (so the whole file can be deleted or replaced).
        uri: Where the media lives.
        modality: ``"audio"``, or ``"video"`` for a video's soundtrack.
        language: The transcript's language, stored in the metadata.
        metadata: Extra fields copied into every record's metadata (``start``, ``end``, ``language`` and
            ``confidence`` are set by this function and win over same-named extras).

    Returns:
        Records whose metadata holds numeric ``start``/``end`` seconds, ``language`` and ``confidence``.
    """
    if modality not in ("audio", "video"):
        raise InvalidInputError(f"transcript records are 'audio' or 'video', not {modality!r}")
    records: list[Record] = []
    seen: set[str] = set()
    for window in windows:
        locator = f"t={window.start:.2f}-{window.end:.2f}"
        record_id = make_id(content_hash, locator)
        while record_id in seen:  # two windows with the same time range: keep both, apart
            locator += "+"
            record_id = make_id(content_hash, locator)
        seen.add(record_id)
        fields = dict(metadata or {})
        fields.update(
            start=round(float(window.start), 3),
            end=round(float(window.end), 3),
            language=language,
            confidence=round(float(window.confidence), 4),
        )
        records.append(
            Record(
                id=record_id,
                modality=modality,
                text=window.text,
                uri=uri,
                metadata=fields,
                doc_id=doc_id,
                content_hash=content_hash,
            )
        )
    return records
