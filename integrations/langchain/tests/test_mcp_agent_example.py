"""examples/mcp_agent.py: a LangChain agent using `mm-rag mcp`'s tools over stdio, with a scripted fake chat model.

The store is examples/media ingested with the tiny CLIP model, MiniLM and Whisper tiny.en; the example starts the
real ``mm-rag mcp`` subprocess and reaches its tools through langchain-mcp-adapters.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType

import pytest
from langchain_core.messages import AIMessage, ToolMessage

pytestmark = pytest.mark.slow  # two subprocesses load real (tiny) models

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "mcp_agent.py"
MM_RAG = Path(sys.executable).with_name("mm-rag")


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_mcp_agent", EXAMPLE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {EXAMPLE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_clip_paths, minilm_dir: Path, whisper_ct2_dir: Path) -> Path:
    store = tmp_path_factory.mktemp("mcp-agent") / "store"
    models = [
        "--clip-model", tiny_clip_paths.config, "--clip-pretrained", tiny_clip_paths.checkpoint,
        "--text-model", minilm_dir, "--whisper-model", whisper_ct2_dir, "--device", "cpu",
    ]  # fmt: skip
    result = subprocess.run(
        [str(MM_RAG), "ingest", str(ROOT / "examples" / "media"), "--store", str(store), *map(str, models)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return store


@pytest.fixture(scope="module")
def run(example: ModuleType, store: Path) -> tuple[list, list[str]]:
    """The conversation of `main` with the fake model (nothing configured), and what it printed."""
    saved = os.environ.pop(example.ENV_CHAT_MODEL, None)  # nothing configured: the fake model
    try:
        printed = io.StringIO()
        with redirect_stdout(printed):
            messages = example.main(["--store", str(store), "--", "--device", "cpu"])
    finally:
        if saved is not None:
            os.environ[example.ENV_CHAT_MODEL] = saved
    return messages, printed.getvalue().splitlines()


def test_the_agent_reads_the_tool_error_then_searches_again_and_answers(example, run) -> None:
    messages, printed = run
    tools = [message for message in messages if isinstance(message, ToolMessage)]
    assert [tool.status for tool in tools] == ["error", "success"]
    assert "unknown operator '$near'" in tools[0].text  # the model is told what was wrong, the server goes on
    assert messages[-1].text == example.FAKE_ANSWER
    calls = [call["args"] for m in messages if isinstance(m, AIMessage) for call in m.tool_calls]
    assert [call["filter"] for call in calls] == [example.BAD_FILTER, example.GOOD_FILTER]
    assert printed[0] == "chat model: scripted fake (offline)" and printed[-1] == f"ai: {example.FAKE_ANSWER}"


def test_the_search_tool_message_has_cited_moments_and_keyframe_images(run) -> None:
    answer = [message for message in run[0] if isinstance(message, ToolMessage)][-1]
    blocks = answer.content_blocks
    text = blocks[0]["text"]
    assert text.startswith("[1] audio transcript ") and "planning-meeting.ogg 00:00" in text and "4000 euros" in text
    assert "video frame" in text
    images = [block for block in blocks if block["type"] == "image"]
    assert images and all(block["mime_type"] == "image/jpeg" for block in images)
    assert all(base64.b64decode(block["base64"])[:2] == b"\xff\xd8" for block in images)  # JPEG data
    results = answer.artifact["structured_content"]["results"]
    assert {result["modality"] for result in results} == {"audio", "video"} and results[0]["start"] is not None
