"""Timestamped transcripts and what ingestion makes of them: short overlapping windows of sentences → text records.

A transcript is indexed in windows of one or two sentences (`DEFAULT_MAX_SENTENCES`, at most
`DEFAULT_WINDOW_SECONDS`), each sharing its last sentence with the next, so a search hit points at the moment
something was said rather than at half a minute of talk; `mm_rag.context.build_context` widens a hit back to
its neighbouring windows for the LLM. The defaults here are the only ones: ingestion (`ExtractOptions`), the
command line, the HTTP and MCP servers and the LangChain/LlamaIndex loaders all read them.

Nothing here runs a model: `WhisperTranscriber` (``mm_rag.embed.whisper``) produces a `Transcript`; any other
speech recogniser that returns one fits the `Transcriber` protocol.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from mm_rag.errors import InvalidInputError
from mm_rag.records import Record, make_id

# Measured on a 2-minute recording of 24 spoken facts (benchmarks/bench_moments.py): the old 30-s windows put
# the answering sentence inside the top hit for 24 of 24 questions, but in hits 26 s long on average (none
# within 12 s); windows of at most two sentences and 10 s, sharing one, put it there for 23 of 24, in hits of
# 8.7 s on average. Two sentences rather than one keep a sentence that leans on its predecessor ("It opens in
# March.") findable; any overlap above 0 repeats at least a window's last sentence in the next one.
DEFAULT_WINDOW_SECONDS = 10.0
DEFAULT_OVERLAP_SECONDS = 2.0
DEFAULT_MAX_SENTENCES = 2
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
    """Consecutive sentences joined into one retrievable passage.

    Attributes:
        start: Start of its first sentence, in seconds.
        end: End of its last sentence, in seconds.
        text: The sentence texts joined by spaces.
        segments: Indices of the segments its sentences come from, in the list the window was made from.
        confidence: The segments' confidences averaged, weighted by their text length.
    """

    start: float
    end: float
    text: str
    segments: tuple[int, ...]
    confidence: float


@dataclass(frozen=True, slots=True)
class Sentence:
    """One sentence of a transcript (or a whole segment that holds no sentence end).

    Attributes:
        start, end: Its time range in seconds: its segment's, or for one of several sentences in a segment a
            share of the segment's time proportional to its share of the characters (recognisers time
            segments, not words).
        text: The words.
        segment: Index of the segment it comes from.
        confidence: Its segment's confidence.
    """

    start: float
    end: float
    text: str
    segment: int
    confidence: float


# A sentence ends at . ! ? or … (maybe followed by a closing quote or bracket) and a space. Not after a title
# or an initial ("Dr. Smith", "J. Smith") nor inside a dotted abbreviation ("e.g. this", "the U.S. army").
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+")
_NOT_AN_END = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|Mt|No|vs|etc|approx)|\b[A-Za-z]|\b[A-Za-z]\.[A-Za-z]+)\.$")
_MIN_SENTENCE_WORDS = 3  # a shorter piece ("Okay.", "Right, yes.") joins its neighbour: it is no moment alone


def split_sentences(segments: Sequence[Segment]) -> list[Sentence]:
    """The sentences of `segments`, in order: a segment holding several is cut at its sentence ends.

    Segments are never joined: one without a sentence end (a recogniser without punctuation, a sentence
    cut across two segments) stays one unit, so a window never depends on punctuation to stay short.
    """
    sentences: list[Sentence] = []
    for index, segment in enumerate(segments):
        pieces = _sentence_pieces(segment.text)
        total = sum(len(piece) for piece in pieces) or 1
        cursor = float(segment.start)
        span = max(float(segment.end) - float(segment.start), 0.0)
        for number, piece in enumerate(pieces):
            end = float(segment.end) if number == len(pieces) - 1 else cursor + span * len(piece) / total
            sentences.append(Sentence(cursor, end, piece, index, float(segment.confidence)))
            cursor = end
    return sentences


def _sentence_pieces(text: str) -> list[str]:
    pieces: list[str] = []
    cursor = 0
    for found in _SENTENCE_END.finditer(text):
        candidate = text[cursor : found.start()]
        if _NOT_AN_END.search(candidate):
            continue
        pieces.append(candidate.strip())
        cursor = found.end()
    pieces.append(text[cursor:].strip())
    pieces = [piece for piece in pieces if piece]
    merged: list[str] = []
    for piece in pieces:  # a short piece joins the one before it (the first one, the one after)
        if merged and (len(piece.split()) < _MIN_SENTENCE_WORDS or len(merged[-1].split()) < _MIN_SENTENCE_WORDS):
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return merged or [text.strip()]


def transcript_windows(
    segments: Sequence[Segment],
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
    max_chars: int = DEFAULT_MAX_CHARS,
    *,
    max_sentences: int | None = DEFAULT_MAX_SENTENCES,
) -> list[Window]:
    """Group consecutive sentences into windows of at most `max_sentences` sentences, `window_seconds` and
    `max_chars` characters.

    Sentences come from `split_sentences` (a segment holding several is cut at its sentence ends). Each
    window after the first starts again at the earliest sentence of its predecessor that reaches into the
    predecessor's last `overlap_seconds` (any overlap above 0 repeats at least the predecessor's last
    sentence), so speech around a window boundary is found from either side. A sentence that alone exceeds a
    limit makes a window of its own; sentences are never split. Every segment is in at least one window, and
    each window starts at a later sentence than the one before.

    Args:
        segments: The transcript's segments, in time order.
        window_seconds: Longest time from a window's first sentence start to its last sentence end.
        overlap_seconds: How far back, from a window's end, the next window starts again (0: no overlap).
        max_chars: Most characters in a window (the text embedder reads no further).
        max_sentences: Most sentences in a window; None: as many as the other limits allow.

    Raises:
        InvalidInputError: a non-positive window, max_chars or max_sentences, or an overlap outside
            ``[0, window_seconds)``; the message names the argument and the value.
    """
    if isinstance(window_seconds, bool) or not (
        isinstance(window_seconds, (int, float)) and math.isfinite(window_seconds) and window_seconds > 0
    ):
        raise InvalidInputError(f"window_seconds must be a positive number of seconds, got {window_seconds!r}")
    if isinstance(overlap_seconds, bool) or not (
        isinstance(overlap_seconds, (int, float)) and 0 <= overlap_seconds < window_seconds
    ):
        raise InvalidInputError(
            f"overlap_seconds must be at least 0 and less than window_seconds ({window_seconds!r}), got {overlap_seconds!r}"
        )
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars <= 0:
        raise InvalidInputError(f"max_chars must be a positive integer, got {max_chars!r}")
    if max_sentences is not None and (
        isinstance(max_sentences, bool) or not isinstance(max_sentences, int) or max_sentences <= 0
    ):
        raise InvalidInputError(f"max_sentences must be a positive integer or None (no limit), got {max_sentences!r}")
    sentences = split_sentences(segments)
    most = len(sentences) if max_sentences is None else max_sentences
    windows: list[Window] = []
    first = 0
    while first < len(sentences):
        last, chars = first, len(sentences[first].text)
        while last + 1 < len(sentences) and last + 1 - first < most:
            following = sentences[last + 1]
            if following.end - sentences[first].start > window_seconds or chars + 1 + len(following.text) > max_chars:
                break
            last, chars = last + 1, chars + 1 + len(following.text)
        windows.append(_window(sentences[first : last + 1], segments))
        if last + 1 >= len(sentences):
            break
        boundary = windows[-1].end - overlap_seconds
        first = next((i for i in range(first + 1, last + 1) if sentences[i].end > boundary), last + 1)
    return windows


def _window(chosen: Sequence[Sentence], segments: Sequence[Segment]) -> Window:
    weights = [max(len(sentence.text), 1) for sentence in chosen]
    return Window(
        start=float(chosen[0].start),
        end=float(max(sentence.end for sentence in chosen)),
        text=" ".join(sentence.text for sentence in chosen if sentence.text),
        segments=tuple(sorted({sentence.segment for sentence in chosen})),
        confidence=sum(w * s.confidence for w, s in zip(weights, chosen)) / sum(weights),
    )


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
