"""Translation between LangChain's types and mm-rag's: one function per direction, and the filter dialect.

How a `Document` maps onto a `mm_rag.Record`:

- ``Document.id`` ↔ ``Record.id``; ``page_content`` ↔ ``Record.text`` (``""`` ↔ ``None``).
- ``metadata`` ↔ ``Record.metadata``, with three keys lifted into record fields: ``modality`` (only for a
  media modality: ``"image"``, ``"audio"`` or ``"video"``), ``uri`` and ``doc_id`` (when they are strings).
  Going back, those fields are put into the Document's metadata again, so a plain text Document (modality
  ``"text"``, no uri, no doc_id) comes back with exactly the metadata it went in with, and a media Document
  shows what a user needs: ``modality``, ``uri``, ``doc_id`` and (already in the record's metadata for
  transcript windows and keyframes) numeric ``start``/``end`` seconds.

Nothing internal (store keys, content hashes, scores) is ever written into a Document's metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.documents import Document

from mm_rag.filters import compile_filter
from mm_rag.records import MODALITIES, Record

# A filter is mm-rag's filter language (a dict, LangChain's `$neq` accepted) or an exact predicate.
FilterLike = Mapping[str, Any] | Callable[[Document], bool] | None
_MEDIA = MODALITIES - {"text"}


def document_to_record(document: Document, id: str) -> Record:
    """The record that stores `document` under `id` (see the module docstring for the mapping)."""
    metadata = dict(document.metadata)
    modality = metadata.get("modality")
    if isinstance(modality, str) and modality in _MEDIA:
        del metadata["modality"]
    else:
        modality = "text"
    lifted = {key: metadata.pop(key) for key in ("uri", "doc_id") if isinstance(metadata.get(key), str)}
    return Record(
        id=id,
        modality=modality,
        text=document.page_content or None,
        uri=lifted.get("uri"),
        metadata=metadata,
        doc_id=lifted.get("doc_id"),
    )


def record_to_document(record: Record) -> Document:
    """The Document a stored record reads as, with ``Document.id`` set to the record id."""
    metadata = dict(record.metadata)
    if record.modality != "text":
        metadata["modality"] = record.modality
    if record.uri is not None:
        metadata["uri"] = record.uri
    if record.doc_id is not None:
        metadata["doc_id"] = record.doc_id
    return Document(page_content=record.text or "", metadata=metadata, id=record.id)


def translate_filter(filter: Any) -> Any:
    """`filter` with LangChain's ``$neq`` spelled ``$ne`` at any depth; everything else unchanged."""
    if isinstance(filter, Mapping):
        return {("$ne" if key == "$neq" else key): translate_filter(value) for key, value in filter.items()}
    if isinstance(filter, (list, tuple)):
        return [translate_filter(item) for item in filter]
    return filter


def prepare_filter(filter: FilterLike) -> Mapping[str, Any] | Callable[[Document], bool] | None:
    """A dict filter translated and checked now (a bad one raises `mm_rag.FilterError` before any work);
    a callable or None as given."""
    if filter is None or (callable(filter) and not isinstance(filter, Mapping)):
        return filter
    translated = translate_filter(filter)
    compile_filter(translated)  # raises FilterError naming the problem
    return translated


def picture_source(document: Document) -> str | tuple[str, float] | tuple[str, str] | None:
    """The picture a Document stands for: an image file's ``uri``, a saved keyframe's ``frame_uri``, (video, time)
    for a keyframe, (document, locator) for a picture inside a document; None for everything embedded by its
    text. A picture's own text (OCR, caption) does not change what it stands for."""
    metadata = document.metadata
    uri, modality = metadata.get("uri"), metadata.get("modality")
    if modality == "image" and isinstance(uri, str):
        locator = metadata.get("picture")
        return (uri, locator) if isinstance(locator, str) else uri
    if modality == "video" and isinstance(metadata.get("frame_uri"), str):
        return metadata["frame_uri"]
    frame_time = metadata.get("frame_time")
    if modality == "video" and isinstance(uri, str) and isinstance(frame_time, (int, float)):
        return uri, float(frame_time)
    return None


def picture_of(source: str | tuple[str, float] | tuple[str, str]) -> Any:
    """A path as it is; a (video, time) pair decoded into that frame, a (document, locator) pair into that
    picture (RGB PIL images)."""
    if isinstance(source, str):
        return source
    if isinstance(source[1], str):
        from mm_rag.embed.documents import picture_at

        return picture_at(*source)
    from mm_rag.embed.video import frame_at

    return frame_at(*source)
