"""Applications on top of retrieval: question answering, captioning and zero-shot labelling.

``answer(question, retriever, llm)`` and ``caption(image_or_video, clip, store=…, llm=…)`` work with a
LangChain chat model, a LlamaIndex LLM or any OpenAI-compatible endpoint (`OpenAIChat`, or configured through
``MM_RAG_LLM_BASE_URL``/``MM_RAG_LLM_MODEL``/``MM_RAG_LLM_API_KEY``). Captioning and labelling also work
without a language model, from the CLIP space alone.
"""

from mm_rag.apps.captioning import Caption, CaptionCandidate, caption, label
from mm_rag.apps.llm import LLMError, LLMNotConfiguredError, OpenAIChat, complete
from mm_rag.apps.qa import Answer, answer

__all__ = [
    "Answer",
    "Caption",
    "CaptionCandidate",
    "LLMError",
    "LLMNotConfiguredError",
    "OpenAIChat",
    "answer",
    "caption",
    "complete",
    "label",
]
