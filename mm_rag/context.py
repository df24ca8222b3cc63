"""From retrieved results to LLM context: numbered passages with citations, images as base64 blocks.

`build_context` keeps the prompt small and explicit: passages in rank order up to a token budget, transcript
moments with their time ranges, and at most a few images, downscaled, each tied to its citation number. The
`Context` then speaks each framework's content format: LangChain's standard content blocks, LlamaIndex's
`TextBlock`/`ImageBlock`, and OpenAI-compatible chat content.

Transcripts are indexed in short windows (a sentence or two, `mm_rag.embed.transcript`) so that a hit points at
the moment; given the store, `build_context` widens such a hit back to the talk around it for the LLM, as
LlamaIndex's sentence-window and auto-merging retrievers do: the neighbouring windows of the same recording
within `widen_seconds` are merged into one passage (overlapping words once), the hit's own words marked
``**…**``, and hits of one recording whose passages touch share one passage.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mm_rag.embed.media import MediaError
from mm_rag.errors import InvalidInputError
from mm_rag.filters import Filter
from mm_rag.records import Record
from mm_rag.retrieval import Retrieved

DEFAULT_MAX_TOKENS = 1500
# How far before and after a transcript hit its passage may reach: with the default windows (two sentences,
# sharing one) about one or two sentences on each side, some 30 s of talk in all, as a listener would replay.
DEFAULT_WIDEN_SECONDS = 10.0
DEFAULT_MAX_IMAGES = 4
DEFAULT_MAX_IMAGE_SIDE = 512
_JPEG_QUALITY = 85


class RecordFinder(Protocol):
    """What widening needs of a store (`mm_rag.store.MultimodalStore` is one): records matching a filter."""

    def find(self, filter: Filter | None = None, limit: int | None = None) -> list[Record]: ...


@dataclass(frozen=True, slots=True)
class Citation:
    """What a citation number in the context text refers to.

    ``start``/``end`` are the cited record's own time range (the moment found), also when its line shows a
    widened passage; two hits merged into one passage give two citations with the same number.
    """

    number: int
    id: str
    modality: str
    source: str | None
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image for the model, base64-encoded, with the citation number it illustrates."""

    data: str
    mime_type: str
    citation: int


@dataclass
class Context:
    """Context for one question: `text` (numbered passages), `images`, and what each number cites."""

    text: str
    images: list[ImagePart] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)

    def to_blocks(self) -> list[dict[str, Any]]:
        """Plain content blocks: ``{"type": "text", "text": …}``, then ``{"type": "image", "base64": …,
        "mime_type": …}`` per image.

        Framework-free dicts (the core imports no framework): they are LangChain's standard content blocks as
        they are, and the integrations turn them into their framework's types
        (`langchain_mm_rag.context_to_blocks`, `llama_index.tools.mm_rag.context_to_blocks`).
        """
        blocks: list[dict[str, Any]] = [{"type": "text", "text": self.text}]
        blocks += [{"type": "image", "base64": image.data, "mime_type": image.mime_type} for image in self.images]
        return blocks

    def to_langchain(self) -> list[dict[str, Any]]:
        """The plain blocks of `to_blocks`, which LangChain message content takes as they are (kept for callers
        of earlier versions; `langchain_mm_rag.context_to_blocks` builds them with LangChain's factories)."""
        return self.to_blocks()

    def to_openai(self) -> list[dict[str, Any]]:
        """OpenAI-compatible chat content parts (text, then images as data URLs)."""
        parts: list[dict[str, Any]] = [{"type": "text", "text": self.text}]
        parts += [
            {"type": "image_url", "image_url": {"url": f"data:{image.mime_type};base64,{image.data}"}}
            for image in self.images
        ]
        return parts


