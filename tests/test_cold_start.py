"""Cold start of `mm-rag search`: what a query loads, and that the light query encoder changes no result.

A search process loads only what the query needs: no sentence-transformers (its import alone takes seconds)
when the light BERT encoder can run the store's text model, no Whisper for a typed query, and no heavy
library at all for importing the package or the command line. Times are measured in benchmarks/, not here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mm_rag import MultimodalStore, Record, TextEmbedder
from mm_rag.embed import base
from mm_rag.embed.bert import LightBertEncoder, light_encoder_config

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "open_clip", "whisper", "faster_whisper", "av")
PASSAGES = [
    "The fireworks start at ten on Saturday night, above the harbour.",
    "The red room of the museum holds the old maps.",
    "Bake the plum cake for forty minutes.",
    "Rome is the capital of Italy.",
]
QUERIES = ["When do the fireworks start?", "", "Ünïcödé 日本語 — punctuation!!", "maps " * 400]


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300, check=False
    )


def loaded_after(statement: str) -> list[str]:
    """The heavy modules in `sys.modules` after a fresh interpreter runs `statement`."""
    result = python(f"import sys, json\n{statement}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_the_package_and_the_command_line_loads_no_heavy_library() -> None:
    assert loaded_after("import mm_rag, mm_rag.cli, mm_rag.embed, mm_rag.embed.loading, mm_rag.retrieval") == []


@pytest.mark.slow
def test_the_light_encoder_gives_sentence_transformers_vectors_bit_for_bit(minilm_dir: Path) -> None:
    config = light_encoder_config(str(minilm_dir))
    assert config is not None and config.pooling == "mean" and config.normalize
    light = LightBertEncoder(config)
    reference = TextEmbedder(minilm_dir, device="cpu").load()
    for prompt in (None, "query: "):
        reference.query_prompt = prompt
        for query in QUERIES:  # the last one is truncated at the model's 256 tokens
            assert np.array_equal(light.encode(query, prompt=prompt), reference.embed_query(query))


def _copy(folder: Path, into: Path) -> Path:
    copy = into / "model"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.safetensors"))
    (copy / "model.safetensors").symlink_to(folder / "model.safetensors")
    return copy


def _edit(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    "change",
    ["dense", "lower_case", "max_pooling", "two_poolings", "prompt_excluded", "not_bert", "no_weights", "prompts"],
)
def test_folders_the_light_encoder_cannot_run_exactly_are_left_to_sentence_transformers(
    change: str, minilm_dir: Path, tmp_path: Path
) -> None:
    folder = _copy(minilm_dir, tmp_path)
    assert light_encoder_config(str(folder)) is not None
    pooling = folder / "1_Pooling" / "config.json"
    if change == "dense":
        modules = json.loads((folder / "modules.json").read_text())
        modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        (folder / "modules.json").write_text(json.dumps(modules))
    elif change == "lower_case":
        _edit(folder / "sentence_bert_config.json", do_lower_case=True)
    elif change == "max_pooling":
        _edit(pooling, pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    elif change == "two_poolings":
        _edit(pooling, pooling_mode_cls_token=True)
    elif change == "prompt_excluded":
        _edit(pooling, include_prompt=False)
    elif change == "not_bert":
        _edit(folder / "config.json", model_type="roberta")
    elif change == "no_weights":
        (folder / "model.safetensors").unlink()
    elif change == "prompts":
        _edit(folder / "config_sentence_transformers.json", prompts={"query": "query: "}, default_prompt_name="query")
    assert light_encoder_config(str(folder)) is None
    assert light_encoder_config(str(tmp_path / "missing")) is None


@pytest.mark.slow
def test_queries_only_loading_skips_sentence_transformers_until_documents_are_embedded(
    minilm_dir: Path, tmp_path: Path
) -> None:
    folder = _copy(minilm_dir, tmp_path)  # a path no other test has loaded into the shared model cache
    embedder = TextEmbedder(folder, device="cpu").load(queries_only=True)
    assert embedder.dim == 384
    assert not any(key[:2] == ("sentence-transformers", str(folder)) for key in base._MODELS)
    light = embedder.embed_query(PASSAGES[0])
    documents = embedder.embed_texts(PASSAGES)  # documents need sentence-transformers' batching: it loads now
    assert any(key[:2] == ("sentence-transformers", str(folder)) for key in base._MODELS)
    np.testing.assert_allclose(documents[0], light, atol=1e-6)  # batched with padding: equal to float noise
    assert np.array_equal(embedder.embed_query(PASSAGES[0]), light)  # now from sentence-transformers, one text


@pytest.mark.slow
def test_a_text_search_loads_neither_sentence_transformers_nor_whisper_and_finds_the_same(
    minilm_dir: Path, tmp_path: Path
) -> None:
    embedder = TextEmbedder(minilm_dir, device="cpu").load()
    store_path = tmp_path / "store"
    with MultimodalStore(store_path) as store:
        store.create_space("text", embedder.dim, model=embedder.spec)
        records = [Record(id=f"p{number}", modality="text", text=text) for number, text in enumerate(PASSAGES)]
        store.add(records, {"text": embedder.embed_texts(PASSAGES)})
        store.save()
        from mm_rag.retrieval import MultimodalRetriever

        expected = [r.to_dict() for r in MultimodalRetriever(store, text=embedder).retrieve(QUERIES[0])]
    statement = (
        "from mm_rag.cli import main\n"
        f"status = main(['search', {QUERIES[0]!r}, '--store', {str(store_path)!r}, '--json', '--device', 'cpu'])\n"
        "assert status == 0, status"
    )
    result = python(f"import sys, json\n{statement}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert result.returncode == 0, result.stderr
    *answer, modules = result.stdout.splitlines()
    assert json.loads("\n".join(answer)) == expected  # same records, same scores, same order
    assert "sentence_transformers" not in json.loads(modules) and "transformers" not in json.loads(modules)
    assert "whisper" not in json.loads(modules) and "faster_whisper" not in json.loads(modules)
