"""The FastAPI application: routes, error mapping, and building it from a store directory."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.responses import FileResponse, JSONResponse, Response

from mm_rag import __version__
from mm_rag.embed.media import MediaError
from mm_rag.errors import MMRagError, ReadOnlyStoreError, StoreLockedError, StoreWriteError
from mm_rag.filters import Filter, parse_filter
from mm_rag.ingestion.extract import ExtractOptions
from mm_rag.records import Modality
from mm_rag.retrieval import DEFAULT_FUSION, FUSION_HELP, MIN_SCORE_HELP, RRF_K, Retrieved, parse_min_score
from mm_rag.server.media import MEDIA_HEADERS
from mm_rag.server.schemas import (
    MAX_K,
    DeleteResponse,
    DocumentDeleteResponse,
    DocumentList,
    ErrorResponse,
    HealthResponse,
    IngestPathRequest,
    IngestResponse,
    RecordOut,
    SearchRequest,
    SearchResponse,
    SearchResult,
)
from mm_rag.server.security import BodyLimit, api_key_guard, shorten
from mm_rag.server.service import Service
from mm_rag.server.ui import add_ui
from mm_rag.store import MultimodalStore

DEFAULT_MAX_UPLOAD_BYTES = 100 * 2**20
MAX_UPLOAD_FILES = 100
MAX_DOCUMENTS_PAGE = 1000
MAX_ERROR_CHARS = 2000  # an error message longer than this repeats the client's input: cut it
logger = logging.getLogger("mm_rag.server")

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed input (filter, query, parameters)."},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key."},
    413: {"model": ErrorResponse, "description": "Request body over the size limit."},
}
# What a change to the store (ingest, delete) may answer besides.
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "The store is read-only."},
    503: {"model": ErrorResponse, "description": "Another process is writing the store; retry (Retry-After)."},
    507: {"model": ErrorResponse, "description": "The disk is full; the store keeps its last saved state."},
}
_INGEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "doc_id": {
                        "type": "string",
                        "description": "The document name of a single upload (default: its file name); an upload"
                        " under a name already stored replaces that document.",
                    },
                },
                "required": ["files"],
            }
        },
        "application/json": {"schema": IngestPathRequest.model_json_schema()},
    },
}


def create_app(
    store: MultimodalStore,
    *,
    clip: Any | None = None,
    text: Any | None = None,
    transcriber: Any | None = None,
    ocr: Any | None = None,
    api_key: str | None = None,
    ingest_root: str | os.PathLike[str] | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    uploads_dir: str | os.PathLike[str] | None = None,
    close_store_on_shutdown: bool = False,
    options: ExtractOptions | None = None,
    ui: bool = True,
) -> FastAPI:
    """The HTTP service over `store`, searching and ingesting with the given models.

    Args:
        store: The store; it stays the caller's unless `close_store_on_shutdown`.
        clip, text, transcriber: The models (at least one embedder); see `MultimodalRetriever`.
        ocr: The OCR engine for ingestion (`mm_rag.embed.ocr.load_ocr`), or None.
        api_key: When set, every endpoint but ``/health`` needs it (``X-API-Key`` or ``Authorization: Bearer``).
        ingest_root: Folder inside which ``POST /ingest`` may read server-side paths; None refuses all.
        max_upload_bytes: Largest request body accepted (413 beyond it, refused while reading).
        uploads_dir: Where uploaded files are kept (default: ``uploads/`` in the store directory).
        options: How ``POST /ingest`` cuts what it reads (transcript windows…); `ExtractOptions()` by default.
        close_store_on_shutdown: Close the store when the application shuts down.
        ui: Serve the search page at ``/`` (`mm_rag.server.ui`).

    Raises:
        InvalidInputError: no embedder given.
    """
    service = Service(
        store, clip=clip, text=text, transcriber=transcriber, ocr=ocr, ingest_root=ingest_root,
        uploads_dir=uploads_dir, options=options,
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if close_store_on_shutdown:
            store.close()

    app = FastAPI(
        title="mm-rag",
        version=__version__,
        summary="Multimodal retrieval: search and fill a store of images, transcribed audio/video and text.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    app.state.service = service
    _add_error_handlers(app)
    guarded = [Depends(api_key_guard(api_key))]
    if ui:
        add_ui(app)

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    def health() -> HealthResponse:
        """Status, record count, spaces and models (open even with an API key, and then without model paths)."""
        return service.health(detailed=api_key is None)

    @app.post("/search", response_model=SearchResponse, responses=_ERRORS, dependencies=guarded, tags=["search"])
    def search(request: SearchRequest) -> SearchResponse:
        """Search with text: every space is searched and the lists of each modality fused."""
        counts: dict[Modality, int | None] = {
            "text": request.text_k,
            "image": request.image_k,
            "audio": request.audio_k,
            "video": request.video_k,
        }
        found = service.search(
            request.query,
            filter=_as_filter(request.filter),
            counts=counts,
            fusion=request.fusion,
            mode=request.mode,
            rrf_k=request.rrf_k,
            min_score=request.min_score,
        )
        return _results(found)

    @app.post(
        "/search/media",
        response_model=SearchResponse,
        responses={**_ERRORS, 422: {"model": ErrorResponse, "description": "An upload that cannot be decoded."}},
        dependencies=guarded,
        tags=["search"],
    )
    def search_media(
        image: Annotated[UploadFile | None, File(description="A query image (searched in the CLIP space).")] = None,
        audio: Annotated[UploadFile | None, File(description="A spoken query, transcribed first.")] = None,
        query: Annotated[str | None, Form(max_length=10_000, description="Text joined to the query.")] = None,
        filter: Annotated[str | None, Form(description="Metadata filter as JSON text.")] = None,
        text_k: Annotated[int | None, Form(ge=0, le=MAX_K)] = None,
        image_k: Annotated[int | None, Form(ge=0, le=MAX_K)] = None,
        audio_k: Annotated[int | None, Form(ge=0, le=MAX_K)] = None,
        video_k: Annotated[int | None, Form(ge=0, le=MAX_K)] = None,
        fusion: Annotated[Literal["convex", "rrf", "relative"], Form(description=FUSION_HELP)] = DEFAULT_FUSION,
        mode: Annotated[Literal["hybrid", "dense", "lexical"], Form()] = "hybrid",
        rrf_k: Annotated[float, Form(ge=0, le=10_000)] = RRF_K,
        min_score: Annotated[str | None, Form(description=MIN_SCORE_HELP + " As JSON text.")] = None,
    ) -> SearchResponse:
        """Search with an uploaded image and/or voice clip (multipart form), optionally with text too."""
        counts: dict[Modality, int | None] = {"text": text_k, "image": image_k, "audio": audio_k, "video": video_k}
        found = service.search(
            query or None,
            image=None if image is None else image.file.read(),
            audio=None if audio is None else audio.file.read(),
            filter=parse_filter(filter),
            counts=counts,
            fusion=fusion,
            mode=mode,
            rrf_k=rrf_k,
            min_score=parse_min_score(min_score),
        )
        return _results(found)

    @app.post(
        "/ingest",
        response_model=IngestResponse,
        responses={
            **_ERRORS,
            **_WRITE_ERRORS,
            403: {"model": ErrorResponse, "description": "A path outside the ingest root, or a read-only store."},
            404: {"model": ErrorResponse},
            415: {"model": ErrorResponse},
        },
        dependencies=guarded,
        openapi_extra={"requestBody": _INGEST_BODY},
        tags=["ingest"],
    )
    async def ingest(request: Request) -> IngestResponse:
        """Ingest uploaded files (multipart, field ``files``, repeatable) or, as JSON ``{"path": …}``, a
        server-side file or folder inside the ingest root. Bad files are reported in ``failed``.

        Each upload is a document named by its file name (or by the form field ``doc_id``, with one file): an
        upload under a stored name replaces that document, and content already stored under another name is
        reported in ``duplicates`` and not stored again."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=MAX_UPLOAD_FILES)
            try:
                uploads = [
                    (value.filename, value.file)
                    for _, value in form.multi_items()
                    if isinstance(value, StarletteUpload)
                ]
                if not uploads:
                    raise HTTPException(status_code=400, detail="no file uploaded (send them in the field 'files')")
                doc_id = form.get("doc_id")
                if doc_id is not None and not isinstance(doc_id, str):
                    raise HTTPException(status_code=400, detail="doc_id is a text field, not a file")
                return await run_in_threadpool(service.ingest_uploads, uploads, doc_id or None)
            finally:
                await form.close()
        if kind == "application/json":
            try:
                wanted = IngestPathRequest.model_validate_json(await request.body())
            except ValidationError as error:
                raise RequestValidationError(error.errors(include_url=False)) from error
            return await run_in_threadpool(service.ingest_path, wanted)
        raise HTTPException(
            status_code=415, detail="send multipart/form-data (files) or application/json ({'path': …})"
        )

    @app.get(
        "/records/{record_id:path}",
        response_model=RecordOut,
        responses={**_ERRORS, 404: {"model": ErrorResponse}},
        dependencies=guarded,
        tags=["records"],
    )
    def get_record(record_id: str) -> RecordOut:
        """One stored record by id (404 when unknown)."""
        record = service.get(record_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"no record with id {record_id!r}")
        return RecordOut(
            id=record.id,
            modality=record.modality,
            text=record.text,
            uri=record.uri,
            metadata=record.metadata,
            doc_id=record.doc_id,
            content_hash=record.content_hash,
        )

    @app.get(
        "/media/{record_id:path}",
        responses={
            **_ERRORS,
            200: {"content": {"application/octet-stream": {}}, "description": "The file, or a JPEG picture."},
            206: {"description": "Part of the file (a Range request: audio and video seek this way)."},
            403: {"model": ErrorResponse, "description": "The file lies outside the store and the ingest root."},
            404: {"model": ErrorResponse},
            422: {"model": ErrorResponse, "description": "A picture that cannot be decoded."},
        },
        response_class=Response,
        dependencies=guarded,
        tags=["records"],
    )
    def media(
        record_id: str,
        thumb: Annotated[int | None, Query(ge=16, le=1024, description="A JPEG picture at most this large.")] = None,
    ) -> Response:
        """A record's media: the file it came from (Range requests answered with 206), or with ``thumb`` its
        picture (an image, a picture inside a document, a video keyframe) as a small JPEG."""
        found = service.media(record_id, thumb)
        if found.path is None:
            return Response(found.data, media_type=found.media_type, headers=MEDIA_HEADERS)
        return FileResponse(
            found.path,
            media_type=found.media_type,
            headers=MEDIA_HEADERS,
            filename=found.path.name,
            content_disposition_type="inline" if found.inline else "attachment",
        )

    @app.delete(
        "/records/{record_id:path}",
        response_model=DeleteResponse,
        responses={**_ERRORS, **_WRITE_ERRORS, 404: {"model": ErrorResponse}},
        dependencies=guarded,
        tags=["records"],
    )
    def delete_record(record_id: str) -> DeleteResponse:
        """Delete one record by id, durably (404 when unknown)."""
        deleted = service.delete(record_id)
        if not deleted:
            raise HTTPException(status_code=404, detail=f"no record with id {record_id!r}")
        return DeleteResponse(deleted=deleted)

    @app.get("/documents", response_model=DocumentList, responses=_ERRORS, dependencies=guarded, tags=["documents"])
    def list_documents(
        limit: Annotated[int, Query(ge=1, le=MAX_DOCUMENTS_PAGE, description="Documents per page.")] = 100,
        offset: Annotated[int, Query(ge=0, description="Documents to pass over.")] = 0,
    ) -> DocumentList:
        """The stored documents (uploads and ingested files), ordered by id: records, modalities, when added."""
        return service.documents(limit=limit, offset=offset)

    @app.delete(
        "/documents/{doc_id:path}",
        response_model=DocumentDeleteResponse,
        responses={**_ERRORS, **_WRITE_ERRORS, 404: {"model": ErrorResponse}},
        dependencies=guarded,
        tags=["documents"],
    )
    def delete_document(doc_id: str) -> DocumentDeleteResponse:
        """Delete a document: its records (durably) and, for an upload, its file on the server (404 when unknown).

        ``doc_id`` is the id ``GET /documents`` lists (an upload's name) or a search result's ``doc_id``."""
        deleted = service.delete_document(doc_id)
        if deleted is None:
            raise HTTPException(status_code=404, detail=f"no document with id {shorten(doc_id)!r}")
        return deleted

    return app