def build_context(
    results: Sequence[Retrieved],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_images: int = DEFAULT_MAX_IMAGES,
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE,
    count_tokens: Callable[[str], int] | None = None,
    store: RecordFinder | None = None,
    widen_seconds: float = DEFAULT_WIDEN_SECONDS,
) -> Context:
    """Turn results (best first) into a `Context` that fits `max_tokens` of text and `max_images` images.

    Each result becomes one numbered line: ``[n] <modality> <source> <time range>: <text>``. Images and video
    keyframes also attach their picture (downscaled so the longer side is at most `max_image_side`) while
    `max_images` allows; a picture that cannot be read any more is noted in its line instead. The passage
    that crosses the budget is cut to fit (a widened one first falls back to the hit alone); later ones are
    left out.

    A transcript window (audio, or a video's soundtrack) is widened when `store` is given: the windows of the
    same recording lying within `widen_seconds` before its start and after its end (and at least the nearest
    one on each side reaching into that range) join it in one passage,
    ``[n] audio transcript talk.wav 00:15.8-00:46.7 (hit 00:21.1-00:31.1): … **the hit's words** …``, the
    words two windows share written once. Transcript hits of one recording whose passages overlap or touch
    (with or without `store`) become one passage under the better one's number, each hit marked.

    Args:
        count_tokens: Tokens of a text under the target model's tokenizer; default: about 4 characters each.
        store: Where neighbouring transcript windows are looked up (anything with `find`, e.g. the
            `MultimodalStore` searched); None: no widening.
        widen_seconds: How far before and after a transcript hit its passage may reach; 0: no widening.

    Raises:
        InvalidInputError: a limit that is not a non-negative integer (positive for `max_image_side`), or a
            negative or non-finite `widen_seconds`.
    """
    for name, value in (("max_tokens", max_tokens), ("max_images", max_images), ("max_image_side", max_image_side)):
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < 0
            or (name == "max_image_side" and not value)
        ):
            raise InvalidInputError(f"build_context: {name} must be a positive integer, got {value!r}")
    if (
        isinstance(widen_seconds, bool)
        or not isinstance(widen_seconds, (int, float))
        or not 0 <= widen_seconds < math.inf
    ):
        raise InvalidInputError(f"build_context: widen_seconds must be a number of seconds ≥ 0, got {widen_seconds!r}")
    count = count_tokens or _approximate_tokens
    lines: list[str] = []
    images: list[ImagePart] = []
    citations: list[Citation] = []
    used = 0
    for number, entry in enumerate(_entries(results, store, widen_seconds), start=1):
        result = entry.hits[0]
        line = _line(number, result) if entry.passage is None else _passage_line(number, entry)
        picture = None
        if result.modality in ("image", "video") and len(images) < max_images and has_picture(result.record):
            try:
                picture = _picture(result, max_image_side)
            except (MediaError, OSError) as error:
                line += f" (picture unavailable: {error})"
        cost = count(line)
        if used + cost > max_tokens and entry.passage is not None:
            line, entry = _line(number, result), _Entry([result])  # the moment itself before a cut passage
            cost = count(line)
        if used + cost > max_tokens:
            line = _cut(line, max_tokens - used, count)
            if line is None:
                break
            cost = count(line)
        lines.append(line)
        used += cost
        citations += [
            Citation(number, hit.record.id, hit.modality, hit.source, hit.start, hit.end) for hit in entry.hits
        ]
        if picture is not None:
            images.append(ImagePart(*picture, citation=number))
        if used >= max_tokens:
            break
    return Context("\n".join(lines), images, citations)


@dataclass
class _Passage:
    """Transcript windows of one recording merged into one passage: its time range and words, and which word
    ranges are hits (to mark them)."""

    start: float
    end: float
    words: list[str]
    marked: list[tuple[int, int]]


@dataclass
class _Entry:
    """One line of the context: its hits (best first) and, for transcript windows, their merged passage."""

    hits: list[Retrieved]
    passage: _Passage | None = None
    windows: dict[str, Record] = field(default_factory=dict)  # id → window, hits and neighbours alike


