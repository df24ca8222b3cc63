"""`examples/llama_index_query_engine.py`: a LlamaIndex multimodal query engine over `MMRagVectorStore`, run as
users run it (offline, with the tiny CLIP) and in process with LlamaIndex's recording mock LLM, to check that
the engine really hands the retrieved passages and images to the LLM."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ImageBlock, MessageRole, TextBlock
from llama_index.core.bridge.pydantic import Field
from llama_index.core.llms.mock import MockLLMWithChatMemoryOfLastCall
from llama_index.core.schema import ImageNode, TextNode
from llama_index.embeddings.mm_rag import OpenCLIPEmbedding

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "llama_index_query_engine.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("llama_index_query_engine_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def index(example, tiny_clip, tmp_path_factory):
    return example.build_index(OpenCLIPEmbedding(tiny_clip), tmp_path_factory.mktemp("query-engine") / "shapes")


class RecordingLLM(MockLLMWithChatMemoryOfLastCall):
    """LlamaIndex's mock chat LLM (it answers by echoing its prompt), keeping the messages of every call: with
    more context than the mock's window the engine refines its answer over several calls."""

    calls: list[list[ChatMessage]] = Field(default_factory=list)

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self.calls.append(list(messages))
        return super().chat(messages, **kwargs)  # achat runs chat too


def sent(llm: RecordingLLM) -> tuple[str, list[bytes]]:
    """The text of the user messages the LLM was sent, and the bytes of their images."""
    blocks = [block for call in llm.calls for message in call if message.role == MessageRole.USER
              for block in message.blocks]  # fmt: skip
    text = "\n".join(block.text for block in blocks if isinstance(block, TextBlock))
    return text, [block.resolve_image().read() for block in blocks if isinstance(block, ImageBlock)]


@pytest.mark.slow  # a real (tiny) model
@pytest.mark.parametrize(
    "question, note, picture",
    [
        ("Where is the red circle painted?", "workshop door has a red circle", "red-circle.png"),
        ("What does the blue square stand for?", "logo is a blue square", "blue-square.png"),
    ],
)
def test_the_engine_sends_retrieved_text_and_images_to_the_llm(example, index, question, note, picture):
    llm = RecordingLLM(is_chat_model=True)
    response = example.make_query_engine(index, llm).query(question)
    text_hit, image_hit = response.source_nodes  # similarity_top_k=1 passage, then image_similarity_top_k=1 image
    assert isinstance(text_hit.node, TextNode) and note in text_hit.node.get_content()
    assert isinstance(image_hit.node, ImageNode) and Path(image_hit.node.image_path).name == picture
    text, images = sent(llm)
    assert note in text and f"Query: {question}" in text
    assert images == [Path(image_hit.node.image_path).read_bytes()]  # the retrieved picture itself
    assert len(llm.calls) == 1 and note in str(response)  # the answer is the LLM's (the mock echoes its prompt)

    async_llm = RecordingLLM(is_chat_model=True)
    asyncio.run(example.make_query_engine(index, async_llm).aquery(question))
    assert sent(async_llm) == (text, images)


@pytest.mark.slow
def test_more_images_more_image_blocks(example, index):
    llm = RecordingLLM(is_chat_model=True)
    response = example.make_query_engine(index, llm, similarity_top_k=2, image_similarity_top_k=3).query("a red circle")
    pictures = [hit.node for hit in response.source_nodes if isinstance(hit.node, ImageNode)]
    passages = [hit.node for hit in response.source_nodes if not isinstance(hit.node, ImageNode)]
    assert len(pictures) == 3 and len(passages) == 2
    text, images = sent(llm)
    assert sorted(images) == sorted(Path(node.image_path).read_bytes() for node in pictures)
    assert all(node.get_content() in text for node in passages)


@pytest.mark.slow  # a real model
def test_query_engine_example_runs_offline(tiny_clip_paths):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--model", str(tiny_clip_paths.config),
         "--pretrained", str(tiny_clip_paths.checkpoint)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Question: Where is the red circle painted?"
    assert lines[2].endswith("The workshop door has a red circle painted on it, so visitors can find it.")
    assert lines[3].endswith("ImageNode red-circle.png")
    assert lines[4] == "The LLM was sent 3 text blocks and 1 image(s)."
    assert "Query: Where is the red circle painted?" in result.stdout.split("Answer")[1]
