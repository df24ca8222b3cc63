"""`mm-rag mcp` in a subprocess, driven by the MCP SDK's own client over stdio and over streamable HTTP.

The store holds examples/media (images, documents, a recorded meeting, a video tour), ingested with the tiny
CLIP model, MiniLM and Whisper tiny.en. Each server is started once per module and one client session records
what every call answered; the tests read those answers.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession, McpError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, ImageContent, TextContent
from PIL import Image

import mm_rag

pytestmark = pytest.mark.slow

MM_RAG = Path(sys.executable).with_name("mm-rag")
MEDIA = Path(__file__).resolve().parents[1] / "examples" / "media"
ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # The servers run the mm_rag these tests import (a checkout named on PYTHONPATH, not only the installed one).
    **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
}
API_KEY = "mcp-s3cret"
INBOX_TEXT = "The ferry timetable for the harbour festival is printed under code ZX-4711."
TIME_RANGE = re.compile(r"\d\d:\d\d\.\d-\d\d:\d\d\.\d")
Session = Callable[[ClientSession], Awaitable[dict[str, Any]]]


@pytest.fixture(scope="module")
def models(tiny_clip_paths, minilm_dir: Path, whisper_ct2_dir: Path) -> list[str]:
    return [
        "--clip-model", str(tiny_clip_paths.config), "--clip-pretrained", str(tiny_clip_paths.checkpoint),
        "--text-model", str(minilm_dir), "--whisper-model", str(whisper_ct2_dir), "--device", "cpu",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory, models: list[str]) -> Path:
    store = tmp_path_factory.mktemp("mcp") / "store"
    result = subprocess.run(
        [str(MM_RAG), "ingest", str(MEDIA), "--store", str(store), *models],
        capture_output=True, text=True, env={**os.environ, **ENV}, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return store


def _search(query: str, **arguments: Any) -> dict[str, Any]:
    return {"query": query, **arguments}


async def _read_only_session(session: ClientSession) -> dict[str, Any]:
    """Every call the read-only tests look at, in one session (the server loads its models once)."""
    answers: dict[str, Any] = {"tools": await session.list_tools()}
    # Room for every picture found: keyframes, image files and pictures inside documents all come with theirs.
    answers["fireworks"] = await session.call_tool("search", _search("fireworks at the festival", max_images_returned=12))
    answers["images only"] = await session.call_tool("search", _search("a red circle", filter={"modality": "image"}))
    answers["filter as text"] = await session.call_tool(
        "search", _search("the museum tour", filter='{"modality": "video"}', text_k=0, image_k=0, audio_k=0)
    )
    answers["bad operator"] = await session.call_tool("search", _search("fireworks", filter={"year": {"$near": 3}}))
    answers["bad json"] = await session.call_tool("search", _search("fireworks", filter="{modality: image"))
    answers["negative k"] = await session.call_tool("search", _search("fireworks", text_k=-1))
    answers["no query"] = await session.call_tool("search", {"filter": {"modality": "text"}})
    answers["after errors"] = await session.call_tool("search", _search("plum cake", image_k=0, video_k=0))
    answers["keywords"] = await session.call_tool("search", _search("fireworks", mode="lexical"))
    answers["bad mode"] = await session.call_tool("search", _search("fireworks", mode="sparse"))
    answers["floored"] = await session.call_tool("search", _search("when do the fireworks start?", min_score=1.01))
    answers["bad floor"] = await session.call_tool("search", _search("fireworks", min_score={"text": "high"}))
    image_id = answers["images only"].structuredContent["results"][0]["id"]
    answers["image id"] = image_id
    answers["get image"] = await session.call_tool("get_record", {"id": image_id})
    answers["get unknown"] = await session.call_tool("get_record", {"id": "no-such-record"})
    answers["templates"] = await session.list_resource_templates()
    answers["resources"] = await session.list_resources()
    answers["record resource"] = await session.read_resource(f"mmrag://records/{image_id}")
    answers["store resource"] = await session.read_resource("mmrag://store")
    try:
        await session.read_resource("mmrag://records/no-such-record")
    except McpError as error:
        answers["unknown resource"] = error
    return answers


async def _ingesting_session(session: ClientSession) -> dict[str, Any]:
    answers: dict[str, Any] = {"tools": await session.list_tools()}
    answers["ingest"] = await session.call_tool("ingest", {"path": "ferry.txt"})
    answers["again"] = await session.call_tool("ingest", {"path": "."})
    answers["outside"] = await session.call_tool("ingest", {"path": "../store"})
    answers["missing"] = await session.call_tool("ingest", {"path": "nothing-here.txt"})
    answers["found"] = await session.call_tool("search", _search("ferry timetable code ZX-4711", image_k=0))
    answers["documents"] = await session.call_tool("list_documents", {})
    return answers


def _drive(connect: Callable[[], Any], run: Session) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with connect() as (read, write, *_), ClientSession(read, write) as session:  # HTTP adds a session id
            await session.initialize()
            return await run(session)

    return anyio.run(main)


@contextlib.asynccontextmanager
async def _keyed_http(url: str, key: str) -> AsyncIterator[Any]:
    """The SDK's streamable-HTTP client transport, sending `key` as a bearer token."""
    async with (
        httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120) as client,
        streamable_http_client(url, http_client=client) as streams,
    ):
        yield streams


