"""`mm-rag ask`, `caption` and `eval`, run as the installed command against a store made by `ingest`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.tiny_clip import draw_shape

from mm_rag import MultimodalStore, TextEmbedder, ingest

MM_RAG = Path(sys.executable).with_name("mm-rag")
SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle")]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
for _name in ("MM_RAG_LLM_BASE_URL", "MM_RAG_LLM_MODEL", "MM_RAG_LLM_API_KEY", "OPENAI_API_KEY"):
    ENV.pop(_name, None)


def mm_rag(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MM_RAG), *map(str, args)], check=False, capture_output=True, text=True, env=ENV, timeout=300)


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_clip, minilm_dir) -> Path:
    """Drawn shapes and one caption file per shape, ingested with the tiny CLIP and MiniLM."""
    base = tmp_path_factory.mktemp("cli-apps")
    (base / "data").mkdir()
    for colour, shape in SHAPES:
        draw_shape(colour, shape).save(base / "data" / f"{colour}-{shape}.png")
        (base / "data" / f"{colour}.txt").write_text(f"a {colour} {shape}")
    with MultimodalStore(base / "store") as opened:
        report = ingest(base / "data", opened, clip=tiny_clip, text=TextEmbedder(minilm_dir, device="cpu"))
        assert not report.failed and len(report.added) == 6
    return base / "store"


def test_ask_without_a_language_model_says_what_to_configure(store: Path) -> None:
    result = mm_rag("ask", "what is red?", "--store", store)
    assert result.returncode == 2
    assert "no language model configured" in result.stderr and "MM_RAG_LLM_BASE_URL" in result.stderr
    # The fix on the command line, where the question was asked: the options, and the variables behind them.
    assert "--llm-base-url URL" in result.stderr and "--llm-model NAME" in result.stderr
    assert "MM_RAG_LLM_MODEL" in result.stderr
    assert "Traceback" not in result.stderr
    missing_model = mm_rag("ask", "what is red?", "--store", store, "--llm-base-url", "http://127.0.0.1:9/v1")
    assert missing_model.returncode == 2 and "--llm-model" in missing_model.stderr


def test_ask_sends_cited_context_with_pictures_and_prints_the_sources(store: Path, chat_endpoint) -> None:
    chat_endpoint.reply = "The red one is a circle [1]."
    result = mm_rag("ask", "what shape is red?", "--store", store, "--device", "cpu",
                    "--llm-base-url", chat_endpoint.url, "--llm-model", "vlm", "--llm-api-key", "k")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "The red one is a circle [1]." and "sources:" in lines
    assert any(line.strip().startswith("[1] ") for line in lines)
    ((headers, body),) = chat_endpoint.requests
    parts = body["messages"][1]["content"]
    assert headers["Authorization"] == "Bearer k"
    assert parts[-1] == {"type": "text", "text": "Question: what shape is red?"}
    assert any(part["type"] == "image_url" for part in parts)


def test_caption_without_a_language_model_is_the_nearest_text(store: Path, tmp_path: Path) -> None:
    picture = tmp_path / "query.png"
    draw_shape("green", "triangle", seed=5).save(picture)
    result = mm_rag("caption", picture, "--store", store, "--device", "cpu", "--candidate", "a yellow cross", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["caption"] == "a green triangle"
    assert "a yellow cross" in [c["text"] for c in answer["candidates"]]


def test_eval_reports_metrics_per_modality(store: Path, tmp_path: Path) -> None:
    queries = tmp_path / "queries.jsonl"
    with MultimodalStore.open(store) as opened:
        ids = {(r.modality, Path(r.uri or "").stem): r.id for r in opened}
    lines = [{"query": f"a {colour} {shape}", "relevant": [ids[("image", f"{colour}-{shape}")]]} for colour, shape in SHAPES]
    queries.write_text("\n".join(json.dumps(line) for line in lines))
    result = mm_rag("eval", queries, "--store", store, "--k", "1,3", "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["queries"] == {"all": 3, "image": 3}
    assert report["metrics"]["image"]["recall@1"] == 1.0 and report["metrics"]["image"]["mrr"] == 1.0
    table = mm_rag("eval", queries, "--store", store, "--device", "cpu")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == ["modality", "queries", "recall@1"]
    bad = mm_rag("eval", queries, "--store", store, "--k", "one")
    assert bad.returncode == 2 and "--k" in bad.stderr
