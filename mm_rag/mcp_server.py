"""The store as a Model Context Protocol (MCP) server, for agents: `mm-rag mcp` runs it over stdio or HTTP.

Tools:

- ``search``: a text query, an optional filter (the store's filter language, `mm_rag.filters`) and counts per
  modality → the LLM context of `mm_rag.context.build_context` (numbered passages citing their source and time
  range) as text content, then each picture found (images, video keyframes) as image content, base64 JPEG.
- ``get_record``: one record by id, as JSON, with its picture when it has one.
- ``ingest`` (only with an ingest root): a file or folder inside that root, through the HTTP service's own
  confinement and ingestion (`mm_rag.server.service.Service.ingest_path`).
- ``list_documents`` and ``delete_document`` (only with an ingest root, beside ``ingest``): the stored
  documents, and deleting one with its records, as ``GET /documents`` and ``DELETE /documents/{id}`` do.

Resources: ``mmrag://store`` (mm-rag's version, counts, spaces, models; FastMCP 1.x takes no server version, so
the handshake names the SDK's) and the template ``mmrag://records/{record_id}``.

A mistake of the caller (a malformed filter, an unknown record, a path outside the root, bad arguments) comes
back as a tool error (``isError``), which the model reads and can correct; the server goes on. Its text is the
reason alone: not the SDK's "Error executing tool …" wrapping, pydantic's documentation links or a long input
repeated back.

Over HTTP, `guarded_http_app` puts the server behind an API key.
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
from mcp.shared.exceptions import McpError
from mcp.types import (
    INVALID_PARAMS,
    CallToolResult,
    ContentBlock,
    ErrorData,
    ImageContent,
    TextContent,
    ToolAnnotations,
)
from pydantic import Field, ValidationError

from mm_rag.context import DEFAULT_MAX_IMAGES, DEFAULT_MAX_TOKENS, Context, build_context
from mm_rag.errors import MMRagError
from mm_rag.filters import parse_filter
from mm_rag.ingestion.extract import ExtractOptions
from mm_rag.records import Modality, Record
from mm_rag.retrieval import MIN_SCORE_HELP, Retrieved
from mm_rag.server.schemas import MAX_K, MAX_QUERY_CHARS, IngestPathRequest, MinScore
from mm_rag.server.security import KeyRequired, PathRefused, shorten
from mm_rag.server.service import Service

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from mm_rag.store import MultimodalStore

SERVER_NAME = "mm-rag"
RECORD_URI = "mmrag://records/{record_id}"
STORE_URI = "mmrag://store"
MAX_IMAGES_PER_CALL = 16
RESOURCE_NOT_FOUND = -32002  # the MCP specification's error code for an unknown resource
MAX_DOCUMENTS_LISTED = 1000
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
DELETE_DOCUMENT_DESCRIPTION = (
    "Delete one document from the knowledge base: every record made of that file. Give its id as"
    " `list_documents` lists it, or a search result's doc_id. The file itself is left where it is, unless it"
    " was uploaded to the server."
)
FILTER_HELP = (
    'Optional metadata filter (JSON object), e.g. {"modality": "image"}, {"year": {"$gte": 2020}},'
    ' {"$or": [{"tags": {"$contains": "cat"}}, {"lang": "en"}]}. Keys are record fields (id, modality, text,'
    " uri, doc_id) or metadata keys; operators: $eq $ne $gt $gte $lt $lte $in $nin $exists $contains"
    " $icontains $and $or $not."
)


P = ParamSpec("P")
R = TypeVar("R")


class _NoSuchRecord(ResourceError):
    """A record resource asked for an id the store does not hold."""


class _Server(FastMCP):
    """FastMCP whose errors read as their reason alone.

    FastMCP 1.x answers a tool's mistake as "Error executing tool search: <pydantic's whole report, links to
    its documentation and the input included>" and a resource template's as "Error creating resource from
    template: " twice over. These overrides of its public `call_tool` and `read_resource` keep the reason.
    """

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        try:
            return await super().call_tool(name, arguments)
        except ToolError as error:
            cause = error.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(_arguments_message(name, cause)) from cause
            if isinstance(cause, ToolError):  # raised by our tools: the message is already the reason
                raise ToolError(str(cause)) from cause
            raise

    async def read_resource(self, uri: Any) -> Any:
        try:
            return await super().read_resource(uri)
        except (ValueError, ResourceError) as error:
            reason = _root_cause(error)  # our own error, or the SDK's "Unknown resource: …" when it is alone
            code = RESOURCE_NOT_FOUND if isinstance(reason, _NoSuchRecord) or reason is error else INVALID_PARAMS
            raise McpError(ErrorData(code=code, message=shorten(str(reason), 1000))) from error


def _root_cause(error: BaseException) -> BaseException:
    """The first error of the chain the SDK built around it (it re-raises without ``from``)."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]  # one of them is set
    return error


def _arguments_message(tool: str, error: ValidationError) -> str:
    """Pydantic's report of bad tool arguments as one line per argument: name, reason, what was given."""
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        given = "" if item["type"] == "missing" else f" (got {shorten(item.get('input'))!r})"
        lines.append(f"{where}: {item['msg']}{given}")
    return f"invalid arguments for {tool}: " + "; ".join(lines)


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
    server = _Server(SERVER_NAME, instructions=INSTRUCTIONS, host=host, port=port, log_level="WARNING")
    logging.getLogger("mcp.server.streamable_http").addFilter(_SESSION_END_FILTER)
    _add_search(server, service, max_tokens, max_images)
    _add_records(server, service)
    if service.ingest_root is not None:
        _add_ingest(server, service)
        _add_documents(server, service)
    return server


def guarded_http_app(server: FastMCP, api_key: str | None) -> ASGIApp:
    """The server's streamable-HTTP application (at ``/mcp``), behind `api_key` when one is given.

    The key comes as ``Authorization: Bearer <key>`` or ``X-API-Key``, as for the HTTP service; a request
    without it is answered 401 before the SDK sees it. Run the result with uvicorn.
    """
    app = server.streamable_http_app()
    return app if not api_key else KeyRequired(app, api_key)


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
            raise _NoSuchRecord(f"no record with id {shorten(record_id)!r} in the store")
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


def _add_documents(server: FastMCP, service: Service) -> None:
    @server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
    @_on_a_thread
    def list_documents(
        limit: Annotated[int, Field(ge=1, le=MAX_DOCUMENTS_LISTED, description="Documents to list.")] = 100,
        offset: Annotated[int, Field(ge=0, description="Documents to pass over (for the next page).")] = 0,
    ) -> CallToolResult:
        """List the documents in the knowledge base, ordered by id: each one's id, source file, record count
        and modalities, and the total count."""
        listed = service.documents(limit=limit, offset=offset).model_dump()
        return CallToolResult(content=[_text(json.dumps(listed, ensure_ascii=False))], structuredContent=listed)

    @server.tool(
        description=DELETE_DOCUMENT_DESCRIPTION,
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=False),
    )
    @_on_a_thread
    def delete_document(
        id: Annotated[str, Field(min_length=1, max_length=4096, description="The document id, as listed.")],
    ) -> CallToolResult:
        try:
            deleted = service.delete_document(id)
        except MMRagError as error:  # the store is locked by another writer, read-only, the disk is full…
            raise ToolError(str(error)) from error
        if deleted is None:
            raise ToolError(f"no document with id {shorten(id)!r} in the store (list_documents lists them)")
        summary = deleted.model_dump()
        return CallToolResult(content=[_text(json.dumps(summary, ensure_ascii=False))], structuredContent=summary)


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