@pytest.fixture(scope="module")
def stdio(store: Path, tmp_path_factory) -> Iterator[tuple[dict[str, Any], str]]:
    """The answers of a stdio session against ``mm-rag mcp --store S`` (models from the store), and its stderr."""
    params = StdioServerParameters(command=str(MM_RAG), args=["mcp", "--store", str(store), "--device", "cpu"], env=ENV)
    log = tmp_path_factory.mktemp("stdio") / "stderr.txt"
    with log.open("w") as errors:
        answers = _drive(lambda: stdio_client(params, errlog=errors), _read_only_session)
    yield answers, log.read_text()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen[str], seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mm-rag mcp --http exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("mm-rag mcp --http did not start listening in time")


@pytest.fixture(scope="module")
def http(store: Path, models: list[str], tmp_path_factory) -> Iterator[tuple[dict[str, Any], str]]:
    """The answers of a streamable-HTTP session against a server that may ingest inside an inbox folder and
    takes an API key (from MM_RAG_API_KEY)."""
    base = tmp_path_factory.mktemp("http")
    inbox = base / "inbox"
    inbox.mkdir()
    (inbox / "ferry.txt").write_text(INBOX_TEXT)
    shutil.copytree(store, base / "store")  # the read-only tests keep their store as it was
    port = _free_port()
    command = [str(MM_RAG), "mcp", "--store", str(base / "store"), "--http", "--port", str(port),
               "--ingest-root", str(inbox), *models]  # fmt: skip
    log = base / "stderr.txt"
    with log.open("w") as errors:
        environment = {**os.environ, **ENV, "MM_RAG_API_KEY": API_KEY}
        process = subprocess.Popen(command, stdout=errors, stderr=errors, text=True, env=environment)
        try:
            _wait_for(port, process)
            answers = _drive(lambda: _keyed_http(f"http://127.0.0.1:{port}/mcp", API_KEY), _ingesting_session)
            answers["foreign host"] = _initialize(port, f"mm-rag.example:{port}", {"X-API-Key": API_KEY})
            answers["no key"] = _initialize(port, f"127.0.0.1:{port}")
            answers["wrong key"] = _initialize(port, f"127.0.0.1:{port}", {"Authorization": "Bearer nope"})
        finally:
            process.terminate()
            process.wait(timeout=30)
    yield answers, log.read_text()


def _texts(result: CallToolResult) -> list[str]:
    return [block.text for block in result.content if isinstance(block, TextContent)]


def _images(result: CallToolResult) -> list[ImageContent]:
    return [block for block in result.content if isinstance(block, ImageContent)]


def _decodes_as_jpeg(block: ImageContent) -> bool:
    picture = Image.open(io.BytesIO(base64.b64decode(block.data, validate=True)))
    return block.mimeType == "image/jpeg" and picture.format == "JPEG" and min(picture.size) > 0


# --- stdio ---------------------------------------------------------------------------------------------------
def test_lists_search_and_get_record_and_no_ingest_without_a_root(stdio) -> None:
    answers, stderr = stdio
    tools = {tool.name: tool for tool in answers["tools"].tools}
    assert set(tools) == {"search", "get_record"}
    properties = tools["search"].inputSchema["properties"]
    assert {"query", "filter", "text_k", "image_k", "audio_k", "video_k"} <= set(properties)
    assert tools["search"].inputSchema["required"] == ["query"]
    assert "Traceback" not in stderr


