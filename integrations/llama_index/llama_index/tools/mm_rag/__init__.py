"""mm-rag for LlamaIndex: agent tools — a multimodal search `FunctionTool` and a `QueryEngineTool` — and mm-rag's
LLM context as LlamaIndex content blocks (`context_to_blocks`, `chat`)."""

from llama_index.tools.mm_rag.base import (
    ImageHit,
    Passage,
    SearchResults,
    chat,
    context_to_blocks,
    make_query_engine_tool,
    make_search_tool,
    search_results,
)

__all__ = [
    "ImageHit",
    "Passage",
    "SearchResults",
    "chat",
    "context_to_blocks",
    "make_query_engine_tool",
    "make_search_tool",
    "search_results",
]
