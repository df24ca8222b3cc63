"""A LangChain agent that reaches an mm-rag store through MCP: `mm-rag mcp` over stdio, its tools as LangChain tools.

The agent process starts ``mm-rag mcp --store S`` as a subprocess (what Claude Desktop or Cursor do with the same
command) through langchain-mcp-adapters' `MultiServerMCPClient`, turns its tools into LangChain tools with
`load_mcp_tools` and hands them to `langchain.agents.create_agent`. When the model calls ``search``, the
ToolMessage carries the server's content as LangChain standard blocks, numbered passages with their time ranges
as text, then the pictures and video keyframes found as base64 image blocks. Its artifact holds the structured
results (``artifact["structured_content"]``), for the application. A tool error (a malformed filter, say)
reaches the model as an error message it can act on.

`main` uses a real provider only when one is configured (``--chat-model openai:gpt-4o-mini`` or
``$MM_RAG_CHAT_MODEL``). Otherwise, or with ``--fake``, a LangChain fake chat model follows a script: search with
a bad filter, read the error, search again, then answer.

Build a store first, e.g. ``mm-rag ingest examples/media --store /tmp/media-store``.
Run: python examples/mcp_agent.py --store /tmp/media-store [--fake | --chat-model P:M] [-- extra mm-rag mcp options]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.messages.tool import tool_call
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.sessions import StdioConnection
from langchain_mcp_adapters.tools import load_mcp_tools

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the fake chat model of examples/langchain_agent.py
from langchain_agent import ToolCallingFakeChatModel
from langchain_agent import describe as describe_message

SYSTEM = (
    "You answer questions about a harbour festival and a museum from its knowledge base. Search it with the tools,"
    " look at the passages and pictures they return, and cite passages by their [number]."
)
QUESTION = "When do the fireworks start, and what is the stage budget?"
BAD_FILTER = {"modality": {"$near": "audio"}}
GOOD_FILTER = {"modality": {"$in": ["audio", "video"]}}  # the recordings: transcripts and keyframes
SEARCH_QUERY = "fireworks start time and stage budget"
FAKE_ANSWER = "The fireworks start at 10 in the evening on Saturday, and the stage budget is 4000 euros [1]."
ENV_CHAT_MODEL = "MM_RAG_CHAT_MODEL"
SERVER = "mm-rag"


def connection(store: Path, options: Sequence[str] = ()) -> StdioConnection:
    """How to start ``mm-rag mcp`` on `store` with this interpreter (extra `options`: models, device…)."""
    # The SDK starts servers with a few safe variables only (PATH, HOME…), so the offline switches are passed on.
    offline = {key: os.environ[key] for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if key in os.environ}
    return StdioConnection(
        transport="stdio",
        command=sys.executable,
        args=["-m", "mm_rag.cli", "mcp", "--store", str(store), *options],
        env=offline,
    )


def scripted_model() -> GenericFakeChatModel:
    """A fake model: a search with a malformed filter, then (after the error) a corrected one, then the answer."""
    calls = [
        tool_call(name="search", args={"query": SEARCH_QUERY, "filter": BAD_FILTER}, id="call-1"),
        tool_call(name="search", args={"query": SEARCH_QUERY, "filter": GOOD_FILTER}, id="call-2"),
    ]
    replies = [AIMessage(content="", tool_calls=[call]) for call in calls] + [AIMessage(FAKE_ANSWER)]
    return ToolCallingFakeChatModel(messages=iter(replies))


async def ask(
    store: Path, model: BaseChatModel | str, question: str = QUESTION, options: Sequence[str] = ()
) -> list[AnyMessage]:
    """Start ``mm-rag mcp`` on `store`, run an agent with its tools on `question`, and return the conversation."""
    client = MultiServerMCPClient({SERVER: connection(store, options)})
    # One session for the whole conversation: `client.get_tools()` alone would start a server (and load its
    # models) for every tool call.
    async with client.session(SERVER) as session:
        tools = await load_mcp_tools(session, server_name=SERVER)
        agent = create_agent(model, tools, system_prompt=SYSTEM, name="mm_rag_mcp_agent")
        state = await agent.ainvoke({"messages": [HumanMessage(question)]})
        return state["messages"]


def describe(message: AnyMessage) -> str:
    """One readable line (or a few) per message, without base64 payloads (tool answers as MCP gives them)."""
    if not isinstance(message, ToolMessage):
        return describe_message(message)
    kinds = [block["type"] for block in message.content_blocks]
    text = "\n".join(block["text"] for block in message.content_blocks if block["type"] == "text")
    results = (message.artifact or {}).get("structured_content", {}).get("results", [])
    lines = [f"tool {message.name} ({message.status}): blocks {kinds}; artifact: {len(results)} results"]
    return "\n".join(lines + [f"    {line}" for line in text.splitlines()])


def main(argv: Sequence[str] | None = None) -> list[AnyMessage]:
    """Ask the question through ``mm-rag mcp``, print the conversation and return its messages."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="an mm-rag store (see mm-rag ingest)")
    parser.add_argument("--chat-model", default=os.environ.get(ENV_CHAT_MODEL), help="provider:model to answer")
    parser.add_argument("--fake", action="store_true", help="use a scripted LangChain fake chat model (offline)")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("options", nargs="*", help="after --: more `mm-rag mcp` options (--device cpu…)")
    args = parser.parse_args(argv)

    offline = args.fake or not args.chat_model
    model: BaseChatModel | str = scripted_model() if offline else args.chat_model
    print(f"chat model: {'scripted fake (offline)' if offline else model}")
    messages = anyio.run(ask, args.store, model, args.question, args.options)
    for message in messages:
        print(describe(message))
    return messages


if __name__ == "__main__":
    main()
