"""Question answering over a multimodal collection: retrieve, build a cited context, ask the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mm_rag.apps.llm import complete
from mm_rag.context import DEFAULT_MAX_IMAGES, DEFAULT_MAX_TOKENS, DEFAULT_WIDEN_SECONDS, Context, build_context
from mm_rag.filters import Filter
from mm_rag.retrieval import MultimodalRetriever, Retrieved

ANSWER_SYSTEM_PROMPT = (
    "You answer questions using only the numbered context below: passages, transcript moments with their time"
    " ranges, and images (each image belongs to the context line with the same number, in order). Cite the"
    " numbers you rely on like [2]. In a transcript moment shown with the talk around it, the words the search"
    " found are in **bold**. If the context does not contain the answer, say that you don't know."
)


@dataclass
class Answer:
    """What `answer` returns: the model's text, the results it was given and the context built from them."""

    text: str
    results: list[Retrieved]
    context: Context


def answer(
    question: str,
    retriever: MultimodalRetriever,
    llm: Any = None,
    *,
    image: Any = None,
    audio: Any = None,
    filter: Filter | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_images: int = DEFAULT_MAX_IMAGES,
    widen_seconds: float = DEFAULT_WIDEN_SECONDS,
    system_prompt: str = ANSWER_SYSTEM_PROMPT,
) -> Answer:
    """Answer `question` from what `retriever` finds, citing it.

    Args:
        question: The question (with `audio`, the spoken part is transcribed and joined to it).
        retriever: Searches the collection (its per-modality k and fusion apply).
        llm: A LangChain chat model, a LlamaIndex LLM, an `OpenAIChat`, or None for the endpoint configured
            in the environment (``MM_RAG_LLM_BASE_URL``/``MM_RAG_LLM_MODEL``/``MM_RAG_LLM_API_KEY``).
        image: An image that is part of the question (searched in the CLIP space).
        filter: Restricts every space searched.
        max_tokens, max_images: Budget of the context (see `build_context`).
        widen_seconds: How far around a transcript hit its passage reaches, from the retriever's store (see
            `build_context`); 0 gives the model the hit's own window only.

    Raises:
        LLMNotConfiguredError: no `llm` and none configured; InvalidInputError: a bad query.
    """
    results = retriever.retrieve(question, image=image, audio=audio, filter=filter)
    context = build_context(
        results, max_tokens=max_tokens, max_images=max_images, store=retriever.store, widen_seconds=widen_seconds
    )
    text = complete(llm, system_prompt, context, f"Question: {question}")
    return Answer(text, results, context)