def app_from_store(
    path: str | os.PathLike[str], *, choice: Any | None = None, create: bool = False, **options: Any
) -> FastAPI:
    """The service over the store at `path`, with the models its spaces record (see `load_models`).

    Models that cannot load are logged and left out. The store is closed when the application shuts down.

    Args:
        choice: A `ModelChoice` (default: the store's models, else the library defaults).
        create: Create an empty store when `path` holds none (else `StoreFormatError`).
        options: Passed to `create_app` (api_key, ingest_root, max_upload_bytes, uploads_dir, options).
    """
    from mm_rag.embed.loading import ModelChoice, load_models

    store = MultimodalStore(path) if create else MultimodalStore.open(path)
    try:
        models = load_models(store, choice or ModelChoice(ocr="auto"))
        for note in models.notes:
            logger.warning("%s", note)
        for role, reason in models.unavailable.items():
            logger.warning("the %s model cannot load, so it is left out: %s", role, reason)
        return create_app(
            store,
            clip=models.clip,
            text=models.text,
            transcriber=models.transcriber,
            ocr=models.ocr,
            close_store_on_shutdown=True,
            **options,
        )
    except MMRagError:
        store.close()
        raise


def _results(found: list[Retrieved]) -> SearchResponse:
    return SearchResponse(results=[SearchResult.model_validate(result.to_dict()) for result in found])