def test_search_returns_cited_passages_with_time_ranges_and_pictures_with_keyframes(stdio) -> None:
    result = stdio[0]["fireworks"]
    assert not result.isError
    context = result.content[0].text
    lines = context.splitlines()
    assert lines[0].startswith("[1] ") and all(line.startswith(f"[{n}] ") for n, line in enumerate(lines, 1))
    meeting = next(line for line in lines if "planning-meeting.ogg" in line)
    assert "audio transcript" in meeting and TIME_RANGE.search(meeting) and "Fireworks" in meeting
    assert any("video frame" in line and "museum-tour.mp4" in line for line in lines)
    images = _images(result)
    assert images and all(_decodes_as_jpeg(image) for image in images)
    # Each picture follows a label naming the numbered line it illustrates, video keyframes included.
    labels = [result.content[i - 1].text for i, block in enumerate(result.content) if isinstance(block, ImageContent)]
    cited = {int(label.strip("[] picture:")) for label in labels}
    assert any("video frame" in lines[number - 1] for number in cited)
    assert any(lines[number - 1].split()[1] in ("image", "picture") for number in cited)  # a file, or in a document
    results = result.structuredContent["results"]
    # every line is cited; moments of one recording whose widened passages touch share one line and number
    citations = [r["citation"] for r in results]
    assert sorted(set(citations)) == list(range(1, len(lines) + 1)) and citations == sorted(citations)
    for number in set(citations):
        assert len({r["source"] for r in results if r["citation"] == number}) == 1
    assert {r["modality"] for r in results} == {"text", "image", "audio", "video"}


def test_a_filter_restricts_every_modality_also_written_as_json_text(stdio) -> None:
    images_only = stdio[0]["images only"]
    assert {r["modality"] for r in images_only.structuredContent["results"]} == {"image"}
    assert len(_images(images_only)) == min(4, len(images_only.structuredContent["results"]))
    videos = stdio[0]["filter as text"]
    assert not videos.isError and {r["modality"] for r in videos.structuredContent["results"]} == {"video"}


def test_bad_filters_and_arguments_are_tool_errors_and_the_server_goes_on(stdio) -> None:
    answers = stdio[0]
    for name, expected in [
        ("bad operator", "unknown operator '$near'"),
        ("bad json", "filter is not valid JSON"),
        ("negative k", "text_k"),
        ("no query", "query"),
    ]:
        result = answers[name]
        assert result.isError, name
        assert expected in _texts(result)[0], (name, _texts(result))
        assert "pydantic.dev" not in _texts(result)[0] and "Error executing tool" not in _texts(result)[0]
    after = answers["after errors"]
    assert not after.isError and "recipes.txt" in after.content[0].text


def test_get_record_gives_the_record_and_its_picture(stdio) -> None:
    answers = stdio[0]
    record = json.loads(answers["get image"].content[0].text)
    assert record["id"] == answers["image id"] and record["modality"] == "image"
    # An image file, or a picture inside a document (the slide deck's site map): either comes with its picture.
    assert record["uri"].endswith((".jpg", ".png", ".pptx")) and record["metadata"]["width"] > 0
    assert answers["get image"].structuredContent == record
    assert [_decodes_as_jpeg(image) for image in _images(answers["get image"])] == [True]
    unknown = answers["get unknown"]
    assert unknown.isError and "no record with id 'no-such-record'" in _texts(unknown)[0]


def test_records_and_the_store_are_resources(stdio) -> None:
    answers = stdio[0]
    assert [t.uriTemplate for t in answers["templates"].resourceTemplates] == ["mmrag://records/{record_id}"]
    assert [str(r.uri) for r in answers["resources"].resources] == ["mmrag://store"]
    (content,) = answers["record resource"].contents
    assert content.mimeType == "application/json"
    assert json.loads(content.text) == json.loads(answers["get image"].content[0].text)
    store = json.loads(answers["store resource"].contents[0].text)
    assert store["records"] == 21 and set(store["spaces"]) == {"clip", "text"}
    assert store["version"] == mm_rag.__version__  # the handshake names the SDK's version; this names ours
    assert all(space["model"] for space in store["spaces"].values())  # named, as `mm-rag info` names it
    assert str(answers["unknown resource"]) == "no record with id 'no-such-record' in the store"


