"""A retrieval tool for agents that answers with text passages and the images found, as content blocks.

The content is built by mm-rag's own `build_context` through `documents_to_context` (the same citations, time
ranges, token budget and downscaled pictures every mm-rag front end gives), spoken as LangChain standard content
blocks.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForToolRun
from langchain_core.documents import Document
from langchain_core.messages.content import create_text_block
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

from langchain_mm_rag._convert import FilterLike
from langchain_mm_rag.context import context_to_blocks, documents_to_context
from langchain_mm_rag.vectorstores import MMRagVectorStore
from mm_rag.context import DEFAULT_MAX_IMAGE_SIDE, DEFAULT_MAX_IMAGES, DEFAULT_MAX_TOKENS

DEFAULT_NAME = "multimodal_search"
DEFAULT_DESCRIPTION = (
    "Search the multimodal knowledge base (documents, transcribed audio and video, images) with a natural-language"
    " query. Returns numbered passages citing their source and time range, and the matching images themselves."
)


class SearchInput(BaseModel):
    """What the agent sends: a query."""

    query: str = Field(description="What to look for, in natural language")


class MultimodalSearchTool(BaseTool):
    """Searches an `MMRagVectorStore`; returns ``(content blocks, Documents)`` (``content_and_artifact``).

    The content (what the model reads) is one text block of numbered passages, ``[n] <kind> <source>
    <mm:ss.s-mm:ss.s>: <text>``, cut to `max_tokens`, followed by up to `max_images` image blocks (base64 JPEG,
    longest side at most `max_image_side`) for the hits that are images or video keyframes. The artifact is
    the list of Documents found, best first.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = DEFAULT_NAME
    description: str = DEFAULT_DESCRIPTION
    args_schema: type[BaseModel] = SearchInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    vectorstore: MMRagVectorStore
    k: int = 4
    filter: FilterLike = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_images: int = DEFAULT_MAX_IMAGES
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE

    def _run(
        self, query: str, run_manager: CallbackManagerForToolRun | None = None
    ) -> tuple[list[dict[str, Any]], list[Document]]:
        pairs = self.vectorstore.similarity_search_with_score(query, self.k, self.filter)
        if not pairs:
            return [dict(create_text_block("No results."))], []
        documents = [document for document, _ in pairs]
        context = documents_to_context(
            documents,
            scores=[score for _, score in pairs],
            space=self.vectorstore.space,
            max_tokens=self.max_tokens,
            max_images=self.max_images,
            max_image_side=self.max_image_side,
        )
        return context_to_blocks(context), documents


def create_multimodal_retriever_tool(
    vectorstore: MMRagVectorStore,
    name: str = DEFAULT_NAME,
    description: str = DEFAULT_DESCRIPTION,
    *,
    k: int = 4,
    filter: FilterLike = None,
    **options: Any,
) -> MultimodalSearchTool:
    """A `MultimodalSearchTool` over `vectorstore`; `options` sets ``max_tokens``, ``max_images``, ``max_image_side``."""
    return MultimodalSearchTool(
        name=name, description=description, vectorstore=vectorstore, k=k, filter=filter, **options
    )
