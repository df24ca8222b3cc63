"""mm-rag for LlamaIndex: agent tools — a multimodal search `FunctionTool` and a `QueryEngineTool`."""

from llama_index.tools.mm_rag.base import (
    ImageHit,
    Passage,
    SearchResults,
    make_query_engine_tool,
    make_search_tool,
    search_results,
)

__all__ = ["ImageHit", "Passage", "SearchResults", "make_query_engine_tool", "make_search_tool", "search_results"]
