"""Distributed ingestion on a local Ray instance: the shards hold what `mm_rag.ingest` stores, runs resume.

One Ray instance (2 CPUs, no dashboard, its own temp folder) serves the module; actors reserve half a CPU so
that Ray Data's own tasks always have one. A killed run is a driver subprocess joined to that instance.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from mm_rag import MultimodalStore, TextEmbedder, WhisperTranscriber, ingest
from mm_rag.distributed import ShardReport, ingest_to_shards
from mm_rag.distributed import run as distributed_run
from mm_rag.distributed.models import ModelSpec, embedder_spec, transcriber_spec
from mm_rag.distributed.plan import PLAN, extend_plan, load_plan
from mm_rag.distributed.sources import Source, list_sources
from mm_rag.distributed.worker import ShardBuilder
from mm_rag.errors import InvalidInputError
from mm_rag.ingestion.extract import ExtractOptions
from mm_rag.shards import SUCCESS, ShardSet, SpaceInfo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SHAPES = [("red", "circle"), ("blue", "cross"), ("green", "square"), ("yellow", "triangle")]
BAD = {"b-broken.jpg": b"\xff\xd8\xff\xe0 not really a jpeg", "b-empty.txt": b""}


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance for this module; its address lets a subprocess join it as a second driver."""
    import ray

    folder = tempfile.mkdtemp(prefix="mmrag-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=folder, log_to_driver=False, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, spoken_sentences) -> Path:
    """Pictures, documents, bad files and a spoken WAV (named last, so that it is the slowest final shard)."""
    from fixtures.tiny_clip import draw_shape

    root = tmp_path_factory.mktemp("corpus")
    for number, (colour, shape) in enumerate(SHAPES):
        draw_shape(colour, shape, seed=number).save(root / f"a-{colour}-{shape}.png")
    (root / "c-fox.txt").write_text("The quick brown fox jumps over the lazy dog. " * 3)
    (root / "c-notes.md").write_text("# Garden\n\nWater the plants tomorrow morning.\n\n## Trip\n\nParis in May.\n")
    for name, data in BAD.items():
        (root / name).write_bytes(data)
    shutil.copyfile(spoken_sentences.path, root / "z-speech.wav")
    return root


@pytest.fixture(scope="module")
def models(tiny_clip, minilm_dir, whisper_ct2_dir):
    text = TextEmbedder(minilm_dir, device="cpu")
    transcriber = WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu", language="en")
    return {"clip": tiny_clip, "text": text, "transcriber": transcriber}


@pytest.fixture(scope="module")
def reference(corpus, models):
    """The single-process result: `mm_rag.ingest` into a temporary store."""
    store = MultimodalStore()
    report = ingest(corpus, store, **models)
    yield store, report
    store.close()


@pytest.fixture(scope="module")
def distributed(ray_address, corpus, models, tmp_path_factory) -> tuple[Path, ShardReport]:
    shards = tmp_path_factory.mktemp("shards")
    report = ingest_to_shards(corpus, shards, **models, files_per_shard=3, actors=1)
    return shards, report


def assert_same_as_store(shards_dir: Path, store: MultimodalStore) -> None:
    """Every shard record equals the stored one, no record is missing or repeated, vectors agree to 1e-5."""
    shards = list(ShardSet(shards_dir))
    records = [record for shard in shards for record in shard.records]
    assert len({r.id for r in records}) == len(records) == store.count() > 0
    assert store.get([r.id for r in records]) == records
    for space in store.spaces:
        mine = {
            shard.records[row].id: vector
            for shard in shards
            for row, vector in zip(*shard.vectors.get(space, ((), ())))
        }
        stored = store.vectors(space, [r.id for r in records])
        assert mine.keys() == stored.keys() and mine, space
        for record_id, vector in mine.items():
            np.testing.assert_allclose(vector, stored[record_id], atol=1e-5, err_msg=f"{space}/{record_id}")


def shard_stats(shards_dir: Path, names: list[str]) -> dict[str, tuple[int, int, int]]:
    """Inode and mtime of each shard folder, and of its _SUCCESS marker: any rewrite changes them."""
    stats = {}
    for name in names:
        folder, marker = (shards_dir / name).stat(), (shards_dir / name / SUCCESS).stat()
        stats[name] = (folder.st_ino, folder.st_mtime_ns, marker.st_mtime_ns)
    return stats


# --- the result -------------------------------------------------------------------------------------------
def test_shards_hold_exactly_what_ingest_stores(distributed, reference) -> None:
    shards_dir, report = distributed
    store, expected = reference
    assert_same_as_store(shards_dir, store)
    assert report.records == store.count()
    assert report.written == sorted(ShardSet(shards_dir).finished()) and not report.skipped
    manifest = ShardSet(shards_dir).manifest()["spaces"]
    assert {name: info["model"] for name, info in manifest.items()} == {n: c.model for n, c in store.spaces.items()}
    assert report.skipped_files == expected.skipped


def test_bad_files_are_reported_in_failed_and_do_not_stop_the_run(distributed, reference, corpus) -> None:
    shards_dir, report = distributed
    _, expected = reference
    recorded = {path: reason for shard in ShardSet(shards_dir) for path, reason in shard.failed.items()}
    assert recorded == report.failed == expected.failed
    assert set(recorded) == {str(corpus / name) for name in BAD}
    assert "empty" in recorded[str(corpus / "b-empty.txt")]
    assert any(r.modality == "audio" for shard in ShardSet(shards_dir) for r in shard.records)  # after the bad ones


def test_a_rerun_with_nothing_new_does_no_work(distributed, corpus, models, monkeypatch) -> None:
    shards_dir, first = distributed
    before = shard_stats(shards_dir, first.written)
    plan = (shards_dir / PLAN).read_bytes()

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was used although every shard is finished")

    monkeypatch.setattr(distributed_run, "_run_on_ray", no_ray)
    again = ingest_to_shards(corpus, shards_dir, **models, files_per_shard=1)  # a saved plan keeps its shards
    assert again.written == [] and again.skipped == first.written and again.records == 0 and not again.redone
    assert shard_stats(shards_dir, first.written) == before
    assert (shards_dir / PLAN).read_bytes() == plan


# --- resumption ---------------------------------------------------------------------------------------------
KILLED_RUN = """
import json, sys
from mm_rag.distributed import ingest_to_shards
settings = json.loads(sys.argv[1])
ingest_to_shards(settings.pop("paths"), settings.pop("shards"), **settings)
"""


def test_a_killed_run_resumes_where_it_stopped(ray_address, corpus, models, reference, tmp_path) -> None:
    import ray

    shards_dir = tmp_path / "shards"
    settings = {
        "paths": [str(corpus)],
        "shards": str(shards_dir),
        "clip": embedder_spec(models["clip"], "clip").spec,
        "text": {**embedder_spec(models["text"], "text").spec, "space": "text"},
        "transcriber": transcriber_spec(models["transcriber"]),
        "files_per_shard": 1,
        "actors": 1,
        "address": ray_address,
    }
    log = tmp_path / "driver.log"
    with open(log, "wb") as output:
        driver = subprocess.Popen(
            [sys.executable, "-c", KILLED_RUN, json.dumps(settings)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while not ShardSet(shards_dir).finished():
            if driver.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the driver ended or stalled before finishing a shard:\n{log.read_text()[-3000:]}")
            time.sleep(0.02)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    deadline = time.monotonic() + 60  # the dead driver's actor goes with it; wait until it has let go of its CPU
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    total = len(load_plan(shards_dir))
    finished = ShardSet(shards_dir).finished()
    assert 1 <= len(finished) < total == len(list_sources([corpus])[0])
    before = shard_stats(shards_dir, finished)

    resumed = ingest_to_shards(corpus, shards_dir, **models, actors=1)
    assert resumed.skipped == finished
    assert sorted(resumed.skipped + resumed.written) == ShardSet(shards_dir).finished() and len(
        resumed.written
    ) == total - len(finished)
    assert shard_stats(shards_dir, finished) == before
    assert not [p for p in shards_dir.iterdir() if p.name.startswith(".")]  # the killed run's debris is gone
    assert_same_as_store(shards_dir, reference[0])


def mm_rag_ingest(*args: object) -> dict:
    """`mm-rag ingest … --json` in a subprocess, offline; its JSON output."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "mm_rag.cli", "ingest", *map(str, args), "--json"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_cli_builds_the_store_then_new_and_changed_files_update_it(ray_address, minilm_dir, tmp_path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    for number in range(4):
        (folder / f"{number}.txt").write_text(f"note number {number} about the garden")
    store, shards_dir = tmp_path / "store", tmp_path / "store" / "shards"  # the default --shards
    models = ("--text-model", minilm_dir, "--no-clip", "--no-audio", "--device", "cpu")
    first = mm_rag_ingest(folder, "--store", store, *models, "--ray", ray_address)
    assert first["shards"]["written"] == ["shard-000000"] and first["store"].startswith("built")
    with MultimodalStore.open(store) as built:
        assert built.count() == 4
    kept = ShardSet(shards_dir).read("shard-000000").records

    (folder / "3.txt").write_text("a changed note about the kitchen")
    (folder / "9.txt").write_text("a new note about the roof")
    again = mm_rag_ingest(folder, "--store", store, *models, "--ray", ray_address)
    assert again["shards"]["redone"] == ["shard-000000"] and len(again["shards"]["written"]) == 2
    assert again["store"] == f"updated {store} from 2 shards"
    with MultimodalStore.open(store) as updated:
        texts = {record.doc_id: record.text for record in updated.find()}
        assert updated.count() == 5 and texts[str(folder / "9.txt")] == "a new note about the roof"
        assert texts[str(folder / "3.txt")] == "a changed note about the kitchen"
        hit = updated.search("text", TextEmbedder(minilm_dir, device="cpu").embed_query("kitchen"), k=1)[0]
        assert hit.record.doc_id == str(folder / "3.txt")
    assert [r for r in ShardSet(shards_dir).read("shard-000000").records if r.doc_id != str(folder / "3.txt")] == [
        r for r in kept if r.doc_id != str(folder / "3.txt")
    ]


# --- pieces, without Ray ------------------------------------------------------------------------------------
def test_the_plan_keeps_its_shards_and_appends_new_files() -> None:
    files = [Source(f"/d/{name}", 1, 1) for name in "abcde"]
    plan, changed = extend_plan([], files, 2)
    assert [(s.name, [f.uri for f in s.files]) for s in plan] == [
        ("shard-000000", ["/d/a", "/d/b"]),
        ("shard-000001", ["/d/c", "/d/d"]),
        ("shard-000002", ["/d/e"]),
    ]
    grown = [Source("/d/0", 1, 1), *files[:3], Source("/d/c", 2, 1), files[4]]  # new first file, c changed, d gone
    again, changed = extend_plan(plan, grown, 5)
    assert [s.name for s in again] == ["shard-000000", "shard-000001", "shard-000002", "shard-000003"]
    assert again[1].files == (Source("/d/c", 2, 1), Source("/d/d", 1, 1)) and changed == ["shard-000001"]
    assert again[3].files == (Source("/d/0", 1, 1),)


def test_file_uris_list_like_paths_and_objects_are_named_by_their_uri(corpus, models, tmp_path) -> None:
    local, _ = list_sources([corpus])
    assert list_sources([corpus.as_uri()])[0] == local
    red = [s for s in local if s.uri.endswith("a-red-circle.png")]
    assert list_sources([f"{corpus.as_uri()}/a-red-circle.png"])[0] == red
    from mm_rag.distributed.sources import _remote_sources

    listed, problem = _remote_sources(corpus.as_uri(), ["*.png"], None)  # the object-store path, on file://
    listed.sort(key=lambda source: source.uri)
    assert problem is None and listed == [Source(f"file://{s.uri}", s.size, s.mtime_ns) for s in local[:4]]
    assert all(s.uri.startswith("file:///") for s in listed)
    builder = ShardBuilder(str(tmp_path), embedder_spec(models["clip"], "clip"), None, None, ExtractOptions())
    outcome = builder.build("one", listed[:1])
    record = ShardSet(tmp_path).read("one").records[0]
    assert outcome.records == 1 and record.uri == record.doc_id == listed[0].uri
    assert record.metadata["file_name"] == "a-blue-cross.png"
    assert _remote_sources((tmp_path / "nothing").as_uri(), None, None) == ([], "no such object or prefix")


def test_mistakes_are_refused_before_any_work(tmp_path, models) -> None:
    with pytest.raises(InvalidInputError, match="at least one embedder"):
        ingest_to_shards(tmp_path, tmp_path / "s", transcriber=models["transcriber"])
    with pytest.raises(InvalidInputError, match="files_per_shard"):
        ingest_to_shards(tmp_path, tmp_path / "s", text=models["text"], files_per_shard=0)
    ShardSet(tmp_path / "s").declare_spaces(
        {"text": SpaceInfo(384, "cosine", {"kind": "sentence_transformers", "model": "other"})}
    )
    with pytest.raises(InvalidInputError, match="another shard directory"):
        ingest_to_shards(tmp_path, tmp_path / "s", text=models["text"])
    assert isinstance(embedder_spec({"kind": "open_clip", "model": "m", "space": "pics"}, "clip"), ModelSpec)
    with pytest.raises(InvalidInputError, match="kind 'whisper'"):
        transcriber_spec({"model": "tiny.en"})
    from mm_rag.embed.whisper import WhisperTranscriber

    ungated = transcriber_spec(WhisperTranscriber("tiny.en", vad=False))  # the workers' copy keeps every setting
    assert ungated["vad"] is False  # build_transcriber hands every key but kind and model to the constructor


def test_the_package_surface_and_lazy_imports() -> None:
    import mm_rag.distributed

    assert sorted(mm_rag.distributed.__all__) == ["ShardReport", "ingest_to_shards"]
    code = "import sys, mm_rag.distributed; print(sorted({'ray', 'pyarrow'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
