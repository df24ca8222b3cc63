"""Pictures into image records: image files, pictures inside documents, and the text inside them (OCR).

Every picture is decoded and verified whether or not an image embedder is loaded, so a corrupt file is
reported rather than skipped unseen. Its words — OCR text, and for a picture inside a document the nearby text
(caption, alt text, slide title) — become the record's text, so keyword search and the text space find it
without CLIP, and `build_context` hands an LLM the picture together with its words.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mm_rag.embed.media import MediaError, describe, load_image
from mm_rag.records import Record, make_id

# What an image embedder needs at most: pictures are reduced to this before they wait for the CLIP batch, so
# a batch of scanned pages does not hold full-resolution bitmaps in memory.
_EMBED_SIDE = 448


@dataclass(frozen=True)
class Words:
    """The words found with a picture: its text (None when there is none) and the metadata saying where from."""

    text: str | None
    metadata: dict[str, Any]


def read_words(image: Any, ocr: Any | None, context: str = "") -> Words:
    """OCR `image` (when an engine is given) and join the result to the `context` text (caption, alt text)."""
    metadata: dict[str, Any] = {}
    parts = [context.strip()] if context and context.strip() else []
    if parts:
        metadata["caption"] = parts[0]
    if ocr is not None:
        found = ocr.read(image)
        if found.text:
            parts.append(found.text)
            metadata.update(ocr_engine=found.engine, ocr_confidence=round(float(found.confidence), 4))
    return Words("\n".join(parts) or None, metadata)


def for_embedder(image: Any) -> Any:
    """A copy of `image` no larger than an image embedder needs (it resizes to a few hundred pixels anyway)."""
    if max(image.size) <= _EMBED_SIDE:
        return image
    reduced = image.copy()
    reduced.thumbnail((_EMBED_SIDE, _EMBED_SIDE))
    return reduced


def picture_record(
    image: Any,
    words: Words,
    *,
    content_hash: str,
    doc_id: str,
    uri: str,
    locator: str | None,
    metadata: Mapping[str, Any],
) -> Record:
    """The image record of a picture: an image file (`locator` None) or a picture inside a document.

    Its id derives from the file's content hash and ``doc_id`` (plus ``#locator`` inside a document), as
    for every record of a file, so re-ingesting an unchanged document gives the same ids.
    """
    width, height = image.info.get("source_size", image.size)
    fields = {**metadata, "width": width, "height": height, **words.metadata}
    if locator is not None:
        fields["picture"] = locator
    key = doc_id if locator is None else f"{doc_id}#{locator}"
    return Record(make_id(content_hash, key), "image", words.text, uri, fields, doc_id, content_hash)


def decode_picture(source: Any, name: str, *, draft_size: tuple[int, int] | None = None) -> Any:
    """Decode a picture (path, bytes or PIL image) into RGB; `MediaError` naming `name` when it is broken."""
    try:
        return load_image(source, draft_size=draft_size)
    except MediaError as error:
        prefix, reason = f"{describe(source)}: ", str(error)
        raise MediaError(f"{name}: {reason.removeprefix(prefix)}") from error


def fingerprint(image: Any) -> str:
    """A digest of a decoded picture's pixels: the same logo on every slide is stored once."""
    return hashlib.sha256(f"{image.mode}:{image.size}".encode() + image.tobytes()).hexdigest()