def _as_filter(value: Filter | str | None) -> Filter | None:
    """A filter given as an object or as JSON text: the one parser the form, the CLI and MCP use."""
    return parse_filter(value) if isinstance(value, str) else value


def _shortened(error: dict[str, Any]) -> dict[str, Any]:
    """One validation error with its input cut short and without pydantic's documentation URL."""
    kept = {key: value for key, value in error.items() if key != "url"}
    if "input" in kept:
        kept["input"] = shorten(kept["input"])
    return kept


def _add_error_handlers(app: FastAPI) -> None:
    """Our errors are the client's input: 400, or 422 for media that cannot be decoded; never 500.

    No error repeats more than a little of what the client sent (`shorten`): a 500 KB query that breaks a
    limit gets the reason back, not its 500 KB.
    """

    async def media_error(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": shorten(str(error), MAX_ERROR_CHARS)}, status_code=422)

    async def input_error(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": shorten(str(error), MAX_ERROR_CHARS)}, status_code=400)

    async def invalid_request(_: Request, error: Exception) -> JSONResponse:
        # FastAPI's own handler answers the same 422 with each error's whole input (and pydantic's URLs).
        errors = error.errors() if isinstance(error, RequestValidationError) else []
        return JSONResponse({"detail": jsonable_encoder([_shortened(item) for item in errors])}, status_code=422)

    async def store_busy(_: Request, error: Exception) -> JSONResponse:  # another process is writing: retry
        return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "5"})

    async def store_read_only(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=403)

    async def store_write_failed(_: Request, error: Exception) -> JSONResponse:
        full = getattr(error, "errno", None) == errno.ENOSPC
        return JSONResponse({"detail": str(error)}, status_code=507 if full else 503)

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(MediaError, media_error)
    app.add_exception_handler(StoreLockedError, store_busy)
    app.add_exception_handler(ReadOnlyStoreError, store_read_only)
    app.add_exception_handler(StoreWriteError, store_write_failed)
    app.add_exception_handler(MMRagError, input_error)