def _entries(results: Sequence[Retrieved], store: RecordFinder | None, widen: float) -> list[_Entry]:
    """Results as context lines: transcript hits widened and, when their passages touch, merged."""
    entries: list[_Entry] = []
    for result in results:
        if not _is_window(result.record):
            entries.append(_Entry([result]))
            continue
        windows = {result.record.id: result.record}
        if store is not None and widen > 0:
            windows.update((record.id, record) for record in _neighbours(store, result, widen))
        for entry in entries:  # a hit whose passage touches an earlier one's joins it
            if entry.passage is not None and _same_recording(entry.hits[0].record, result.record):
                low, high = _span(windows.values())
                if low <= entry.passage.end and high >= entry.passage.start:
                    entry.hits.append(result)
                    entry.windows.update(windows)
                    entry.passage = _merge(entry.windows, entry.hits)
                    break
        else:
            entry = _Entry([result], windows=windows)
            entry.passage = _merge(windows, entry.hits)
            entries.append(entry)
    for entry in entries:  # a lone window with nothing around it reads best as a plain line
        if entry.passage is not None and len(entry.windows) == 1:
            entry.passage = None
    return entries


def _is_window(record: Record) -> bool:
    """Whether `record` is a transcript window (not a keyframe, which also has a time range)."""
    fields = record.metadata
    return (
        record.modality in ("audio", "video")
        and "frame_time" not in fields
        and bool(record.text)
        and isinstance(fields.get("start"), (int, float))
        and isinstance(fields.get("end"), (int, float))
    )


def _same_recording(one: Record, other: Record) -> bool:
    return one.modality == other.modality and (one.doc_id or one.uri) == (other.doc_id or other.uri)


def _neighbours(store: RecordFinder, hit: Retrieved, widen: float) -> list[Record]:
    """The transcript windows of the hit's recording lying within `widen` seconds before and after it, and at
    least the nearest window on each side that reaches into that range (a long neighbouring window would
    otherwise leave a short hit without the sentence before or after it)."""
    record = hit.record
    key = {"doc_id": record.doc_id} if record.doc_id is not None else {"uri": record.uri}
    if None in key.values():
        return []
    start, end = float(record.metadata["start"]), float(record.metadata["end"])
    reaching = store.find(
        {
            **key,
            "modality": record.modality,
            "frame_time": {"$exists": False},
            "start": {"$lt": end + widen},
            "end": {"$gt": start - widen},
        }
    )
    reaching = [window for window in reaching if _is_window(window) and window.id != record.id]
    inside = [
        w for w in reaching if float(w.metadata["start"]) >= start - widen and float(w.metadata["end"]) <= end + widen
    ]
    before = [w for w in reaching if float(w.metadata["start"]) < start]
    after = [w for w in reaching if float(w.metadata["end"]) > end]
    if before and not any(float(w.metadata["start"]) < start for w in inside):
        inside.append(max(before, key=lambda w: float(w.metadata["start"])))
    if after and not any(float(w.metadata["end"]) > end for w in inside):
        inside.append(min(after, key=lambda w: float(w.metadata["end"])))
    return inside


def _span(windows: Any) -> tuple[float, float]:
    chosen = list(windows)
    return min(float(w.metadata["start"]) for w in chosen), max(float(w.metadata["end"]) for w in chosen)


def _merge(windows: dict[str, Record], hits: Sequence[Retrieved]) -> _Passage:
    """Windows in time order as one run of words: each window adds only the words after the longest stretch
    its beginning shares with the end of the run so far (windows overlap by whole sentences)."""
    ordered = sorted(windows.values(), key=lambda w: (float(w.metadata["start"]), float(w.metadata["end"])))
    words: list[str] = []
    ranges: dict[str, tuple[int, int]] = {}
    for window in ordered:
        own = (window.text or "").split()
        shared = _shared_words(words, own)
        ranges[window.id] = (len(words) - shared, len(words) - shared + len(own))
        words += own[shared:]
    marked = sorted(ranges[hit.record.id] for hit in hits)
    low, high = _span(ordered)
    return _Passage(low, high, words, marked)


