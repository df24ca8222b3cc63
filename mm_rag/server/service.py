"""What the HTTP endpoints do, apart from HTTP: searching, ingesting uploads and paths, documents, records,
health.

Endpoints run on worker threads. Searches run concurrently (the store's read-write lock lets them interleave
with an ingestion's writes); ingestions and deletions run one at a time; each model is called by one thread
at a time (Hugging Face fast tokenizers refuse concurrent use, and one model saturates the cores anyway).

Uploads are documents with a name: an upload is kept as ``uploads/<name>`` (the file's safe name, or a name
the client gives), so its document id stays the same from one version to the next and a changed version
replaces the records of the last; content already stored under another name is reported as a duplicate of
that document instead of being stored twice; deleting a document, or its last record, removes its file.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from fastapi import HTTPException

from mm_rag import __version__
from mm_rag.errors import InvalidInputError
from mm_rag.filters import Filter
from mm_rag.ingestion import IngestReport, ingest
from mm_rag.ingestion.discover import discover, document_id
from mm_rag.ingestion.extract import UNCHANGED, ExtractOptions
from mm_rag.records import Modality, Record
from mm_rag.retrieval import DEFAULT_FUSION, RRF_K, Fusion, Mode, MultimodalRetriever, Retrieved
from mm_rag.server.media import Media, record_media
from mm_rag.server.schemas import (
    DocumentDeleteResponse,
    DocumentList,
    DocumentOut,
    HealthResponse,
    IngestPathRequest,
    IngestResponse,
    SpaceStatus,
)
from mm_rag.server.security import (
    PathRefused,
    confine,
    document_name,
    safe_filename,
    shorten,
    without_paths,
    without_quoted_paths,
)
from mm_rag.server.uploads import UPLOADS_DIR, Upload, UploadsFolder
from mm_rag.store import MultimodalStore


class Serialized:
    """A model whose methods run one call at a time; attributes and properties pass through unchanged."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._model, name)
        if not callable(value):
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return locked

    def __repr__(self) -> str:
        return repr(self._model)


