"""Agent tools over a multimodal retriever: text passages (with their time spans) and image locations."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage, ContentBlock, ImageBlock, MessageRole, TextBlock
from llama_index.core.llms import LLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore
from llama_index.core.tools import FunctionTool, QueryEngineTool

from mm_rag import Context, InvalidInputError

DEFAULT_TOOL_NAME = "multimodal_search"
DEFAULT_DESCRIPTION = (
    "Search the multimodal knowledge base (documents, transcribed audio and video, images) with a natural-language"
    " query. Returns matching text passages with their source and time span, and the paths of matching images."
)


@dataclass(frozen=True)
class Passage:
    """A text hit: its text, score, source file and, for speech, the ``start``/``end`` seconds."""

    text: str
    score: float | None
    node_id: str
    source: str | None = None
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class ImageHit:
    """An image hit: where the image is (a path, URL, or ``<video>#t=<seconds>`` for an inline keyframe)."""

    location: str | None
    score: float | None
    node_id: str
    caption: str = ""


@dataclass(frozen=True)
class SearchResults:
    """What the search tool returns; ``str()`` gives the text an agent reads."""

    query: str
    passages: list[Passage] = field(default_factory=list)
    images: list[ImageHit] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.passages and not self.images:
            return f"No results for {self.query!r}."
        lines = [f"Results for {self.query!r}:"]
        if self.passages:
            lines.append("Text passages:")
            for number, passage in enumerate(self.passages, 1):
                where = passage.source or "unknown source"
                if passage.start is not None and passage.end is not None:
                    where += f" [{passage.start:.1f}s-{passage.end:.1f}s]"
                lines.append(f"{number}. ({_score(passage.score)}, {where}) {passage.text}")
        if self.images:
            lines.append("Images:")
            for number, image in enumerate(self.images, 1):
                caption = f" — {image.caption}" if image.caption else ""
                lines.append(f"{number}. ({_score(image.score)}) {image.location or 'inline image'}{caption}")
        return "\n".join(lines)


def search_results(query: str, hits: list[NodeWithScore]) -> SearchResults:
    """Sort retrieved nodes into text passages and images."""
    passages, images = [], []
    for hit in hits:
        node, metadata = hit.node, hit.node.metadata
        if isinstance(node, ImageNode):
            location = node.image_path or node.image_url or _keyframe_location(metadata)
            images.append(ImageHit(location, hit.score, node.node_id, node.get_content(MetadataMode.NONE)))
        else:
            passages.append(
                Passage(
                    node.get_content(MetadataMode.NONE),
                    hit.score,
                    node.node_id,
                    metadata.get("source") or metadata.get("file_path") or metadata.get("file_name"),
                    _number(metadata.get("start")),
                    _number(metadata.get("end")),
                )
            )
    return SearchResults(query, passages, images)


def make_search_tool(
    retriever: BaseRetriever, *, name: str = DEFAULT_TOOL_NAME, description: str = DEFAULT_DESCRIPTION
) -> FunctionTool:
    """A `FunctionTool` taking ``query`` and returning `SearchResults` (text passages and image paths)."""
    if not isinstance(retriever, BaseRetriever):
        raise InvalidInputError(f"make_search_tool needs a LlamaIndex retriever, got {type(retriever).__name__}")

    def search(query: str) -> SearchResults:
        """Search the knowledge base for text passages and images relevant to `query`."""
        return search_results(query, retriever.retrieve(query))

    async def asearch(query: str) -> SearchResults:
        """Search the knowledge base for text passages and images relevant to `query`."""
        return await asyncio.to_thread(search, query)

    return FunctionTool.from_defaults(fn=search, async_fn=asearch, name=name, description=description)


def make_query_engine_tool(
    retriever: BaseRetriever,
    *,
    llm: LLM | None = None,
    name: str = DEFAULT_TOOL_NAME,
    description: str = DEFAULT_DESCRIPTION,
    **engine_kwargs: Any,
) -> QueryEngineTool:
    """A `QueryEngineTool` that answers from the retrieved nodes with `llm` (``Settings.llm`` when None); the
    response's ``source_nodes`` hold the passages and image nodes."""
    engine = RetrieverQueryEngine.from_args(retriever, llm=llm, **engine_kwargs)
    return QueryEngineTool.from_defaults(engine, name=name, description=description)


def _keyframe_location(metadata: dict[str, Any]) -> str | None:
    source, start = metadata.get("source"), _number(metadata.get("start"))
    if source is None:
        return None
    return f"{source}#t={start:.2f}" if start is not None else str(source)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _score(score: float | None) -> str:
    return "score n/a" if score is None else f"score {score:.3f}"


def context_to_blocks(context: Context | list[dict[str, Any]]) -> list[ContentBlock]:
    """LlamaIndex content blocks (`TextBlock`, `ImageBlock`) for a `ChatMessage`, from an mm-rag `Context` or
    its plain blocks (`Context.to_blocks()`: ``{"type": "text", "text"}``, ``{"type": "image", "base64",
    "mime_type"}``).

    Raises:
        InvalidInputError: a block of another type.
    """
    plain = context.to_blocks() if isinstance(context, Context) else context
    blocks: list[ContentBlock] = []
    for block in plain:
        if block.get("type") == "text":
            blocks.append(TextBlock(text=block["text"]))
        elif block.get("type") == "image":
            blocks.append(ImageBlock(image=block["base64"].encode(), image_mimetype=block.get("mime_type")))
        else:
            raise InvalidInputError(f"context_to_blocks: a block must be of type 'text' or 'image', got {block!r}")
    return blocks


def chat(llm: LLM, system: str, content: list[dict[str, Any]]) -> str:
    """Ask the LlamaIndex `llm` with a system prompt and a user message of plain blocks; its text answer.

    What `mm_rag.apps` (`answer`, `caption`) calls for a LlamaIndex LLM: the core builds plain blocks and
    leaves LlamaIndex's message types to this integration.
    """
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content=system),
        ChatMessage(role=MessageRole.USER, blocks=context_to_blocks(content)),
    ]
    return str(llm.chat(messages).message.content or "")
