"""The LangChain RAG chain and agent examples run offline with LangChain's own fake chat models.

What a fake model is given is recorded where the model itself receives it, in `_generate` (the callbacks'
`on_chat_model_start` sees a copy re-formatted for tracing); the tool's execution through LangChain's callbacks
(`on_tool_start`/`on_tool_end`). The examples are imported from their files and also run as scripts. Every test
here fails if anything tries to reach the network (`HF_HUB_OFFLINE=1` is set by the root conftest as well).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatResult
from langchain_mm_rag import MMRagRetriever, MMRagVectorStore, OpenCLIPEmbeddings, documents_to_context
from PIL import Image
from pydantic import Field

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RED = (215, 35, 35)


def _load(name: str) -> ModuleType:
    """An example imported from its file (the examples folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name} from {EXAMPLES}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rag_chain() -> ModuleType:
    return _load("langchain_rag_chain")


@pytest.fixture(scope="module")
def agent_example() -> ModuleType:
    return _load("langchain_agent")


@pytest.fixture(scope="module")
def clip(tiny_clip: Any) -> OpenCLIPEmbeddings:
    return OpenCLIPEmbeddings(tiny_clip)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse and record every name lookup and every non-local connection; the test fails if any was tried."""
    attempts: list[str] = []

    def refuse(what: str) -> OSError:
        attempts.append(what)
        return ConnectionRefusedError(f"network access in an offline test: {what}")

    def connect(self: socket.socket, address: Any) -> None:
        if self.family != socket.AF_UNIX:
            raise refuse(f"connect {address!r}")
        real_connect(self, address)

    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        raise refuse(f"getaddrinfo {host!r}")

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        raise refuse(f"create_connection {address!r}")

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: connect(self, address) or 0)
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    yield attempts
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert attempts == [], f"the test tried to reach the network: {attempts}"


def recording(model_class: type[GenericFakeChatModel]) -> type[GenericFakeChatModel]:
    """`model_class` keeping, in ``calls``, the messages and keyword arguments each of its calls receives."""

    class Recording(model_class):  # type: ignore[valid-type, misc]
        calls: list[tuple[list[BaseMessage], dict[str, Any]]] = Field(default_factory=list)

        def _generate(
            self,
            messages: list[BaseMessage],
            stop: list[str] | None = None,
            run_manager: CallbackManagerForLLMRun | None = None,
            **kwargs: Any,
        ) -> ChatResult:
            self.calls.append((list(messages), kwargs))
            return super()._generate(messages, stop, run_manager, **kwargs)

    Recording.__name__ = f"Recording{model_class.__name__}"
    return Recording


class ToolRuns(BaseCallbackHandler):
    """Keeps each tool run's name, input and output, as LangChain's callbacks report them."""

    def __init__(self) -> None:
        self.tool_runs: list[dict[str, Any]] = []

    def on_tool_start(self, serialized: dict[str, Any], input_str: str, *, run_id: UUID, **kwargs: Any) -> None:
        self.tool_runs.append({"name": serialized.get("name"), "input": kwargs.get("inputs") or input_str})

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.tool_runs[-1]["output"] = output


def _decoded(block: dict[str, Any]) -> Image.Image:
    """The picture of a standard image block; checks it is base64 JPEG as declared."""
    assert block["type"] == "image" and block["mime_type"] == "image/jpeg" and "url" not in block
    image = Image.open(io.BytesIO(base64.b64decode(block["base64"], validate=True)))
    image.load()
    assert image.format == "JPEG"
    return image.convert("RGB")


def _is_red_symbol(image: Image.Image) -> bool:
    """Whether the centre of the picture is the drawn red symbol (JPEG moves colours a little)."""
    centre = image.getpixel((image.width // 2, image.height // 2))
    return all(abs(value - target) <= 30 for value, target in zip(centre, RED))


def _texts(blocks: list[Any]) -> list[str]:
    return [block["text"] for block in blocks if block["type"] == "text"]


# --- the RAG chain ------------------------------------------------------------------------------------------
def test_the_chain_model_reads_the_retrieved_passage_and_picture(rag_chain, clip, tmp_path: Path) -> None:
    store = rag_chain.build_store(clip, tmp_path)
    retriever = MMRagRetriever(vectorstore=store, k=2)
    retrieved = retriever.invoke(rag_chain.QUESTION)
    assert {d.page_content or d.metadata["modality"] for d in retrieved} == {
        "A red circle marks a campsite on the trail map.",
        "image",
    }
    assert isinstance(rag_chain.fake_chat_model(), GenericFakeChatModel)
    model = recording(GenericFakeChatModel)(messages=rag_chain.fake_chat_model().messages)
    answer = rag_chain.build_rag_chain(retriever, model).invoke(rag_chain.QUESTION)
    assert answer == rag_chain.FAKE_ANSWER

    [(messages, _)] = model.calls
    assert [message.type for message in messages] == ["system", "human"]
    assert messages[0].content == rag_chain.SYSTEM
    human = messages[1]
    assert isinstance(human, HumanMessage) and isinstance(human.content, list)
    assert human.content_blocks == human.content  # already standard content blocks
    texts = _texts(human.content)
    assert texts[0] == f"Question: {rag_chain.QUESTION}"
    assert "[1] text legend.md: A red circle marks a campsite on the trail map." in texts[1]
    image_path = next(d.metadata["uri"] for d in retrieved if d.metadata.get("modality") == "image")
    assert f"[2] image {image_path}" in texts[1] and texts[2] == "Picture [2]:"
    images = [block for block in human.content if block["type"] == "image"]
    assert len(images) == 1 and human.content[-1] is images[0]
    picture = _decoded(images[0])
    assert picture.size == (64, 64) and _is_red_symbol(picture)
    # the same encoding the agent tool gives: mm-rag's build_context, through the integration's helper
    assert images[0]["base64"] == documents_to_context(retrieved).images[0].data


def test_the_chain_prompt_without_results_says_so(rag_chain) -> None:
    message = rag_chain.human_turn("anything?", [])
    assert _texts(message.content) == ["Question: anything?", "Retrieved passages:\n(nothing found)"]
    assert len(message.content) == 2


def test_the_chain_uses_a_fake_model_unless_a_provider_is_configured(rag_chain) -> None:
    assert isinstance(rag_chain.chat_model(None), GenericFakeChatModel)
    assert isinstance(rag_chain.chat_model("openai:gpt-4o-mini", fake=True), GenericFakeChatModel)
    model = rag_chain.fake_chat_model("same answer")
    assert [model.invoke("one").content, model.invoke("two").content] == ["same answer", "same answer"]


def test_the_chain_example_main_runs_offline(rag_chain, tiny_clip_paths, monkeypatch, capsys) -> None:
    monkeypatch.setenv(rag_chain.ENV_CHAT_MODEL, "openai:gpt-4o-mini")  # configured, yet --fake wins
    argv = ["--model", str(tiny_clip_paths.config), "--pretrained", str(tiny_clip_paths.checkpoint), "--fake"]
    assert rag_chain.main(argv) == rag_chain.FAKE_ANSWER
    out = capsys.readouterr().out
    assert "chat model: GenericFakeChatModel (offline, scripted)" in out
    assert "human text: Picture [2]:" in out and "human image: image/jpeg" in out
    assert f"answer: {rag_chain.FAKE_ANSWER}" in out


# --- the agent ----------------------------------------------------------------------------------------------
def test_the_agent_runs_the_multimodal_tool_and_gives_the_scripted_answer(agent_example, clip, tmp_path) -> None:
    store: MMRagVectorStore = agent_example.build_store(clip, tmp_path)
    script = agent_example.scripted_model()
    assert isinstance(script, GenericFakeChatModel)
    model = recording(agent_example.ToolCallingFakeChatModel)(messages=script.messages)
    recorder = ToolRuns()
    agent = agent_example.build_agent(store, model)
    question = HumanMessage(agent_example.QUESTION)
    messages = agent.invoke({"messages": [question]}, {"callbacks": [recorder]})["messages"]

    assert [type(message) for message in messages] == [HumanMessage, AIMessage, ToolMessage, AIMessage]
    [call] = messages[1].tool_calls
    assert call["name"] == agent_example.TOOL_NAME and call["args"] == {"query": agent_example.SEARCH_QUERY}
    assert messages[-1].text == agent_example.FAKE_ANSWER and not messages[-1].tool_calls

    # the tool really ran, on the model's call
    [run] = recorder.tool_runs
    assert run["name"] == agent_example.TOOL_NAME and run["input"] == {"query": agent_example.SEARCH_QUERY}
    reply = messages[2]
    assert run["output"] == reply and reply.tool_call_id == call["id"] and reply.status == "success"
    assert reply.name == agent_example.TOOL_NAME

    # its content: cited passages (text) and the picture found (image); its artifact: the Documents
    assert [block["type"] for block in reply.content] == ["text", "image"]
    [text] = _texts(reply.content)
    assert "audio transcript ranger-talk.wav 01:35.0-01:41.5: a red circle is where you may pitch a tent" in text
    assert "text legend.md: A red circle marks a campsite on the trail map." in text
    assert _is_red_symbol(_decoded(reply.content[1]))
    expected = store.similarity_search(agent_example.SEARCH_QUERY, k=3)
    assert all(isinstance(document, Document) for document in reply.artifact)
    found = [d.id for d in reply.artifact]
    assert found == [d.id for d in expected] and agent_example.TALK.id in found
    assert [d.metadata.get("modality") for d in reply.artifact].count("image") == 1

    # the model was offered the tool, and its second turn read the tool's text and picture
    first, second = model.calls
    assert [tool["function"]["name"] for tool in first[1]["tools"]] == [agent_example.TOOL_NAME]
    assert first[1]["tools"][0]["function"]["parameters"]["required"] == ["query"]
    assert first[0][-1].text == agent_example.QUESTION and first[0][0].type == "system"
    assert second[0][-1].type == "tool" and second[0][-1].content == reply.content


def test_the_agent_example_main_runs_offline(agent_example, tiny_clip_paths, monkeypatch, capsys) -> None:
    monkeypatch.delenv(agent_example.ENV_CHAT_MODEL, raising=False)  # nothing configured: the fake
    argv = ["--model", str(tiny_clip_paths.config), "--pretrained", str(tiny_clip_paths.checkpoint)]
    messages = agent_example.main(argv)
    assert messages[-1].text == agent_example.FAKE_ANSWER
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "chat model: scripted fake (offline)"
    assert f'ai calls {agent_example.TOOL_NAME}({{"query": "a red circle"}})' in out
    assert f"tool {agent_example.TOOL_NAME}: blocks ['text', 'image']; artifact: 3 Documents" in out
    assert out[-1] == f"ai: {agent_example.FAKE_ANSWER}"


# --- as scripts ---------------------------------------------------------------------------------------------
@pytest.mark.slow  # a fresh interpreter imports torch and open_clip
@pytest.mark.parametrize(
    ("script", "last_line"),
    [
        ("langchain_rag_chain.py", "answer: A red circle marks a campsite [1]; picture [2] shows the symbol."),
        ("langchain_agent.py", "ai: A red circle marks a campsite [2]: the ranger says you may pitch a tent"),
    ],
)
def test_the_example_scripts_run_offline(script: str, last_line: str, tiny_clip_paths) -> None:
    command = [sys.executable, str(EXAMPLES / script), "--fake",
               "--model", str(tiny_clip_paths.config), "--pretrained", str(tiny_clip_paths.checkpoint)]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != "MM_RAG_CHAT_MODEL"}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LANGSMITH_TRACING": "false"}
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith(last_line)
