"""Documents found through LangChain, made into mm-rag's LLM context: cited passages and downscaled images.

`documents_to_context` is the one path from LangChain Documents to `mm_rag.context.build_context`: the agent tool
uses it, and so can a chain, which then speaks the result as standard content blocks with
`context_to_blocks` or picks ``.text`` and ``.images`` itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages.content import create_image_block, create_text_block

from langchain_mm_rag._convert import document_to_record
from mm_rag.context import DEFAULT_MAX_IMAGE_SIDE, DEFAULT_MAX_IMAGES, DEFAULT_MAX_TOKENS, Context, build_context
from mm_rag.errors import InvalidInputError
from mm_rag.records import Record
from mm_rag.retrieval import Evidence, Retrieved


def context_to_blocks(context: Context) -> list[dict[str, Any]]:
    """LangChain standard content blocks for a message: the passages as one text block, then one base64 image
    block per picture (made by LangChain's own factories, with their ids)."""
    blocks: list[dict[str, Any]] = [dict(create_text_block(context.text))]
    blocks += [dict(create_image_block(base64=image.data, mime_type=image.mime_type)) for image in context.images]
    return blocks


def documents_to_context(
    documents: Sequence[Document],
    *,
    scores: Sequence[float] | None = None,
    space: str = "langchain",
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_images: int = DEFAULT_MAX_IMAGES,
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE,
    count_tokens: Callable[[str], int] | None = None,
) -> Context:
    """mm-rag's `Context` for `documents` (best first), as `mm_rag.context.build_context` makes it.

    Each Document becomes one numbered passage citing its ``uri``/``doc_id`` (else LangChain's ``source``
    metadata) and time range; image Documents and video keyframes also give their picture, base64 JPEG with
    the longer side at most `max_image_side`, while `max_images` allows.

    Args:
        documents: Documents as an `MMRagVectorStore` returns them (or any Document with the same metadata).
        scores: The search scores, one per Document, kept in each result's evidence; default 0.
        space: The space named in that evidence.
        max_tokens: Budget of the passages' text.
        max_images: Most images attached.
        max_image_side: Longest side of an attached image, in pixels.
        count_tokens: Tokens of a text under the target model's tokenizer; default: about 4 characters each.

    Raises:
        InvalidInputError: `scores` is not as long as `documents`, or a limit is not a positive integer.
    """
    if scores is not None and len(scores) != len(documents):
        raise InvalidInputError(f"documents_to_context: {len(documents)} documents but {len(scores)} scores")
    results = [
        Retrieved(_cited_record(document, rank), score, (Evidence(space, "text", rank, score),))
        for rank, (document, score) in enumerate(zip(documents, scores or [0.0] * len(documents)))
    ]
    return build_context(
        results,
        max_tokens=max_tokens,
        max_images=max_images,
        max_image_side=max_image_side,
        count_tokens=count_tokens,
    )


def _cited_record(document: Document, rank: int) -> Record:
    """The record `build_context` cites: LangChain's metadata ``source`` stands in for a missing uri/doc_id."""
    record = document_to_record(document, str(document.id) if document.id is not None else f"result-{rank + 1}")
    source = document.metadata.get("source")
    if record.uri is None and record.doc_id is None and isinstance(source, str) and source:
        return dataclasses.replace(record, doc_id=source)
    return record
