"""From retrieved results to LLM context: numbered passages with citations, images as base64 blocks.

`build_context` keeps the prompt small and explicit: passages in rank order up to a token budget, transcript
moments with their time ranges, and at most a few images, downscaled, each tied to its citation number. The
`Context` then speaks each framework's content format: LangChain's standard content blocks, LlamaIndex's
`TextBlock`/`ImageBlock`, and OpenAI-compatible chat content.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mm_rag.embed.media import MediaError
from mm_rag.errors import InvalidInputError
from mm_rag.retrieval import Retrieved

DEFAULT_MAX_TOKENS = 1500
DEFAULT_MAX_IMAGES = 4
DEFAULT_MAX_IMAGE_SIDE = 512
_JPEG_QUALITY = 85


@dataclass(frozen=True, slots=True)
class Citation:
    """What a citation number in the context text refers to."""

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

    def to_langchain(self) -> list[dict[str, Any]]:
        """LangChain standard content blocks: one text block, then one image block per image."""
        from langchain_core.messages.content import create_image_block, create_text_block

        blocks: list[dict[str, Any]] = [dict(create_text_block(self.text))]
        blocks += [dict(create_image_block(base64=image.data, mime_type=image.mime_type)) for image in self.images]
        return blocks

    def to_llama_index(self) -> list[Any]:
        """LlamaIndex content blocks (`TextBlock`, `ImageBlock`) for a `ChatMessage`."""
        from llama_index.core.base.llms.types import ImageBlock, TextBlock

        blocks: list[Any] = [TextBlock(text=self.text)]
        blocks += [ImageBlock(image=image.data.encode(), image_mimetype=image.mime_type) for image in self.images]
        return blocks

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
) -> Context:
    """Turn results (best first) into a `Context` that fits `max_tokens` of text and `max_images` images.

    Each result becomes one numbered line: ``[n] <modality> <source> <time range>: <text>``. Images and video
    keyframes also attach their picture (downscaled so the longer side is at most `max_image_side`) while
    `max_images` allows; a picture that cannot be read any more is noted in its line instead. The passage
    that crosses the budget is cut to fit; later ones are left out.

    Args:
        count_tokens: Tokens of a text under the target model's tokenizer; default: about 4 characters each.
    """
    for name, value in (("max_tokens", max_tokens), ("max_images", max_images), ("max_image_side", max_image_side)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (name == "max_image_side" and not value):
            raise InvalidInputError(f"build_context: {name} must be a positive integer, got {value!r}")
    count = count_tokens or _approximate_tokens
    lines: list[str] = []
    images: list[ImagePart] = []
    citations: list[Citation] = []
    used = 0
    for number, result in enumerate(results, start=1):
        line = _line(number, result)
        picture = None
        if result.modality in ("image", "video") and len(images) < max_images and _has_picture(result):
            try:
                picture = _picture(result, max_image_side)
            except (MediaError, OSError) as error:
                line += f" (picture unavailable: {error})"
        cost = count(line)
        if used + cost > max_tokens:
            line = _cut(line, max_tokens - used, count)
            if line is None:
                break
            cost = count(line)
        lines.append(line)
        used += cost
        citations.append(Citation(number, result.record.id, result.modality, result.source, result.start, result.end))
        if picture is not None:
            images.append(ImagePart(*picture, citation=number))
        if used >= max_tokens:
            break
    return Context("\n".join(lines), images, citations)


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


def _has_picture(result: Retrieved) -> bool:
    record = result.record
    if record.uri is None:
        return False
    return record.modality == "image" or "frame_time" in record.metadata


def _picture(result: Retrieved, max_side: int) -> tuple[str, str]:
    """(base64 JPEG, mime type) of an image record (a file, or a picture inside a document) or of a video
    keyframe, downscaled."""
    record = result.record
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
