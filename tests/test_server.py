"""The HTTP service against a real uvicorn server on 127.0.0.1, with real models (tiny CLIP, MiniLM, Whisper)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fixtures.served import ServerThread
from fixtures.speech import SENTENCES, speak_sentences
from fixtures.tiny_clip import draw_shape

from mm_rag import InvalidInputError, MultimodalStore, TextEmbedder, WhisperTranscriber, ingest
from mm_rag.embed.loading import ModelChoice
from mm_rag.server import app_from_store, create_app
from mm_rag.store import segments

pytestmark = pytest.mark.slow

API_KEY = "s3cret-key"
MAX_UPLOAD = 1 << 20
SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross")]
PASSAGES = "The lighthouse keeper fed the seagulls every morning.\n\nQuantum computers use qubits to calculate.\n"


def png(colour: str, shape: str, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    draw_shape(colour, shape, seed=seed).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def models(tiny_clip, minilm_dir: Path, whisper_ct2_dir: Path):
    text = TextEmbedder(minilm_dir, device="cpu").load()
    transcriber = WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu", language="en").load()
    return tiny_clip, text, transcriber


@pytest.fixture(scope="module")
def served(tmp_path_factory, models) -> Iterator[tuple[str, MultimodalStore, Path]]:
    """(base URL, store, ingest root): a store holding four shapes, two passages and three spoken sentences."""
    base = tmp_path_factory.mktemp("served")
    root = base / "root"
    docs = root / "docs"
    docs.mkdir(parents=True)
    for colour, shape in SHAPES:
        (docs / f"{colour}_{shape}.png").write_bytes(png(colour, shape))
    (docs / "notes.txt").write_text(PASSAGES)
    (base / "speech").mkdir()
    shutil.copyfile(speak_sentences(SENTENCES, base / "speech" / "speech.wav").path, docs / "speech.wav")
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_text("Outside the root: never to be ingested.")
    clip, text, transcriber = models
    store = MultimodalStore(base / "store")
    report = ingest(docs, store, clip=clip, text=text, transcriber=transcriber)
    assert not report.failed and len(report.added) == 6
    app = create_app(
        store,
        clip=clip,
        text=text,
        transcriber=transcriber,
        api_key=API_KEY,
        ingest_root=root,
        max_upload_bytes=MAX_UPLOAD,
    )
    with ServerThread(app) as url:
        yield url, store, root
    store.close()


@pytest.fixture(scope="module")
def client(served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0], headers={"X-API-Key": API_KEY}, timeout=60) as session:
        yield session


def search(client: httpx.Client, query: str, **fields) -> list[dict]:
    response = client.post("/search", json={"query": query, **fields})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def first(results: list[dict], modality: str) -> dict:
    return next(result for result in results if result["modality"] == modality)


# --- service ------------------------------------------------------------------------------------------------
def test_health_is_open_and_reports_records_and_spaces(served) -> None:
    url, store, _ = served
    health = httpx.get(f"{url}/health").json()  # no key needed
    assert health["status"] == "ok" and health["records"] == store.count()
    assert set(health["spaces"]) == {"clip", "text"} and health["spaces"]["clip"]["dim"] == 64
    # open to anyone while a key guards the rest: models named, without server paths
    models = health["models"]
    assert [models[role].split("(")[0] for role in ("clip", "text", "transcriber")] == [
        "OpenCLIPEmbedder", "TextEmbedder", "WhisperTranscriber"
    ]  # fmt: skip
    assert not re.search(r"'/", json.dumps(models)), models  # no quoted absolute path
    for space in health["spaces"].values():
        assert space["model"] and not any(str(v).startswith("/") for v in space["model"].values()), space


def test_openapi_lists_the_endpoints_with_typed_bodies(served) -> None:
    schema = httpx.get(f"{served[0]}/openapi.json").json()
    paths = schema["paths"]
    assert {"/search", "/search/media", "/ingest", "/records/{record_id}", "/health", "/documents"} <= set(paths)
    assert set(paths["/records/{record_id}"]) == {"get", "delete"}
    assert set(paths["/documents/{doc_id}"]) == {"delete"}
    assert set(paths["/ingest"]["post"]["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert "multipart/form-data" in paths["/search/media"]["post"]["requestBody"]["content"]
    components = schema["components"]["schemas"]
    assert {"SearchRequest", "SearchResponse", "SearchResult", "IngestResponse", "HealthResponse"} <= set(components)
    assert {"APIKeyHeader", "HTTPBearer"} <= set(schema["components"]["securitySchemes"])


# --- search -------------------------------------------------------------------------------------------------
def test_text_search_finds_the_image_the_passage_and_the_spoken_moment(client) -> None:
    assert first(search(client, "a red circle"), "image")["source"].endswith("red_circle.png")
    assert first(search(client, "Who feeds the seagulls?"), "text")["source"].endswith("notes.txt")
    moment = first(search(client, "What is the capital of France?"), "audio")
    assert "paris" in moment["text"].lower() and moment["source"].endswith("speech.wav")
    assert 0 <= moment["start"] < moment["end"]


def test_filter_and_per_modality_counts_apply(client) -> None:
    results = search(client, "a blue square", filter={"modality": "image"}, image_k=2)
    assert [r["modality"] for r in results] == ["image", "image"]
    assert results[0]["source"].endswith("blue_square.png")
    assert search(client, "a blue square", filter={"file_name": {"$in": ["notes.txt"]}}, image_k=0)[0]["text"]


def test_search_modes_hybrid_dense_and_lexical(client) -> None:
    lexical = search(client, "qubits", mode="lexical")
    assert [r["source"].rsplit("/", 1)[-1] for r in lexical] == ["notes.txt"]
    assert lexical[0]["evidence"][0]["space"] == "lexical" and "keywords #1" in lexical[0]["explanation"]
    hybrid = search(client, "qubits")  # the default: keywords fused with the embeddings
    assert "lexical" in {e["space"] for r in hybrid for e in r["evidence"]}
    dense = search(client, "qubits", mode="dense")
    assert "lexical" not in {e["space"] for r in dense for e in r["evidence"]}
    assert client.post("/search", json={"query": "qubits", "mode": "sparse"}).status_code == 422


def test_results_show_raw_scores_and_floors_and_fusion_are_settings(client) -> None:
    hybrid = search(client, "what are the qubits?")
    assert hybrid[0]["source"].endswith("notes.txt") and hybrid[0]["scores"]["lexical"] > 0
    # the fused score, beside the raw score of each ranking that found the result
    assert "text" in hybrid[0]["scores"] and set(hybrid[0]["scores"]) == {e["space"] for e in hybrid[0]["evidence"]}
    assert search(client, "qubits", min_score={"text": 1.01, "clip": 1.01, "lexical": 1e9}) == []
    rrf = search(client, "qubits", fusion="rrf", rrf_k=10)
    assert rrf[0]["source"].endswith("notes.txt") and rrf[0]["score"] <= len(rrf[0]["scores"]) / 11
    relative = search(client, "qubits", fusion="relative")
    assert relative[0]["source"].endswith("notes.txt") and relative[0]["score"] <= len(relative[0]["scores"])
    for body in ({"fusion": "weighted"}, {"min_score": {"text": "high"}}, {"rrf_k": -1}):
        assert client.post("/search", json={"query": "x", **body}).status_code == 422
    form = client.post("/search/media", data={"query": "qubits", "min_score": "high"})
    assert form.status_code == 400 and "min_score 'high'" in form.json()["detail"]
    form = client.post("/search/media", data={"query": "qubits", "min_score": "lexical=1e9", "mode": "lexical"})
    assert form.status_code == 200 and form.json()["results"] == []


def test_search_by_uploaded_image_finds_the_same_shape(client) -> None:
    response = client.post("/search/media", files={"image": ("q.png", png("green", "triangle", seed=5))},
                           data={"image_k": "1", "text_k": "0", "audio_k": "0", "video_k": "0"})  # fmt: skip
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert result["source"].endswith("green_triangle.png") and result["evidence"][0]["query"] == "image"


def test_an_undecodable_upload_is_a_422_not_a_500(client) -> None:
    response = client.post("/search/media", files={"image": ("q.png", b"not an image at all")})
    assert response.status_code == 422 and "not an image" in response.json()["detail"]


# --- ingest and records -------------------------------------------------------------------------------------
def test_uploaded_files_are_ingested_and_found_and_bad_ones_reported(client, served) -> None:
    _, store, _ = served
    files = [
        ("files", ("purple_note.txt", b"Zebras sleep standing up in the savanna.")),
        ("files", ("../../evil name.png", png("yellow", "triangle"))),
        ("files", ("broken.png", b"\x89PNG\r\n\x1a\n broken")),
    ]
    report = client.post("/ingest", files=files).json()
    assert sorted(report["added"]) == ["evil name.png", "purple_note.txt"], report  # no path in a name
    assert report["failed"] == {"broken.png": "not an image Pillow can read"} and report["records"] >= 2
    zebra = first(search(client, "Do zebras sleep standing?"), "text")
    assert "Zebras" in zebra["text"] and Path(zebra["source"]).is_relative_to(store.path / "uploads")
    assert not list((store.path / "uploads").rglob("broken.png"))  # a failed upload is not kept
    again = client.post("/ingest", files=files[:1]).json()
    assert again["skipped"] == {"purple_note.txt": "unchanged"} and again["records"] == 0


def test_records_can_be_read_and_deleted_by_id(client, served) -> None:
    _, store, _ = served
    found = first(search(client, "quantum computers and qubits"), "text")
    record = client.get(f"/records/{found['id']}")
    assert record.status_code == 200 and record.json()["text"] == found["text"]
    before = store.count()
    assert client.delete(f"/records/{found['id']}").json() == {"deleted": 1}
    assert store.count() == before - 1 and not store.unsaved  # saved
    assert client.get(f"/records/{found['id']}").status_code == 404
    assert client.delete(f"/records/{found['id']}").status_code == 404


# --- security -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "missing", "loop"])
def test_server_side_paths_outside_the_ingest_root_are_refused(client, served, kind) -> None:
    _, store, root = served
    outside = root.parent / "outside"
    if kind == "symlink":
        link = root / "escape"
        if not link.exists():
            link.symlink_to(outside, target_is_directory=True)
    if kind == "loop" and not (root / "loop").is_symlink():
        (root / "loop").symlink_to(root / "loop")
    path = {"dotdot": "docs/../../outside", "absolute": str(outside), "symlink": "escape", "missing": "nope"}.get(
        kind, kind
    )
    before = store.count()
    response = client.post("/ingest", json={"path": path})
    expected = {"missing": (404,), "loop": (400, 404)}.get(kind, (403,))  # a loop resolves only before Python 3.13
    assert response.status_code in expected, response.text
    assert path in response.json()["detail"]
    assert store.count() == before


def test_a_link_inside_the_root_to_a_file_outside_is_not_read(client, served) -> None:
    _, store, root = served
    folder = root / "linked"
    folder.mkdir(exist_ok=True)
    if not (folder / "secret.txt").exists():
        (folder / "secret.txt").symlink_to(root.parent / "outside" / "secret.txt")
    before = store.count()
    report = client.post("/ingest", json={"path": "linked"}).json()
    assert report["refused"] == {"linked/secret.txt": "links outside the ingest root"} and report["records"] == 0
    assert store.count() == before


def test_oversized_uploads_are_refused_while_reading_and_nothing_is_kept(client, served) -> None:
    _, store, _ = served
    before, kept = store.count(), sorted((store.path / "uploads").rglob("*"))
    big = os.urandom(MAX_UPLOAD + 1000)
    declared = client.post("/ingest", files={"files": ("big.png", big)})
    assert declared.status_code == 413 and "limit" in declared.json()["detail"]

    def chunks():  # no Content-Length: the limit applies as the body streams in
        boundary = b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\n\r\n'
        yield boundary
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]
        yield b"\r\n--xyz--\r\n"

    streamed = client.post("/ingest", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert streamed.status_code == 413
    assert store.count() == before and sorted((store.path / "uploads").rglob("*")) == kept


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"query": "x", "filter": {"year": {"$regex": "2.*"}}}, 400, "unknown operator '\\$regex'"),
        ({"query": "x", "filter": {'a"b': 1}}, 400, "invalid field name"),
        ({"query": "x", "filter": {"$where": "1"}}, 400, "unknown operator '\\$where'"),
        ({"query": "x", "filter": "modality = 'image'"}, 400, "filter is not valid JSON"),
        ({"query": "x", "filter": '{"year": {"$regex": "2.*"}}'}, 400, "unknown operator '\\$regex'"),
        ({"query": "x", "text_k": -1}, 422, "greater than or equal"),
        ({"query": ""}, 422, "at least 1 character"),
        ({"query": "x", "fusion": "magic"}, 422, "rrf"),
    ],
)
def test_malformed_search_input_is_a_clear_4xx(client, served, body, status, message) -> None:
    before = served[1].count()
    response = client.post("/search", json=body)
    assert response.status_code == status
    assert re.search(message, str(response.json()["detail"])), response.text
    assert served[1].count() == before


def test_malformed_json_and_form_filters_are_400_or_422(client) -> None:
    raw = client.post("/search", content=b'{"query": "x", "filter": {', headers={"Content-Type": "application/json"})
    assert raw.status_code == 422
    form = client.post("/search/media", files={"image": ("q.png", png("red", "circle"))}, data={"filter": "{not json"})
    assert form.status_code == 400 and "not valid JSON" in form.json()["detail"]
    wrong = client.post("/ingest", content=b"path=/etc", headers={"Content-Type": "text/plain"})
    assert wrong.status_code == 415


def test_deeply_nested_filters_are_refused_not_a_stack_overflow(client) -> None:
    nested: dict = {"modality": "image"}
    for _ in range(200):
        nested = {"$not": nested}
    response = client.post("/search", json={"query": "x", "filter": nested})
    assert response.status_code == 400 and "nested more than" in response.json()["detail"]
    text = '{"$and": [' * 5000 + '{"a": 1}' + "]}" * 5000  # too deep even for the JSON parser
    form = client.post("/search/media", data={"query": "x", "filter": text})
    assert form.status_code == 400 and "not valid JSON" in form.json()["detail"]


def test_sql_looking_filter_keys_are_refused_and_nothing_changes(client, served) -> None:
    store = served[1]
    before = store.count()
    for key in ("a') OR 1=1 --", "x'; DROP TABLE records; --", "1=1"):
        for condition in ("1", {"$ne": "1"}):
            response = client.post("/search", json={"query": "a red circle", "filter": {key: condition}})
            assert response.status_code == 400 and "invalid field name" in response.json()["detail"]
    assert store.count() == before and client.get("/health").json()["records"] == before


def test_the_api_key_is_required_and_compared_exactly(served) -> None:
    url, store, _ = served
    before = store.count()
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"X-API-Key": API_KEY + "x"}):
            response = anonymous.post("/search", json={"query": "x"}, headers=headers)
            assert response.status_code == 401 and "API key" in response.json()["detail"]
            assert anonymous.post("/ingest", json={"path": "docs"}, headers=headers).status_code == 401
            assert anonymous.delete("/records/anything", headers=headers).status_code == 401
        assert (
            anonymous.post("/search", json={"query": "x"}, headers={"Authorization": f"Bearer {API_KEY}"}).status_code
            == 200
        )
    assert store.count() == before


# --- building the app ---------------------------------------------------------------------------------------
def test_an_app_needs_an_embedder_and_builds_from_a_store_directory(tmp_path: Path, models) -> None:
    with MultimodalStore() as empty, pytest.raises(InvalidInputError, match="at least one embedder"):
        create_app(empty)
    _, text, _ = models
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Owls hunt at night.")
    with MultimodalStore(tmp_path / "store") as store:
        ingest(tmp_path / "docs", store, text=text)
    app = app_from_store(tmp_path / "store", choice=ModelChoice(audio=False, device="cpu"))
    with ServerThread(app) as url:
        results = httpx.post(f"{url}/search", json={"query": "nocturnal birds"}).json()["results"]
    assert results[0]["text"] == "Owls hunt at night."


# --- load ---------------------------------------------------------------------------------------------------
def test_concurrent_searches_while_a_folder_is_ingested(served, models) -> None:
    """16 clients, 2000 searches, while a 60-file folder is ingested through the same service: no 5xx.

    This server embeds queries with the tiny CLIP only: MiniLM takes 5-60 ms per query on these busy CPUs,
    which would time the model rather than the service (it is exercised by the other tests).
    """
    _, store, root = served
    bulk = root / "bulk"
    bulk.mkdir()
    for i in range(48):
        colour, shape = SHAPES[i % 4]
        draw_shape(colour, shape, seed=100 + i).save(bulk / f"shape_{i}.png")
    for i in range(12):
        (bulk / f"note_{i}.txt").write_text(f"Note {i}: the harbour ferry leaves at {i + 6} o'clock.")
    clients, per_client = 16, 125
    queries = ["a red circle", "a blue square", "a green triangle", "a yellow cross", "the harbour ferry"]
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()
    app = create_app(store, clip=models[0], api_key=API_KEY, ingest_root=root)

    def searcher(url: str, index: int) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60) as session:
            for n in range(per_client):
                query = f"{queries[(index + n) % len(queries)]} {n}"  # distinct texts: no cache anywhere helps
                started = time.perf_counter()
                response = session.post("/search", json={"query": query, "image_k": 3, "text_k": 3})
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses.append(response.status_code)

    before = store.count()
    with ServerThread(app) as url, httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=120) as client:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients + 1) as pool:
            ingesting = pool.submit(client.post, "/ingest", json={"path": "bulk"})
            list(pool.map(lambda index: searcher(url, index), range(clients)))
            report = ingesting.result()
        wall = time.perf_counter() - started
    assert report.status_code == 200 and len(report.json()["added"]) == 60, report.text
    assert store.count() == before + 60
    server_errors = sum(status >= 500 for status in statuses)
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"\nload: {len(statuses)} searches by {clients} clients in {wall:.1f} s during a 60-file ingest;"
        f" 5xx: {server_errors}; p50 {quantiles[49] * 1000:.1f} ms, p99 {quantiles[98] * 1000:.1f} ms"
    )
    assert len(statuses) == clients * per_client and server_errors == 0 and set(statuses) == {200}
    shutil.rmtree(bulk)


def test_a_busy_or_full_store_answers_503_and_507_and_the_server_never_keeps_the_lock(tmp_path, models, monkeypatch):
    from fixtures.store_process import StoreProcess

    _, text, _ = models
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Penguins huddle together against the Antarctic wind.")
    (tmp_path / "docs" / "b.txt").write_text("The harbour pilot boards each ship at the breakwater.")
    store = MultimodalStore(tmp_path / "store")
    ingest(tmp_path / "docs", store, text=text)
    store.lock_timeout = 0.3  # this test's writers do not wait long
    doomed = store.find({"doc_id": str((tmp_path / "docs" / "a.txt").resolve())})[0].id
    with ServerThread(create_app(store, text=text)) as url, httpx.Client(base_url=url, timeout=60) as client:
        with StoreProcess(store.path) as other:
            other.call("create_space", "elsewhere", 4)  # another process holds the store's lock, unsaved
            busy = client.delete(f"/records/{doomed}")
            assert busy.status_code == 503 and busy.headers["Retry-After"] and f"process {other.pid}" in busy.json()["detail"]
            other.call("rollback")
        with monkeypatch.context() as patch:
            patch.setattr(segments, "write_array", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
            full = client.delete(f"/records/{doomed}")
        assert full.status_code == 507 and "No space left on device" in full.json()["detail"]
        assert not store.unsaved  # the failed request's change was dropped, and the write lock with it
        with StoreProcess(store.path, lock_timeout=0) as other:
            other.call("create_space", "elsewhere", 4)  # would raise StoreLockedError if the server held the lock
            other.call("save")
        assert client.get(f"/records/{doomed}").status_code == 200  # still there: the delete never committed
        assert client.delete(f"/records/{doomed}").json() == {"deleted": 1}
    store.close()
    with MultimodalStore.open(tmp_path / "store") as reopened:
        assert reopened.get([doomed]) == [] and "elsewhere" in reopened.spaces and len(reopened) == 1
