"""A LangChain RAG chain over mm-rag: the chat model reads the retrieved passages *and* the retrieved pictures.

The store holds a trail map's legend (short text passages) and drawings of its symbols (images), in one CLIP
space. The LCEL chain is ``retriever → prompt → chat model → StrOutputParser``; the prompt's human message
carries the question, the numbered passages `mm_rag.context.build_context` cites (through
`langchain_mm_rag.context.documents_to_context`, the path the agent tool takes too) and each retrieved picture
as a standard image content block (base64 JPEG), labelled with the passage number it illustrates.

The chat model is a parameter of `build_rag_chain`. `main` uses a real provider only when one is configured
(``--chat-model openai:gpt-4o-mini`` or ``$MM_RAG_CHAT_MODEL``; needs the ``langchain`` package, the provider's
package and its API key); otherwise, or with ``--fake``, LangChain's own `GenericFakeChatModel` answers, so the
example runs offline. Nothing is downloaded when the CLIP model is local (config JSON + checkpoint); where no
CLIP weights can load, the example says so in one line and goes on with the text model, without pictures.

Run: python examples/langchain_rag_chain.py [--model CONFIG.json --pretrained CKPT] [--fake | --chat-model P:M]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import HumanMessage
from langchain_core.messages.content import create_image_block, create_text_block
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from langchain_mm_rag import (
    MMRagRetriever,
    MMRagVectorStore,
    OpenCLIPEmbeddings,
    TextEmbeddings,
    documents_to_context,
)

from mm_rag import OpenCLIPEmbedder

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/drawings.py, also when loaded by path
from drawings import draw
from embedders import load_embedder

SYMBOLS = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross")]
LEGEND = {
    ("red", "circle"): "A red circle marks a campsite on the trail map.",
    ("blue", "square"): "A blue square marks a parking area.",
    ("green", "triangle"): "A green triangle marks a viewpoint.",
    ("yellow", "cross"): "A yellow cross marks a first-aid post.",
}
SYSTEM = (
    "Answer the question from the retrieved passages and pictures only. Cite passages by their [number]; say so"
    " when the context does not hold the answer."
)
QUESTION = "What does a red circle mean on the trail map?"
FAKE_ANSWER = "A red circle marks a campsite [1]; picture [2] shows the symbol."
ENV_CHAT_MODEL = "MM_RAG_CHAT_MODEL"

PROMPT = ChatPromptTemplate.from_messages([("system", SYSTEM), MessagesPlaceholder("turn")])


def build_store(embedding: Embeddings, folder: Path) -> MMRagVectorStore:
    """A temporary store of the legend's passages and, when `embedding` embeds pictures (CLIP), a drawing of each
    symbol (PNG files under `folder`)."""
    store = MMRagVectorStore(embedding=embedding)
    if isinstance(embedding, OpenCLIPEmbeddings):
        pictures = [draw(colour, shape, folder / f"{colour}-{shape}.png") for colour, shape in SYMBOLS]
        store.add_images(pictures, [{"colour": colour, "shape": shape} for colour, shape in SYMBOLS])
    store.add_texts([LEGEND[symbol] for symbol in SYMBOLS], [{"source": "legend.md"} for _ in SYMBOLS])
    return store


def human_turn(question: str, documents: Sequence[Document], *, max_images: int = 4) -> HumanMessage:
    """The human message: the question, the cited passages, then each picture after a ``Picture [n]:`` label."""
    context = documents_to_context(documents, max_images=max_images)
    blocks: list[Any] = [
        create_text_block(f"Question: {question}"),
        create_text_block("Retrieved passages:\n" + (context.text or "(nothing found)")),
    ]
    for image in context.images:
        blocks.append(create_text_block(f"Picture [{image.citation}]:"))
        blocks.append(create_image_block(base64=image.data, mime_type=image.mime_type))
    return HumanMessage(content=[dict(block) for block in blocks])


def build_prompt(retriever: BaseRetriever) -> Runnable[str, PromptValue]:
    """question → retrieved Documents → the chat prompt (system instructions + the multimodal human turn)."""
    return (
        {"question": RunnablePassthrough(), "documents": retriever} | RunnableLambda(_prompt_variables) | PROMPT
    ).with_config(run_name="multimodal_rag_prompt")


def _prompt_variables(inputs: dict[str, Any]) -> dict[str, list[HumanMessage]]:
    """The prompt's variables from the question and the Documents retrieved for it."""
    return {"turn": [human_turn(inputs["question"], inputs["documents"])]}


def build_rag_chain(retriever: BaseRetriever, model: BaseChatModel) -> Runnable[str, str]:
    """The RAG chain: ``retriever → prompt → model → StrOutputParser``; invoke it with the question."""
    return (build_prompt(retriever) | model | StrOutputParser()).with_config(run_name="multimodal_rag_chain")


def fake_chat_model(answer: str = FAKE_ANSWER) -> GenericFakeChatModel:
    """LangChain's own fake chat model, giving `answer` to every call: the offline stand-in for a provider."""
    return GenericFakeChatModel(messages=itertools.repeat(answer))


def chat_model(name: str | None, *, fake: bool = False) -> BaseChatModel:
    """The provider model `name` (``provider:model``, via ``langchain.chat_models.init_chat_model``), else a fake."""
    if fake or not name:
        return fake_chat_model()
    from langchain.chat_models import init_chat_model  # the optional `langchain` package, only when configured

    return init_chat_model(name)


def describe(prompt: PromptValue) -> str:
    """One line per message block: what the model is given, without the base64 payloads."""
    lines = []
    for message in prompt.to_messages():
        for block in message.content_blocks:
            if block["type"] == "text":
                first, *rest = block["text"].splitlines() or [""]
                lines.append(f"  {message.type} text: {first}" + "".join(f"\n    {line}" for line in rest))
            else:
                size = len(block.get("base64", ""))
                lines.append(f"  {message.type} {block['type']}: {block.get('mime_type')}, {size} base64 characters")
    return "\n".join(lines)


def embeddings(model: str, pretrained: str) -> OpenCLIPEmbeddings | TextEmbeddings:
    """CLIP embeddings when its weights load here, else (said in one line) the text model's: no pictures then."""
    embedder = load_embedder(model, pretrained)
    return OpenCLIPEmbeddings(embedder) if isinstance(embedder, OpenCLIPEmbedder) else TextEmbeddings(embedder)


def main(argv: Sequence[str] | None = None) -> str:
    """Build the store and the chain, show the prompt the model reads, and print (and return) its answer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture name or config JSON path")
    parser.add_argument("--pretrained", default="laion2b_s34b_b79k", help="pretrained tag or checkpoint path")
    parser.add_argument("--chat-model", default=os.environ.get(ENV_CHAT_MODEL), help="provider:model to answer")
    parser.add_argument("--fake", action="store_true", help="answer with LangChain's fake chat model (offline)")
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args(argv)

    store = build_store(embeddings(args.model, args.pretrained), Path(tempfile.mkdtemp(prefix="mm-rag-trail-")))
    retriever = MMRagRetriever(vectorstore=store, k=2)
    offline = args.fake or not args.chat_model
    model = chat_model(args.chat_model, fake=args.fake)
    print(f"chat model: {type(model).__name__}" + (" (offline, scripted)" if offline else ""))
    print("prompt:\n" + describe(build_prompt(retriever).invoke(args.question)))
    answer = build_rag_chain(retriever, model).invoke(args.question)
    print(f"answer: {answer}")
    return answer


if __name__ == "__main__":
    main()