class Service:
    """The store and models behind the HTTP service.

    Args:
        store: The store searched and filled.
        clip, text, transcriber: The models (see `MultimodalRetriever`); at least one embedder.
        ingest_root: Folder inside which server-side paths may be ingested; None refuses every path.
        uploads_dir: Where uploaded files are kept (default: ``uploads/`` in the store directory), each under
            its document name, so that a new version of a file replaces the last.
        options: How ingestion cuts what it reads (transcript windows…); `ExtractOptions()` by default.
    """

    def __init__(
        self,
        store: MultimodalStore,
        *,
        clip: Any | None = None,
        text: Any | None = None,
        transcriber: Any | None = None,
        ocr: Any | None = None,
        ingest_root: str | os.PathLike[str] | None = None,
        uploads_dir: str | os.PathLike[str] | None = None,
        options: ExtractOptions | None = None,
    ) -> None:
        self.store = store
        self.options = options
        self.clip: Any = None if clip is None else Serialized(clip)
        self.text: Any = None if text is None else Serialized(text)
        self.transcriber: Any = None if transcriber is None else Serialized(transcriber)
        self.ocr = ocr  # thread-safe itself: ingestion's workers read pictures side by side
        # A retriever checks its arguments now, so a service without any embedder fails at start-up.
        MultimodalRetriever(store, clip=self.clip, text=self.text)
        self.ingest_root = None if ingest_root is None else Path(ingest_root).resolve(strict=True)
        self.uploads = UploadsFolder(Path(uploads_dir) if uploads_dir is not None else store.path / UPLOADS_DIR)
        self._ingesting = threading.Lock()

    # --- search -------------------------------------------------------------------------------------------
    def search(
        self,
        query: str | None,
        *,
        image: bytes | None = None,
        audio: bytes | None = None,
        filter: Filter | None = None,
        counts: Mapping[Modality, int | None] | None = None,
        fusion: Fusion = DEFAULT_FUSION,
        mode: Mode = "hybrid",
        rrf_k: float = RRF_K,
        min_score: float | Mapping[str, float] | None = None,
    ) -> list[Retrieved]:
        """Fused results for a text query and/or an image or voice clip (bytes); see `MultimodalRetriever`."""
        retriever = MultimodalRetriever(
            self.store,
            clip=self.clip,
            text=self.text,
            transcriber=self.transcriber,
            fusion=fusion,
            mode=mode,
            rrf_k=rrf_k,
            min_score=min_score,
        )
        k: dict[Modality, int] = {m: value for m, value in (counts or {}).items() if value is not None}
        return retriever.retrieve(query, image=image, audio=audio, filter=filter, k=k)

    # --- ingestion ----------------------------------------------------------------------------------------
    def ingest_uploads(self, uploads: list[tuple[str | None, IO[bytes]]], doc_id: str | None = None) -> IngestResponse:
        """Keep each uploaded (name, stream) as a document under the uploads folder and ingest them.

        A document is named by the upload's safe file name, or by `doc_id` (one upload only): the same name
        again replaces the document when the content changed, and is ``unchanged`` when it did not; content
        already stored as another document is a duplicate, not stored again. An upload that fails leaves no
        file behind, and the version it was to replace stays as it was.

        Raises:
            InvalidInputError: `doc_id` with several uploads, or a `doc_id` that is not a safe name.
        """
        if doc_id is not None and len(uploads) != 1:
            raise InvalidInputError(f"doc_id names one document: send one file with it, not {len(uploads)}")
        chosen = None if doc_id is None else document_name(doc_id)
        spooled: list[Upload] = []
        try:
            for name, stream in uploads:  # spooled before taking the lock: a slow client delays nobody else
                shown = safe_filename(name)
                spooled.append(self.uploads.spool(shown, chosen or shown, stream))
            with self._ingesting:
                return self._store_uploads(spooled)
        finally:
            for upload in spooled:
                upload.spooled.unlink(missing_ok=True)

    def _store_uploads(self, uploads: list[Upload]) -> IngestResponse:
        """Place each spooled upload under its document name and ingest them (the ingestion lock is held)."""
        stored = self.store.documents()
        by_hash = {digest: doc for doc, digest in stored.items() if digest}
        response = IngestResponse(added=[], updated=[], skipped={}, failed={}, refused={}, records=0)
        placed: dict[str, Upload] = {}
        claimed: dict[str, str] = {}  # document name → the upload of this request that has it
        for upload in uploads:
            target = self.uploads.path / upload.document
            key = document_id(target)
            if upload.document in claimed:
                response.failed[upload.name] = (
                    f"another file of this request ({claimed[upload.document]}) has the document name"
                    f" {upload.document!r}"
                )
                continue
            claimed[upload.document] = upload.name
            if stored.get(key) == upload.digest and target.is_file():
                response.skipped[upload.name] = UNCHANGED
                response.documents[upload.name] = upload.document
                continue
            same = by_hash.get(upload.digest)
            if same is not None and same != key:
                response.duplicates[upload.name] = self.uploads.public_id(same)
                continue
            try:
                self.uploads.place(upload, target)
            except OSError as error:  # the name is taken by a folder of uploads, or the disk is full
                response.failed[upload.name] = f"cannot be kept as {upload.document!r}: {error.strerror or error}"
                continue
            placed[str(target)] = upload
            by_hash[upload.digest] = key  # the same bytes again in this request are a duplicate of this one
        try:
            report = self._run_ingest(list(placed))
        except BaseException:
            for upload in placed.values():
                self.uploads.put_back(upload)
            raise
        for path, upload in placed.items():
            # Failed, or skipped for want of a model: nothing stored, the last version (if any) is the document
            # again. Unchanged (its file had gone missing and is back): stored, and kept.
            if path in report.failed or report.skipped.get(path, UNCHANGED) != UNCHANGED:
                self.uploads.put_back(upload)
            else:
                if upload.previous is not None:
                    upload.previous.unlink(missing_ok=True)
                response.documents[upload.name] = upload.document

        def shown(text: str) -> str:  # the client's name for each upload, never the server's path
            for path, upload in placed.items():
                text = text.replace(path, upload.name)
            return text

        ingested = _response(report, {}, shown)
        response.added, response.updated, response.records = ingested.added, ingested.updated, ingested.records
        response.skipped.update(ingested.skipped)
        response.failed.update(ingested.failed)
        response.warnings.update(ingested.warnings)
        return response

    def ingest_path(self, request: IngestPathRequest) -> IngestResponse:
        """Ingest a file or folder inside the ingest root; files that link out of the root are refused."""
        root = self.ingest_root
        if root is None:
            raise PathRefused(status_code=403, detail="this server ingests no server-side paths (no ingest root)")
        target = confine(root, request.path)
        files, problems = discover([target], request.include, request.exclude)
        inside, refused = [], {}
        for file in files:
            resolved = file.resolve()
            if resolved.is_relative_to(root):
                inside.append(resolved)  # the resolved path is read: no link is followed after this check
            else:
                refused[str(file)] = "links outside the ingest root"
        report = self._ingest(inside)
        report.failed.update(problems)

        def shown(text: str) -> str:  # paths relative to the ingest root
            return text.replace(f"{root}{os.sep}", "")

        return _response(report, refused, shown)

    def _ingest(self, paths: list[Path] | list[str]) -> IngestReport:
        with self._ingesting:  # one ingestion at a time; searches go on meanwhile
            return self._run_ingest(paths)

    def _run_ingest(self, paths: list[Path] | list[str]) -> IngestReport:
        """Ingest `paths` and save (the caller holds the ingestion lock)."""
        if not paths:
            return IngestReport()
        with self._saved_or_dropped():
            return ingest(
                paths,
                self.store,
                clip=self.clip,
                text=self.text,
                transcriber=self.transcriber,
                ocr=self.ocr,
                options=self.options,
                save=True,
            )

    @contextmanager
    def _saved_or_dropped(self) -> Iterator[None]:
        """A request's changes are saved, or dropped with its error: the server never sits on the store's write
        lock with changes nobody will save (disk full, say), which would shut every other writer out."""
        try:
            yield
        except BaseException:
            if self.store.unsaved:
                self.store.rollback()
            raise

    # --- documents --------------------------------------------------------------------------------------
    def documents(self, limit: int = 100, offset: int = 0) -> DocumentList:
        """A page of the stored documents, ordered by id, with their record counts and modalities."""
        stored = self.store.documents()
        ordered = sorted(stored, key=self.uploads.public_id)
        page = ordered[offset : offset + limit]
        counts: dict[str, int] = dict.fromkeys(page, 0)
        modalities: dict[str, set[str]] = {doc: set() for doc in page}
        # One catalog query for the whole page (the doc_id index serves it), not one per document.
        for record in self.store.find({"doc_id": {"$in": page}}) if page else []:
            counts[record.doc_id] += 1  # type: ignore[index]  # the filter matched on it: never None
            modalities[record.doc_id].add(record.modality)  # type: ignore[index]
        listed = []
        for doc in page:
            upload = self.uploads.file_of(doc)
            listed.append(
                DocumentOut(
                    id=self.uploads.public_id(doc),
                    source=doc,
                    upload=upload is not None,
                    records=counts[doc],
                    modalities=sorted(modalities[doc]),  # type: ignore[arg-type]  # the catalog's modalities
                    content_hash=stored[doc],
                    added=None if upload is None or not upload.is_file() else _iso_time(upload.stat().st_mtime),
                )
            )
        return DocumentList(total=len(ordered), documents=listed)

    def delete_document(self, doc: str) -> DocumentDeleteResponse | None:
        """Delete a document's records (and save) and its uploaded file; None when there is neither.

        `doc` is the document's id as `documents` lists it (an upload's name) or its stored id (a search
        result's ``doc_id``).
        """
        with self._ingesting:  # files under uploads change under this lock only: no upload is half-placed
            stored = self.store.documents()
            key = doc if doc in stored else self.uploads.key_of(doc)
            if key is None:
                return None
            with self._saved_or_dropped():
                deleted = self.store.delete_doc(key)
                if deleted and not self.store.temporary:
                    self.store.save()
            removed = self.uploads.remove(key)
        if not deleted and not removed:
            return None
        return DocumentDeleteResponse(id=self.uploads.public_id(key), deleted=deleted, file_removed=removed)

    # --- records and health -------------------------------------------------------------------------------
    def get(self, record_id: str) -> Record | None:
        """The record with this id, or None."""
        found = self.store.get([record_id])
        return found[0] if found else None

    def media(self, record_id: str, thumb: int | None = None) -> Media:
        """A record's file or picture (see `mm_rag.server.media.record_media`); 404 for an unknown id."""
        record = self.get(record_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"no record with id {shorten(record_id)!r}")
        roots = [self.store.path.resolve(), self.uploads.path]
        if self.ingest_root is not None:
            roots.append(self.ingest_root)
        return record_media(record, roots, thumb)

    def delete(self, record_id: str) -> int:
        """Delete a record (and save the store); returns how many were deleted (0 or 1).

        The last record of an uploaded document takes the uploaded file with it: a file no record points at
        would stay on the server's disk with nothing to find or delete it by.
        """
        with self._ingesting:  # as `delete_document`: an upload being replaced is not removed half-way
            record = self.get(record_id)
            if record is None:
                return 0
            with self._saved_or_dropped():
                deleted = self.store.delete([record_id])
                if deleted and not self.store.temporary:
                    self.store.save()
            doc = record.doc_id
            if deleted and doc is not None and not self.store.find({"doc_id": doc}, limit=1):
                self.uploads.remove(doc)
        return deleted

    def health(self, detailed: bool = True) -> HealthResponse:
        """Counts, spaces and models; without `detailed`, models are named without server paths."""
        info = self.store.info()
        spaces = {
            name: SpaceStatus(
                dim=space["dim"],
                metric=space["metric"],
                vectors=space["vectors"],
                model=space["model"] if detailed or space["model"] is None else without_paths(space["model"]),
            )
            for name, space in info["spaces"].items()
        }
        models = {
            role: None if model is None else repr(model) if detailed else without_quoted_paths(repr(model))
            for role, model in (("clip", self.clip), ("text", self.text), ("transcriber", self.transcriber))
        }
        return HealthResponse(status="ok", version=__version__, records=info["records"], spaces=spaces, models=models)


def _response(report: IngestReport, refused: dict[str, str], shown: Any) -> IngestResponse:
    return IngestResponse(
        added=[shown(path) for path in report.added],
        updated=[shown(path) for path in report.updated],
        skipped={shown(path): shown(reason) for path, reason in report.skipped.items()},
        failed={shown(path): shown(reason) for path, reason in report.failed.items()},
        warnings={shown(path): shown(reason) for path, reason in report.warnings.items()},
        refused={shown(path): shown(reason) for path, reason in refused.items()},
        records=report.records,
    )


def _iso_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
