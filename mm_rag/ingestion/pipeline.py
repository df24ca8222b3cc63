"""`ingest`: files → decoded media → embeddings in batches → records in the store.

Two stages. Worker threads hash, read and decode files (images, keyframes, audio, documents) and transcribe
speech (one transcription at a time: the model is shared) ahead of the main thread, which runs the embedders
on batches gathered across files, so decoding and transcription hide behind embedding. Every file either
lands whole or is reported with the reason it failed; one bad file never stops the run, and nothing of a
failed file reaches the store.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_rag.embed.base import Embedder, MultimodalEmbedder
from mm_rag.errors import InvalidInputError
from mm_rag.ingestion import extract, noise, waiting
from mm_rag.ingestion.discover import content_hash, discover, document_id
from mm_rag.ingestion.extract import UNCHANGED
from mm_rag.store import MultimodalStore

# Files decoded ahead of the embedders: bounds memory while keeping the models busy.
_READ_AHEAD = 32
# A long run commits as it goes, so that other writers of the store (a server's /ingest, another ingest)
# get its write lock in between and a killed run keeps the files it finished. A save rewrites the spaces
# that changed, so commits are at least this many seconds apart, and four times as far as a save lasts.
COMMIT_SECONDS = 10.0


@dataclass
class IngestReport:
    """What an ingestion run did, file by file.

    Attributes:
        added: Files stored for the first time.
        updated: Files whose content changed; their old records were replaced.
        skipped: Files left alone, with why (unchanged content, no embedder for their kind).
        failed: Files that could not be ingested, with the reason (corrupt, empty, unsupported, unreadable…).
        warnings: Files stored with parts left out, with why (a broken picture inside a document, scanned
            pages without an OCR engine), and what libraries printed while reading them.
        pruned: Documents removed because their file no longer exists (with ``prune=True``).
        records: Records written.
    """

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)
    records: int = 0

    def summary(self) -> str:
        """One line of counts: ``3 added, 0 updated, 5 unchanged, 1 skipped, 1 failed, 0 pruned; 12 records written``."""
        unchanged = sum(reason == UNCHANGED for reason in self.skipped.values())
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {unchanged} unchanged,"
            f" {len(self.skipped) - unchanged} skipped, {len(self.failed)} failed, {len(self.pruned)} pruned;"
            f" {self.records} records written"
        )

    def lines(self) -> list[str]:
        """One line per file that was skipped (other than unchanged), failed or stored with warnings."""
        lines = [f"skipped: {path}: {reason}" for path, reason in self.skipped.items() if reason != UNCHANGED]
        lines += [f"failed: {path}: {reason}" for path, reason in self.failed.items()]
        lines += [f"warning: {path}: {reason}" for path, reason in self.warnings.items()]
        return lines


def ingest(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    store: MultimodalStore,
    *,
    clip: MultimodalEmbedder | None = None,
    text: Embedder | None = None,
    transcriber: Any | None = None,
    ocr: Any | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    prune: bool = False,
    options: extract.ExtractOptions | None = None,
    batch_size: int = 64,
    workers: int = 4,
    progress: bool = False,
    save: bool = True,
    requests: Mapping[str, waiting.ModelRequest] | None = None,
) -> IngestReport:
    """Ingest files and folders into `store`, incrementally.

    Images, pictures inside documents and video keyframes go to the CLIP space, and their words (OCR text,
    captions) to the text space; document chunks and transcript windows go to the text space and to the CLIP
    text tower (so a picture can find text and text can find pictures); audio and video soundtracks are
    transcribed by `transcriber` first. Every picture is verified, so a corrupt image fails even without CLIP.
    A file whose content hash is unchanged is skipped; a changed file replaces its records; with `prune`,
    documents whose files are gone are deleted.

    Args:
        paths: Files and folders (walked recursively).
        store: The store; spaces named after the embedders are created when missing.
        clip: Image+text embedder (e.g. `OpenCLIPEmbedder`); without it images and keyframes are skipped.
        text: Text embedder (e.g. `TextEmbedder`).
        transcriber: Speech-to-text (e.g. `WhisperTranscriber`); without it audio is skipped.
        ocr: Reads text inside pictures, scanned PDF pages and video keyframes (`mm_rag.embed.ocr.load_ocr()`);
            the text becomes the picture's record text, so it is found by keywords and the text space.
        include, exclude: Glob patterns on file names or relative paths.
        options: Chunking, transcript windows and keyframe sampling settings.
        progress: Show a progress bar over files.
        save: Save the store at the end, and every `COMMIT_SECONDS` or so on the way (when it has a directory
            of its own); without it, the changes are left unsaved (and the store's write lock held).
        requests: Per model role, what was asked for (`mm_rag.ingestion.waiting`): files skipped for want of
            a model are then remembered, and `pending` leaves them out while nothing would change.

    Returns:
        An `IngestReport`; bad files are listed in `failed`, never raised.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if clip is None and text is None:
        raise InvalidInputError("ingest: give at least one embedder (clip= and/or text=)")
    options = options or extract.ExtractOptions()
    report = IngestReport()
    files, problems = discover(paths, include, exclude)
    report.failed.update(problems)
    for embedder in (clip, text):
        if embedder is not None:  # the space records its model: another model's vectors are refused
            store.create_space(embedder.space, embedder.dim, model=getattr(embedder, "spec", None))
    stored = store.documents()
    if prune:
        prune_missing(store, files, stored, report)
    writer = _Writer(store, clip, text, batch_size, report, stored, save and not store.temporary)
    capabilities = extract.Capabilities.of(clip, transcriber, text, ocr)
    one_transcription = threading.Lock()
    outcomes: list[tuple[str, str | None, str | None, tuple[str, ...]]] = []

    def prepare(path: Path) -> extract.Extracted | extract.Skip | extract.Failure:
        """Everything a file needs before its embeddings, on a worker thread; what libraries print meanwhile
        goes with the file's outcome."""
        printed: list[str] = []
        with console.reading(printed):
            outcome = extract.prepare_file(
                path, options, capabilities, transcriber, unchanged=stored, transcription_lock=one_transcription
            )
        return noise.attach(outcome, printed)

    with (
        noise.collecting() as console,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mm-rag-ingest") as pool,
    ):
        results = _read_ahead(pool, files, prepare)
        for path, outcome in _with_progress(results, len(files), progress, console.terminal):
            if isinstance(outcome, extract.Skip):
                report.skipped[str(path)] = outcome.reason
            elif isinstance(outcome, extract.Failure):
                report.failed[str(path)] = outcome.reason
            else:
                writer.push(outcome)
            if isinstance(outcome, extract.Skip) and outcome.reason != UNCHANGED:
                outcomes.append((document_id(path), outcome.content_hash, outcome.reason, outcome.needs))
            elif not isinstance(outcome, extract.Skip):  # stored or failed: waits for nothing
                outcomes.append((document_id(path), None, None, ()))
    writer.flush()
    if requests is not None:
        waiting.remember(store, outcomes, requests)
    if writer.save:
        store.save()
    return report


@dataclass
class Pending:
    """What an ingestion run has to do, found by hashing alone, before any model is loaded.

    Attributes:
        files: The files whose content is not stored (new, or changed since they were ingested).
        kinds: Their kinds by content (`mm_rag.embed.sniff.sniff`: ``"image"``, ``"audio"``, ``"video"`` or a
            document format), so a caller loads only the models they need (no Whisper for a changed text file).
        report: With no pending file, the report of the run: every file unchanged (and pruned documents, with
            `prune`); otherwise None, as the run itself reports.
    """

    files: list[Path]
    kinds: set[str]
    report: IngestReport | None


def pending(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    store: MultimodalStore,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    prune: bool = False,
    workers: int = 4,
    requests: Mapping[str, str] | None = None,
) -> Pending:
    """Hash the files under `paths` and compare them with `store`: what `ingest` would have to embed.

    When nothing is pending, this *is* the run (so re-running an ingestion on an unchanged folder costs the
    hashing, not the loading of every model): with `prune`, the documents whose files are gone are deleted and
    the store saved.

    Args:
        paths, include, exclude, prune: As for `ingest`.
        workers: Threads hashing files (reading is I/O bound).
        requests: Model role → what the run would ask for (`mm_rag.ingestion.waiting`): files that a run
            with the same requests skipped for want of a model, unchanged since, are skipped again for the
            same reason when none of their models has become available.

    Returns:
        The `Pending` files and their kinds, and the report when there is nothing to embed.
    """
    from mm_rag.embed.sniff import sniff

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files, problems = discover(paths, include, exclude)
    stored = store.documents()
    wanting = waiting.still_waiting(store, requests) if requests is not None else {}

    def new_content(path: Path) -> tuple[str | None, str]:
        """(the file's kind when its content must be read, else None; why it is skipped otherwise); an
        unreadable file is left to the run, which reports why."""
        try:
            if not path.is_file():
                return "unknown", ""
            doc_id = document_id(path)
            digest = content_hash(path) if doc_id in stored or doc_id in wanting else None
            if digest is not None and stored.get(doc_id) == digest:
                return None, UNCHANGED
            if digest is not None and doc_id in wanting and wanting[doc_id][0] == digest:
                return None, wanting[doc_id][1]
            return sniff(path) or "unknown", ""
        except OSError:
            return "unknown", ""

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mm-rag-hash") as pool:
        found = list(pool.map(new_content, files))
    todo = [path for path, (kind, _) in zip(files, found) if kind is not None]
    if todo:
        return Pending(todo, {kind for kind, _ in found if kind is not None}, None)
    report = IngestReport(skipped={str(path): reason for path, (_, reason) in zip(files, found)}, failed=dict(problems))
    if prune:
        prune_missing(store, files, stored, report)
        if report.pruned:
            store.save()
    return Pending([], set(), report)


def prune_missing(
    store: MultimodalStore, files: list[Path], stored: dict[str, str | None], report: IngestReport
) -> None:
    """Delete the documents of `stored` whose file is neither among `files` nor on disk; list them in `report`."""
    present = {document_id(path) for path in files}
    for doc_id in stored:
        if doc_id not in present and not Path(doc_id).exists():
            store.delete_doc(doc_id)
            report.pruned.append(doc_id)


def _read_ahead(pool: ThreadPoolExecutor, items: list[Any], work: Any) -> Iterator[tuple[Any, Any]]:
    """Run `work` over `items` on the pool, at most `_READ_AHEAD` in flight, yielding in input order."""
    pending = [(item, pool.submit(work, item)) for item in items[:_READ_AHEAD]]
    following = iter(items[_READ_AHEAD:])
    while pending:
        item, future = pending.pop(0)
        upcoming = next(following, None)
        if upcoming is not None:
            pending.append((upcoming, pool.submit(work, upcoming)))
        yield item, future.result()


def _with_progress(results: Iterator[Any], total: int, progress: bool, terminal: Any) -> Iterator[Any]:
    if not progress:
        return results
    from tqdm.auto import tqdm

    return iter(tqdm(results, total=total, desc="ingest", unit="file", file=terminal))


class _Writer:
    """Gathers extracted files until a batch is full, embeds the batch, then replaces each file's records."""

    def __init__(
        self, store, clip, text, batch_size: int, report: IngestReport, stored: dict[str, str | None], save: bool
    ):
        self.store, self.clip, self.text = store, clip, text
        self.batch_size = batch_size
        self.report = report
        self.stored = stored
        self.save = save
        self.pending: list[extract.Extracted] = []
        self.pending_images = self.pending_texts = 0
        self.last_commit = time.monotonic()
        self.save_seconds = 0.0

    def push(self, item: extract.Extracted) -> None:
        self.pending.append(item)
        self.pending_images += len(item.images)
        self.pending_texts += len(item.texts)
        if self.pending_images >= self.batch_size or self.pending_texts >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Embed every pending image and text in one pass per model, then store file by file."""
        batch, self.pending = self.pending, []
        self.pending_images = self.pending_texts = 0
        for item, groups in embed_extracted(batch, self.clip, self.text):
            self.store.delete_doc(item.doc_id)
            for positions, vectors in groups:
                self.store.upsert([item.records[i] for i in positions], vectors)
            (self.report.updated if item.doc_id in self.stored else self.report.added).append(str(item.path))
            self.report.records += sum(len(positions) for positions, _ in groups)
            if item.notes:
                self.report.warnings[str(item.path)] = "; ".join(item.notes)
        if self.save and time.monotonic() - self.last_commit >= max(COMMIT_SECONDS, 4 * self.save_seconds):
            started = time.monotonic()
            self.store.save()
            self.last_commit = time.monotonic()
            self.save_seconds = self.last_commit - started


def embed_extracted(
    batch: Sequence[extract.Extracted], clip: MultimodalEmbedder | None, text: Embedder | None
) -> list[tuple[extract.Extracted, list[tuple[list[int], dict[str, np.ndarray]]]]]:
    """Embed the images and texts of `batch` in one pass per model, and hand each file its vectors back.

    Returns, per file in order, its groups of (positions in ``item.records``, space → one vector per position),
    each record in one group: a picture gets its image from the CLIP image tower and, when it has words (OCR
    text, a caption), their vector from the text embedder; any other text gets the text embedder and the CLIP
    text tower. A file's records outside every group (no image, no text) get no vectors and are not stored.
    """
    pictured = [{position for position, _ in item.images} for item in batch]
    images = [image for item in batch for _, image in item.images]
    texts = [passage for item in batch for _, passage in item.texts]
    plain = [passage for item, seen in zip(batch, pictured) for p, passage in item.texts if p not in seen]
    image_vectors = clip.embed_images(images) if images and clip is not None else None
    text_vectors = text.embed_texts(texts) if texts and text is not None else None
    clip_text_vectors = clip.embed_texts(plain) if plain and clip is not None else None
    embedded = []
    image_at = text_at = plain_at = 0
    for item, seen in zip(batch, pictured):
        picture_rows = {p: image_at + n for n, (p, _) in enumerate(item.images)}
        image_at += len(item.images)
        text_rows = {p: text_at + n for n, (p, _) in enumerate(item.texts)}
        text_at += len(item.texts)
        plain_rows = {}
        for p, _ in item.texts:
            if p not in seen:
                plain_rows[p] = plain_at
                plain_at += 1
        groups: list[tuple[list[int], dict[str, np.ndarray]]] = []
        worded = [p for p in picture_rows if p in text_rows]
        for positions, with_words in (([p for p in picture_rows if p not in text_rows], False), (worded, True)):
            if not positions or image_vectors is None:
                continue
            vectors = {clip.space: image_vectors[[picture_rows[p] for p in positions]]}
            if with_words and text_vectors is not None:
                vectors[text.space] = text_vectors[[text_rows[p] for p in positions]]
            groups.append((positions, vectors))
        if plain_rows:
            positions = list(plain_rows)
            vectors = {}
            if text_vectors is not None:
                vectors[text.space] = text_vectors[[text_rows[p] for p in positions]]
            if clip_text_vectors is not None:
                vectors[clip.space] = clip_text_vectors[[plain_rows[p] for p in positions]]
            if vectors:
                groups.append((positions, vectors))
        embedded.append((item, groups))
    return embedded