def _shared_words(run: list[str], following: list[str]) -> int:
    """Length of the longest end of `run` that `following` begins with."""
    for size in range(min(len(run), len(following)), 0, -1):
        if run[-size:] == following[:size]:
            return size
    return 0


def _passage_line(number: int, entry: _Entry) -> str:
    passage = entry.passage
    assert passage is not None
    first = entry.hits[0]
    found = ", ".join(f"{_clock(hit.start or 0.0)}-{_clock(hit.end or 0.0)}" for hit in entry.hits)
    merged_marks: list[tuple[int, int]] = []
    for start, end in passage.marked:  # overlapping or adjacent hits: one marked stretch
        if merged_marks and start <= merged_marks[-1][1]:
            merged_marks[-1] = (merged_marks[-1][0], max(end, merged_marks[-1][1]))
        else:
            merged_marks.append((start, end))
    opening = {start for start, _ in merged_marks}
    closing = {end - 1 for _, end in merged_marks}
    text = " ".join(
        ("**" if index in opening else "") + word + ("**" if index in closing else "")
        for index, word in enumerate(passage.words)
    )
    kind = f"{first.record.modality} transcript"
    where = first.source or first.record.id
    return f"[{number}] {kind} {where} {_clock(passage.start)}-{_clock(passage.end)} (hit {found}): {text}"


def _line(number: int, result: Retrieved) -> str:
    record = result.record
    where = result.source or record.id
    when = ""
    if result.start is not None:
        when = f" {_clock(result.start)}" + (f"-{_clock(result.end)}" if result.end is not None else "")
    if record.modality == "video" and "frame_time" in record.metadata:
        kind = "video frame"  # its text, if any, is what OCR read on screen
    elif record.modality == "image" and "picture" in record.metadata:
        page = record.metadata.get("page")
        kind = "picture" + (f" (page {page})" if page is not None else "") + " in"
    elif record.modality in ("audio", "video"):
        kind = f"{record.modality} transcript"
    else:
        kind = record.modality
    text = " ".join((record.text or "").split())
    return f"[{number}] {kind} {where}{when}" + (f": {text}" if text else "")


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:04.1f}" if hours else f"{minutes:02d}:{rest:04.1f}"


def has_picture(record: Record) -> bool:
    """Whether `record` shows a picture: an image (a file, or a picture inside a document) or a video keyframe."""
    if record.uri is None:
        return False
    return record.modality == "image" or "frame_time" in record.metadata


def record_picture(record: Record, max_side: int) -> Any:
    """The picture `record` shows (see `has_picture`), as an RGB PIL image at most `max_side` px on its long side.

    Raises:
        MediaError: naming the file, when it (or the picture inside it) cannot be read any more.
    """
    if record.modality == "video":
        from mm_rag.embed.video import frame_at

        image = frame_at(record.uri, float(record.metadata["frame_time"]), max_side=max_side)
    elif "picture" in record.metadata:  # a picture inside a document: found again by its locator
        from mm_rag.embed.documents import picture_at

        image = picture_at(record.uri, str(record.metadata["picture"]))
        image.thumbnail((max_side, max_side))
    else:
        from mm_rag.embed.media import load_image

        image = load_image(record.uri, draft_size=(max_side, max_side))
        image.thumbnail((max_side, max_side))
    return image


def _picture(result: Retrieved, max_side: int) -> tuple[str, str]:
    """(base64 JPEG, mime type) of the picture of an image record or a video keyframe, downscaled."""
    image = record_picture(result.record, max_side)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return base64.b64encode(buffer.getvalue()).decode("ascii"), "image/jpeg"


def _approximate_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def _cut(line: str, budget: int, count: Callable[[str], int]) -> str | None:
    """The longest prefix of `line` (at a word boundary, with an ellipsis) within `budget` tokens, if useful."""
    if budget < 8:
        return None
    words = line.split(" ")
    low, high = 0, len(words)
    while low < high:  # binary search: count() may be a real tokenizer, so call it few times
        middle = (low + high + 1) // 2
        if count(" ".join(words[:middle]) + " …") <= budget:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low]) + " …" if low else None
