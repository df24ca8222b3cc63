"""The store as a Model Context Protocol (MCP) server, for agents: `mm-rag mcp` runs it over stdio or HTTP.

Tools:

- ``search``: a text query, an optional filter (the store's filter language, `mm_rag.filters`) and counts per
  modality → the LLM context of `mm_rag.context.build_context` (numbered passages citing their source and time
  range) as text content, then each picture found (images, video keyframes) as image content, base64 JPEG.
- ``get_record``: one record by id, as JSON, with its picture when it has one.
- ``ingest`` (only with an ingest root): a file or folder inside that root, through the HTTP service's own
  confinement and ingestion (`mm_rag.server.service.Service.ingest_path`).

Resources: ``mmrag://store`` (counts, spaces, models) and the template ``mmrag://records/{record_id}``.

A mistake of the caller (a malformed filter, an unknown record, a path outside the root, bad arguments) comes
back as a tool error (``isError``), which the model reads and can correct; the server goes on.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, Literal, ParamSpec, TypeVar
from urllib.parse import unquote

from mm_rag._optional import require

require("mcp", "the MCP server")  # one clear error naming the extra to install

import anyio
import anyio.to_thread
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ResourceError, ToolError
from mcp.types import CallToolResult, ContentBlock, ImageContent, TextContent, ToolAnnotations
from pydantic import Field

from mm_rag import __version__
from mm_rag.context import DEFAULT_MAX_IMAGES, DEFAULT_MAX_TOKENS, Context, build_context
from mm_rag.errors import MMRagError
from mm_rag.filters import parse_filter
from mm_rag.ingestion.extract import ExtractOptions
from mm_rag.records import Modality, Record
from mm_rag.retrieval import MIN_SCORE_HELP, Retrieved
from mm_rag.server.schemas import MAX_K, MAX_QUERY_CHARS, IngestPathRequest, MinScore
from mm_rag.server.security import PathRefused
from mm_rag.server.service import Service

if TYPE_CHECKING:
    from mm_rag.store import MultimodalStore

SERVER_NAME = "mm-rag"
RECORD_URI = "mmrag://records/{record_id}"
STORE_URI = "mmrag://store"
MAX_IMAGES_PER_CALL = 16
INSTRUCTIONS = (
    "A multimodal knowledge base: text passages, images, audio and video transcripts (with time ranges) and video"
    " keyframes. Call `search` with a natural-language query; cite passages by their [number]. Pictures come back"
    " as images, each labelled with the number it illustrates. `get_record` fetches one record by id."
)
INGEST_DESCRIPTION = (
    "Add a file or folder to the knowledge base. Only paths inside the server's ingest root are allowed (give them"
    " relative to it); unchanged files are skipped. Returns what happened to each file: added, updated, skipped,"
    " failed (with the reason) or refused (a link out of the root)."
)
FILTER_HELP = (
    'Optional metadata filter (JSON object), e.g. {"modality": "image"}, {"year": {"$gte": 2020}},'
    ' {"$or": [{"tags": {"$contains": "cat"}}, {"lang": "en"}]}. Keys are record fields (id, modality, text,'
    " uri, doc_id) or metadata keys; operators: $eq $ne $gt $gte $lt $lte $in $nin $exists $contains"
    " $icontains $and $or $not."
)


P = ParamSpec("P")
R = TypeVar("R")


def _count(what: str, default: int) -> Any:
    return Field(default=None, ge=0, le=MAX_K, description=f"How many {what} to keep (default {default}; 0: none).")


def create_mcp_server(
    store: MultimodalStore,
    *,
    clip: Any | None = None,
    text: Any | None = None,
    transcriber: Any | None = None,
    ocr: Any | None = None,
    ingest_root: str | os.PathLike[str] | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_images: int = DEFAULT_MAX_IMAGES,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: ExtractOptions | None = None,
) -> FastMCP:
    """An MCP server searching (and, with `ingest_root`, filling) `store` with the given models.

    Args:
        store: The store; it stays the caller's to close.
        clip, text, transcriber: The models (at least one embedder), as for `MultimodalRetriever`; the
            transcriber is only needed to ingest audio and video.
        ocr: The OCR engine reading text inside pictures while ingesting, or None.
        ingest_root: Folder inside which the ``ingest`` tool may read files; None leaves the tool out.
        max_tokens, max_images: Defaults of the ``search`` tool's context budget.
        options: How the ``ingest`` tool cuts what it reads (transcript windows…); `ExtractOptions()` by default.
        host, port: Where ``server.run("streamable-http")`` listens. The SDK checks the Host and Origin headers
            (DNS-rebinding protection) only when `host` is a loopback address.

    Raises:
        InvalidInputError: no embedder given.
    """
    # The HTTP service's Service already serialises each model across worker threads, confines ingested paths
    # and saves or rolls back each ingestion: one code path for both.
    service = Service(
        store, clip=clip, text=text, transcriber=transcriber, ocr=ocr, ingest_root=ingest_root, options=options
    )
    # Host and port are given here, not to `run`: the SDK chooses its DNS-rebinding checks from the host as it
    # builds the server. At INFO it would log every request to stderr, burying the notes that matter there.
    server = FastMCP(SERVER_NAME, instructions=INSTRUCTIONS, host=host, port=port, log_level="WARNING")
    # FastMCP 1.x takes no version and would announce the SDK's own in the handshake.
    server._mcp_server.version = __version__
    logging.getLogger("mcp.server.streamable_http").addFilter(_SESSION_END_FILTER)
    _add_search(server, service, max_tokens, max_images)
    _add_records(server, service)
    if service.ingest_root is not None:
        _add_ingest(server, service)
    return server


def _add_search(server: FastMCP, service: Service, max_tokens: int, max_images: int) -> None:
    @server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
    @_on_a_thread
    def search(
        query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for.")],
        filter: Annotated[dict[str, Any] | str | None, Field(description=FILTER_HELP)] = None,
        text_k: Annotated[int | None, _count("text passages", 5)] = None,
        image_k: Annotated[int | None, _count("images", 5)] = None,
        audio_k: Annotated[int | None, _count("audio transcript moments", 3)] = None,
        video_k: Annotated[int | None, _count("video moments and keyframes", 3)] = None,
        mode: Annotated[
            Literal["hybrid", "dense", "lexical"],
            Field(
                description="hybrid: meaning and exact words (names, codes, numbers); dense: meaning; lexical: words."
            ),
        ] = "hybrid",
        max_images_returned: Annotated[
            int, Field(ge=0, le=MAX_IMAGES_PER_CALL, description="Most pictures attached as images.")
        ] = max_images,
        min_score: Annotated[MinScore, Field(description=MIN_SCORE_HELP)] = None,
    ) -> CallToolResult:
        """Search the knowledge base (text, images, audio and video) with a natural-language query.

        Returns numbered passages, best first, each citing its source and, for audio and video, its time range
        (mm:ss); then the pictures found (images, video keyframes), each labelled with its [number].
        """
        counts: dict[Modality, int | None] = {"text": text_k, "image": image_k, "audio": audio_k, "video": video_k}
        try:
            conditions = parse_filter(filter, "filter") if isinstance(filter, str) else filter
            found = service.search(query, filter=conditions, counts=counts, mode=mode, min_score=min_score)
            # Transcript hits widened to the talk around them, from the store searched.
            context = build_context(found, max_tokens=max_tokens, max_images=max_images_returned, store=service.store)
        except MMRagError as error:
            raise ToolError(str(error)) from error
        return CallToolResult(content=context_content(context), structuredContent=_structured(found, context))


def _add_records(server: FastMCP, service: Service) -> None:
    @server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
    @_on_a_thread
    def get_record(
        id: Annotated[str, Field(min_length=1, description="The record id, as a search result gives it.")],
    ) -> CallToolResult:
        """Fetch one record by id: its modality, text, source, time range and metadata, and its picture if any."""
        record = service.get(id)
        if record is None:
            raise ToolError(f"no record with id {id!r} in the store")
        content: list[ContentBlock] = [_text(json.dumps(record_json(record), ensure_ascii=False))]
        if record.modality in ("image", "video"):
            # The context builder already reads and downscales pictures, keyframes included: one path for both.
            context = build_context([Retrieved(record, 0.0, ())], max_images=1)
            content += [_image(image.data, image.mime_type) for image in context.images]
        return CallToolResult(content=content, structuredContent=record_json(record))

    @server.resource(
        RECORD_URI,
        name="record",
        description="One stored record (JSON): id, modality, text, uri, doc_id, metadata. Percent-encode the id"
        " (a '/' as %2F).",
        mime_type="application/json",
    )
    @_on_a_thread
    def record_resource(record_id: str) -> str:
        # The SDK matches a template parameter as one path segment and passes it on still encoded, while ids
        # may hold any character: a "/" can only arrive as %2F.
        record_id = unquote(record_id)
        record = service.get(record_id)
        if record is None:
            raise ResourceError(f"no record with id {record_id!r} in the store")
        return json.dumps(record_json(record), ensure_ascii=False)

    @server.resource(
        STORE_URI, name="store", description="The store: record count, spaces, models.", mime_type="application/json"
    )
    @_on_a_thread
    def store_resource() -> str:
        return service.health(detailed=False).model_dump_json()


def _add_ingest(server: FastMCP, service: Service) -> None:
    @server.tool(
        description=INGEST_DESCRIPTION,
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False),
    )
    @_on_a_thread
    def ingest(
        path: Annotated[
            str, Field(min_length=1, max_length=4096, description="File or folder, relative to the ingest root.")
        ],
        include: Annotated[list[str] | None, Field(description="Only files matching these globs.")] = None,
        exclude: Annotated[list[str] | None, Field(description="Leave out files matching these globs.")] = None,
    ) -> CallToolResult:
        try:
            report = service.ingest_path(IngestPathRequest(path=path, include=include, exclude=exclude))
        except PathRefused as refused:
            raise ToolError(str(refused.detail)) from refused
        except MMRagError as error:  # the store is locked by another writer, read-only, the disk is full…
            raise ToolError(str(error)) from error
        summary = report.model_dump()
        text = json.dumps(summary, ensure_ascii=False)
        return CallToolResult(content=[_text(text)], structuredContent=summary)


def _on_a_thread(function: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`function` as a coroutine that runs it on a worker thread, keeping its signature and docstring.

    FastMCP 1.x calls a plain function on its event loop, where one search (or an ingestion of minutes) would
    stall every other request: pings, cancellations and, over HTTP, the other sessions.
    """

    @functools.wraps(function)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))

    return call


