"""What the HTTP endpoints do, apart from HTTP: searching, ingesting uploads and paths, records, health.

Endpoints run on worker threads. Searches run concurrently (the store's read-write lock lets them interleave
with an ingestion's writes); ingestions run one at a time; each model is called by one thread at a time
(Hugging Face fast tokenizers refuse concurrent use, and one model saturates the cores anyway).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from mm_rag import __version__
from mm_rag.filters import Filter
from mm_rag.ingestion import IngestReport, ingest
from mm_rag.ingestion.discover import discover
from mm_rag.ingestion.extract import ExtractOptions
from mm_rag.records import Modality, Record
from mm_rag.retrieval import DEFAULT_FUSION, RRF_K, Fusion, Mode, MultimodalRetriever, Retrieved
from mm_rag.server.schemas import HealthResponse, IngestPathRequest, IngestResponse, SpaceStatus
from mm_rag.server.security import PathRefused, confine, safe_filename
from mm_rag.store import MultimodalStore

UPLOADS_DIR = "uploads"
_COPY_CHUNK = 1 << 20


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
        uploads_dir: Where uploaded files are kept (default: ``uploads/`` in the store directory), one
            folder per content hash so that uploading the same file again changes nothing.
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
        self.uploads = Path(uploads_dir).resolve() if uploads_dir is not None else store.path / UPLOADS_DIR
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
    def ingest_uploads(self, uploads: list[tuple[str | None, IO[bytes]]]) -> IngestResponse:
        """Keep each uploaded (name, stream) under the uploads folder and ingest them; failed ones are removed."""
        names: dict[str, str] = {}
        for name, stream in uploads:
            path = self._keep_upload(name, stream)
            names[str(path)] = safe_filename(name)
        report = self._ingest(list(names))
        for failed in report.failed:
            if failed in names:
                Path(failed).unlink(missing_ok=True)
                _remove_if_empty(Path(failed).parent)

        def shown(text: str) -> str:  # the client's name for each upload, never the server's path
            for path, name in names.items():
                text = text.replace(path, name)
            return text

        return _response(report, {}, shown)

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
        with self._ingesting, self._saved_or_dropped():  # one ingestion at a time; searches go on meanwhile
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

    def _keep_upload(self, name: str | None, stream: IO[bytes]) -> Path:
        """Copy an upload into ``uploads/<content hash>/<safe name>`` (atomically) and return that path."""
        self.uploads.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        handle, temporary = tempfile.mkstemp(dir=self.uploads, prefix=".upload-")
        try:
            with os.fdopen(handle, "wb") as output:
                for chunk in iter(lambda: stream.read(_COPY_CHUNK), b""):
                    digest.update(chunk)
                    output.write(chunk)
            target = self.uploads / digest.hexdigest()[:32] / safe_filename(name)
            target.parent.mkdir(exist_ok=True)
            os.replace(temporary, target)
        finally:
            Path(temporary).unlink(missing_ok=True)
        return target

    # --- records and health -------------------------------------------------------------------------------
    def get(self, record_id: str) -> Record | None:
        """The record with this id, or None."""
        found = self.store.get([record_id])
        return found[0] if found else None

    def delete(self, record_id: str) -> int:
        """Delete a record (and save the store); returns how many were deleted (0 or 1)."""
        with self._saved_or_dropped():
            deleted = self.store.delete([record_id])
            if deleted and not self.store.temporary:
                self.store.save()
        return deleted

    def health(self, detailed: bool = True) -> HealthResponse:
        """Counts, spaces and models; without `detailed`, models are named by class only (no server paths)."""
        info = self.store.info()
        spaces = {
            name: SpaceStatus(
                dim=space["dim"],
                metric=space["metric"],
                vectors=space["vectors"],
                model=space["model"] if detailed else None,
            )
            for name, space in info["spaces"].items()
        }
        models = {
            role: None if model is None else repr(model) if detailed else type(model._model).__name__
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


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (another upload with the same content) or already gone
        pass
