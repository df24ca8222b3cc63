"""The request and response bodies of the HTTP service (pydantic models: validated, and in /openapi.json)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mm_rag.retrieval import DEFAULT_FUSION, FUSION_HELP, MIN_SCORE_HELP, RRF_K

MAX_K = 1000  # results per modality one request may ask for
MAX_QUERY_CHARS = 10_000

Modality = Literal["text", "image", "audio", "video"]
# A relevance floor: one cosine for every embedding space, or floors by space name ("lexical": BM25).
MinScore = float | dict[str, float] | None


class SearchRequest(BaseModel):
    """A text search across every space, results of each modality fused into one list."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="The question or description.")
    filter: dict[str, Any] | str | None = Field(
        None,
        description='Metadata filter (see mm_rag.filters), e.g. {"modality": "image", "year": {"$gte": 2020}};'
        " a JSON object, or the same object as JSON text (as /search/media takes it).",
        examples=[{"modality": "image"}, '{"modality": "image"}'],
    )
    text_k: int | None = Field(None, ge=0, le=MAX_K, description="Text passages kept (default 5; 0 leaves them out).")
    image_k: int | None = Field(None, ge=0, le=MAX_K, description="Images kept (default 5).")
    audio_k: int | None = Field(None, ge=0, le=MAX_K, description="Audio transcript moments kept (default 3).")
    video_k: int | None = Field(None, ge=0, le=MAX_K, description="Video moments and keyframes kept (default 3).")
    fusion: Literal["convex", "rrf", "relative"] = Field(DEFAULT_FUSION, description=FUSION_HELP)
    mode: Literal["hybrid", "dense", "lexical"] = Field(
        "hybrid", description="hybrid: embeddings and keywords (BM25) fused; dense: embeddings; lexical: keywords."
    )
    rrf_k: float = Field(RRF_K, ge=0, le=10_000, description="The constant of reciprocal-rank fusion.")
    min_score: MinScore = Field(None, description=MIN_SCORE_HELP, examples=[0.3, {"text": 0.35, "lexical": 2.0}])


class Evidence(BaseModel):
    """One ranked list that found a result."""

    space: str
    query: Literal["text", "image", "audio"] = Field(
        description="What was searched: the query text, the query image, or the words heard in the query audio."
    )
    rank: int = Field(description="0-based rank in that list.")
    score: float = Field(description="The space's raw similarity (higher is better).")


class SearchResult(BaseModel):
    """A fused result: the record's content, where it comes from, and why it was found."""

    id: str
    modality: Modality
    score: float = Field(description="Fused score; comparable only within one response.")
    scores: dict[str, float] = Field(
        description="Best raw score per ranking: cosine per space, BM25 as 'lexical' (higher is better)."
    )
    text: str | None
    source: str | None = Field(description="The media path or the source document.")
    uri: str | None
    doc_id: str | None
    start: float | None = Field(description="Start of the time range in seconds (audio and video).")
    end: float | None
    metadata: dict[str, Any]
    explanation: str
    evidence: list[Evidence]


class SearchResponse(BaseModel):
    """Results, best first."""

    results: list[SearchResult]


class RecordOut(BaseModel):
    """A stored record."""

    id: str
    modality: Modality
    text: str | None
    uri: str | None
    metadata: dict[str, Any]
    doc_id: str | None
    content_hash: str | None


class DeleteResponse(BaseModel):
    """How many records were deleted."""

    deleted: int


class IngestPathRequest(BaseModel):
    """A server-side file or folder to ingest; it must lie (after symlinks) inside the server's ingest root."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096, description="Relative to the ingest root, or absolute inside it.")
    include: list[str] | None = Field(None, description="Only files matching these globs.")
    exclude: list[str] | None = Field(None, description="Leave out files matching these globs.")


class IngestResponse(BaseModel):
    """What an ingestion did, file by file (uploaded files are named as the client sent them)."""

    added: list[str]
    updated: list[str]
    skipped: dict[str, str] = Field(description="File → why it was left alone (e.g. unchanged).")
    failed: dict[str, str] = Field(description="File → why it could not be ingested (corrupt, unsupported…).")
    warnings: dict[str, str] = Field(
        default_factory=dict, description="File → parts left out of a stored file (a broken picture inside it…)."
    )
    refused: dict[str, str] = Field(description="File → why it was not even read (a link out of the ingest root).")
    duplicates: dict[str, str] = Field(
        default_factory=dict,
        description="Uploaded file → the stored document with the same content; it was not stored again.",
    )
    documents: dict[str, str] = Field(
        default_factory=dict,
        description="Uploaded file → its document id (for /documents), when it is stored (added, updated or"
        " unchanged).",
    )
    records: int = Field(description="Records written.")


class DocumentOut(BaseModel):
    """A stored document: the records one file (or upload) became."""

    id: str = Field(
        description="The document id for /documents: an upload's name inside the uploads folder, else the path"
        " of the file ingested."
    )
    source: str = Field(description="The stored document id, as search results give it in doc_id.")
    upload: bool = Field(description="Whether it was uploaded (its file is kept, and deleted with it).")
    records: int
    modalities: list[Modality]
    content_hash: str | None = Field(description="SHA-256 of the file's bytes.")
    added: str | None = Field(
        description="When the upload was kept (ISO 8601, UTC); null for server-side files, whose ingestion time"
        " is not recorded."
    )


class DocumentList(BaseModel):
    """A page of the stored documents, ordered by id."""

    total: int = Field(description="Documents in the store.")
    documents: list[DocumentOut]


class DocumentDeleteResponse(BaseModel):
    """What deleting a document removed."""

    id: str
    deleted: int = Field(description="Records deleted.")
    file_removed: bool = Field(description="Whether the uploaded file was removed from the server's disk.")


class SpaceStatus(BaseModel):
    """One embedding space of the store."""

    dim: int
    metric: str
    vectors: int
    model: dict[str, Any] | None


class HealthResponse(BaseModel):
    """The service is up; what it serves."""

    status: Literal["ok"]
    version: str
    records: int
    spaces: dict[str, SpaceStatus]
    models: dict[str, str | None] = Field(description="clip / text / transcriber → the model, or null.")


class ErrorResponse(BaseModel):
    """Why a request was refused."""

    detail: Any