class _SessionEndFilter(logging.Filter):
    """Drops the traceback mcp 1.x logs each time an HTTP client ends its session (a DELETE) as it should.

    Ending the session closes the stream the SDK's own listener for server-initiated messages is reading, and
    it reports that as "Error in standalone SSE writer" with a ClosedResourceError: noise, not a fault.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, anyio.ClosedResourceError) and "standalone SSE writer" in record.getMessage())


_SESSION_END_FILTER = _SessionEndFilter()


def context_content(context: Context) -> list[ContentBlock]:
    """MCP content for a `Context`: its text, then each picture preceded by the citation number it illustrates.

    The label matters because MCP content is a flat list: without it a model sees pictures it cannot tie to
    the numbered lines that cite them.
    """
    content: list[ContentBlock] = [_text(context.text or "no results")]
    for image in context.images:
        content.append(_text(f"[{image.citation}] picture:"))
        content.append(_image(image.data, image.mime_type))
    return content


def _text(text: str) -> TextContent:
    return TextContent(type="text", text=text)


def _image(data: str, mime_type: str) -> ImageContent:
    return ImageContent(type="image", data=data, mimeType=mime_type)


def record_json(record: Record) -> dict[str, Any]:
    """A record as a JSON-ready dict."""
    return asdict(record)


def _structured(found: Sequence[Retrieved], context: Context) -> dict[str, Any]:
    """The results for programs (not the model): each result's fields and its citation number, if cited."""
    cited = {citation.id: citation.number for citation in context.citations}
    return {"results": [{**result.to_dict(), "citation": cited.get(result.record.id)} for result in found]}
