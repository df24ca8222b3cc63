"""A LangChain agent that searches mm-rag with the multimodal retriever tool and reads text *and* pictures back.

The store holds a trail map's legend (text passages), a ranger's recorded talk (a transcript window with its
time range) and drawings of the map's symbols (images), in one CLIP space. `langchain.agents.create_agent` gets
`create_multimodal_retriever_tool`: when the model calls it, the tool answers with a ToolMessage whose content is
numbered, cited passages plus the pictures found as standard image content blocks (base64 JPEG), and whose
artifact is the list of Documents, for the application rather than the model.

`main` uses a real provider only when one is configured (``--chat-model openai:gpt-4o-mini`` or
``$MM_RAG_CHAT_MODEL``; needs the provider's package and API key). Otherwise, or with ``--fake``, a LangChain fake
chat model follows a script: call the tool, then answer. Nothing is downloaded when the CLIP model is local;
where no CLIP weights can load, the example says so in one line and goes on with the text model, without pictures.

Needs the ``langchain`` package (v1) besides ``langchain-mm-rag``.
Run: python examples/langchain_agent.py [--model CONFIG.json --pretrained CKPT] [--fake | --chat-model P:M]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.messages.tool import tool_call
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_mm_rag import MMRagVectorStore, OpenCLIPEmbeddings, TextEmbeddings, create_multimodal_retriever_tool
from langgraph.graph.state import CompiledStateGraph

from mm_rag import OpenCLIPEmbedder

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/drawings.py, also when loaded by path
from drawings import draw
from embedders import load_embedder

SYMBOLS = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross")]
LEGEND = [
    "A red circle marks a campsite on the trail map.",
    "A blue square marks a parking area.",
    "A green triangle marks a viewpoint.",
    "A yellow cross marks a first-aid post.",
]
TALK = Document(
    page_content="a red circle is where you may pitch a tent overnight",
    metadata={"modality": "audio", "uri": "ranger-talk.wav", "start": 95.0, "end": 101.5},
    id="ranger-talk-95",
)
SYSTEM = (
    "You answer questions about the trail map. Search the knowledge base with the tool, look at the passages and"
    " pictures it returns, and cite passages by their [number]."
)
TOOL_NAME = "search_trail_map"
TOOL_DESCRIPTION = (
    "Search the trail map's legend, the ranger's recorded talks and the map's symbols with a natural-language"
    " query. Returns numbered passages citing their source and time range, and the matching pictures."
)
QUESTION = "What does a red circle mean on the trail map?"
SEARCH_QUERY = "a red circle"
FAKE_ANSWER = "A red circle marks a campsite [2]: the ranger says you may pitch a tent there overnight [1]."
ENV_CHAT_MODEL = "MM_RAG_CHAT_MODEL"


class ToolCallingFakeChatModel(GenericFakeChatModel):
    """LangChain's `GenericFakeChatModel` that accepts tools, so an agent can drive it; its replies stay scripted.

    A scripted `AIMessage` with ``tool_calls`` is how it "decides" to call a tool.
    """

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind the tools' OpenAI-style schemas, as a provider model would send them; the fake reply ignores them."""
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)


def scripted_model(
    tool_name: str = TOOL_NAME, query: str = SEARCH_QUERY, answer: str = FAKE_ANSWER
) -> ToolCallingFakeChatModel:
    """A fake model that first calls `tool_name` with `query`, then, given the tool's answer, replies `answer`."""
    call = tool_call(name=tool_name, args={"query": query}, id="call-search-1")
    return ToolCallingFakeChatModel(messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(answer)]))


def build_store(embedding: Embeddings, folder: Path) -> MMRagVectorStore:
    """A temporary store: the legend, the ranger's talk and, when `embedding` embeds pictures (CLIP), a drawing of
    each symbol (PNG files under `folder`)."""
    store = MMRagVectorStore(embedding=embedding)
    if isinstance(embedding, OpenCLIPEmbeddings):
        pictures = [draw(colour, shape, folder / f"{colour}-{shape}.png") for colour, shape in SYMBOLS]
        store.add_images(pictures, [{"colour": colour, "shape": shape} for colour, shape in SYMBOLS])
    store.add_texts(LEGEND, [{"source": "legend.md"} for _ in LEGEND])
    store.add_documents([TALK])
    return store


def build_agent(store: MMRagVectorStore, model: BaseChatModel | str, *, k: int = 3) -> CompiledStateGraph:
    """An agent (`create_agent`'s compiled graph) with one tool: multimodal search over `store`, `k` results."""
    tool = create_multimodal_retriever_tool(store, TOOL_NAME, TOOL_DESCRIPTION, k=k)
    return create_agent(model, [tool], system_prompt=SYSTEM, name="trail_map_agent")


def ask(agent: CompiledStateGraph, question: str) -> list[AnyMessage]:
    """Run the agent on `question`; the conversation: question, tool calls, tool answers, final answer."""
    return agent.invoke({"messages": [HumanMessage(question)]})["messages"]


def describe(message: AnyMessage) -> str:
    """One readable line (or a few) per message, without base64 payloads."""
    if isinstance(message, ToolMessage):
        kinds = [block["type"] for block in message.content_blocks]
        text = "\n".join(block["text"] for block in message.content_blocks if block["type"] == "text")
        documents = message.artifact or []
        lines = [f"tool {message.name}: blocks {kinds}; artifact: {len(documents)} Documents"]
        lines += [f"    {line}" for line in text.splitlines()]
        return "\n".join(lines)
    if isinstance(message, AIMessage) and message.tool_calls:
        calls = ", ".join(f"{call['name']}({json.dumps(call['args'])})" for call in message.tool_calls)
        return f"ai calls {calls}"
    return f"{message.type}: {message.text}"


def main(argv: Sequence[str] | None = None) -> list[AnyMessage]:
    """Build the store and the agent, ask the question, print the conversation and return its messages."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture name or config JSON path")
    parser.add_argument("--pretrained", default="laion2b_s34b_b79k", help="pretrained tag or checkpoint path")
    parser.add_argument("--chat-model", default=os.environ.get(ENV_CHAT_MODEL), help="provider:model to answer")
    parser.add_argument("--fake", action="store_true", help="use a scripted LangChain fake chat model (offline)")
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args(argv)

    embedder = load_embedder(args.model, args.pretrained)
    embedding = OpenCLIPEmbeddings(embedder) if isinstance(embedder, OpenCLIPEmbedder) else TextEmbeddings(embedder)
    store = build_store(embedding, Path(tempfile.mkdtemp(prefix="mm-rag-trail-")))
    offline = args.fake or not args.chat_model
    model: BaseChatModel | str = scripted_model() if offline else args.chat_model
    print(f"chat model: {'scripted fake (offline)' if offline else model}")
    messages = ask(build_agent(store, model), args.question)
    for message in messages:
        print(describe(message))
    return messages


if __name__ == "__main__":
    main()