# --- streamable HTTP, with an ingest root ------------------------------------------------------------------
def test_http_ingest_inside_the_root_then_search_finds_it(http) -> None:
    answers, stderr = http
    tools = {tool.name for tool in answers["tools"].tools}
    assert tools == {"search", "get_record", "ingest", "list_documents", "delete_document"}
    report = answers["ingest"].structuredContent
    assert not answers["ingest"].isError and report["added"] == ["ferry.txt"] and report["records"] >= 1
    assert json.loads(answers["ingest"].content[0].text) == report
    again = answers["again"].structuredContent
    assert again["added"] == [] and list(again["skipped"]) == ["ferry.txt"]  # unchanged: skipped by hash
    found = answers["found"]
    assert not found.isError and "ferry.txt" in found.content[0].text.splitlines()[0]
    documents = answers["documents"].structuredContent["documents"]
    assert any(d["source"].endswith("ferry.txt") and d["records"] >= 1 for d in documents)
    assert "Traceback" not in stderr


def test_http_ingest_outside_the_root_or_of_nothing_is_a_tool_error(http) -> None:
    answers = http[0]
    assert answers["outside"].isError and "outside the ingest root" in _texts(answers["outside"])[0]
    assert answers["missing"].isError and "does not exist" in _texts(answers["missing"])[0]


def test_http_on_loopback_refuses_requests_for_other_host_names(http) -> None:
    assert http[0]["foreign host"] == 421  # the SDK's DNS-rebinding protection: a web page cannot reach it


def test_http_with_a_key_refuses_requests_without_it(http) -> None:
    answers, stderr = http
    assert answers["no key"] == answers["wrong key"] == 401
    assert "(API key required)" in stderr and "no authentication" not in stderr


def _initialize(port: int, host_header: str, headers: dict[str, str] | None = None) -> int:
    """The HTTP status of an initialize request sent to 127.0.0.1:`port` as if addressed to `host_header`."""
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}}  # fmt: skip
    sent = {"Host": host_header, "Accept": "application/json, text/event-stream", **(headers or {})}
    return httpx.post(f"http://127.0.0.1:{port}/mcp", json=request, headers=sent, timeout=30).status_code


def test_http_on_every_address_says_it_has_no_authentication_and_serves_any_host_name(store: Path, tmp_path) -> None:
    port = _free_port()
    command = [str(MM_RAG), "mcp", "--store", str(store), "--http", "--host", "0.0.0.0", "--port", str(port),
               "--device", "cpu"]  # fmt: skip
    log = tmp_path / "stderr.txt"
    with log.open("w") as errors:
        process = subprocess.Popen(command, stdout=errors, stderr=errors, text=True, env={**os.environ, **ENV})
        try:
            _wait_for(port, process)
            # The SDK's DNS-rebinding checks only allow loopback names; off loopback they must be off.
            status = _initialize(port, f"mm-rag.example:{port}")
        finally:
            process.terminate()
            process.wait(timeout=30)
    stderr = log.read_text()
    assert status == 200, stderr
    assert "note: the MCP endpoint has no authentication: anyone reaching 0.0.0.0" in stderr
    assert f"serving MCP (streamable HTTP) at http://0.0.0.0:{port}/mcp" in stderr


# --- the command's own checks ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--store", "{missing}"], "error: no mm-rag store at"),
        (["--store", "{missing}", "--create"], "error: --create needs --ingest-root"),
    ],
)
def test_mistakes_end_with_one_error_line_before_any_model_loads(tmp_path: Path, arguments, message) -> None:
    command = [str(MM_RAG), "mcp", *(a.format(missing=tmp_path / "nothing") for a in arguments)]
    environment = {**os.environ, **ENV}
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=environment, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(message) and "Traceback" not in result.stderr
    assert not (tmp_path / "nothing").exists()


def test_search_modes_reach_the_keyword_index(stdio) -> None:
    keywords = stdio[0]["keywords"]
    assert not keywords.isError
    results = keywords.structuredContent["results"]
    assert results and all("fireworks" in (r["text"] or "").lower() for r in results)
    assert stdio[0]["bad mode"].isError
    assert all(set(r["scores"]) <= {"lexical", "text", "clip"} and r["scores"] for r in results)


def test_a_relevance_floor_drops_weak_hits(stdio) -> None:
    floored = stdio[0]["floored"]  # no cosine reaches 1.01: what is left was found by its words alone
    assert not floored.isError
    assert all(set(r["scores"]) == {"lexical"} for r in floored.structuredContent["results"])
    assert stdio[0]["bad floor"].isError
