"""Files into records without a store: what `mm_rag.ingest` would store, for the framework loaders to convert.

The LangChain loader and the LlamaIndex reader call `iter_records` and only translate each record into their
document type, so a file loaded through either framework has the ids, text and metadata that ingesting it
gives (one extraction path, `mm_rag.ingestion.extract`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from mm_rag.embed.media import MediaError
from mm_rag.errors import InvalidInputError
from mm_rag.ingestion.discover import discover
from mm_rag.ingestion.extract import Capabilities, ExtractOptions, Failure, Skip, prepare_file
from mm_rag.records import Record

ErrorPolicy = Literal["raise", "skip"]
logger = logging.getLogger("mm_rag")


def file_records(
    path: str | os.PathLike[str],
    *,
    transcriber: Any | None = None,
    ocr: Any | None = None,
    options: ExtractOptions | None = None,
    doc_id: str | None = None,
) -> list[Record]:
    """The records `mm_rag.ingest` makes of one file (same ids, text and metadata), before any embedding.

    Every picture is kept (images, pictures inside documents, video keyframes), as an embedder for images
    may come later. Audio and video soundtracks are transcribed when a `transcriber` is given; text inside
    pictures and scanned pages is read when an `ocr` engine is given. Parts left out (a broken picture inside
    a document) are logged as warnings on the ``mm_rag`` logger.

    Raises:
        MediaError: naming the file, when it cannot be read (corrupt, unsupported, unreadable) or holds
            nothing these settings can read (audio without a transcriber, a scanned PDF without OCR).
    """
    path = Path(path)
    can = Capabilities(images=True, speech=transcriber is not None, words=True, ocr=ocr)
    outcome = prepare_file(path, options or ExtractOptions(), can, transcriber, doc_id=doc_id)
    if isinstance(outcome, (Failure, Skip)):
        raise MediaError(f"{path}: {outcome.reason}")
    for note in outcome.notes:
        logger.warning("%s: %s", path, note)
    return outcome.records


def iter_records(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    transcriber: Any | None = None,
    ocr: Any | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    options: ExtractOptions | None = None,
    errors: ErrorPolicy = "raise",
) -> Iterator[tuple[Path, list[Record]]]:
    """(file, its records) for every file under `paths` (folders walked, sorted, globs as for `ingest`).

    Args:
        ocr: An OCR engine, ``"auto"`` to load the default one (`mm_rag.embed.ocr.load_ocr`), or None.
        errors: ``"raise"``: a path that does not exist or a file that cannot be read raises `MediaError`
            naming it; ``"skip"``: it is logged as a warning on the ``mm_rag`` logger and left out.

    Raises:
        InvalidInputError: `errors` is neither ``"raise"`` nor ``"skip"``.
        MediaError: with ``errors="raise"``, the first path or file that cannot be read.
    """
    if errors not in ("raise", "skip"):
        raise InvalidInputError(f"errors must be 'raise' or 'skip', not {errors!r}")
    if ocr == "auto":
        from mm_rag.embed.ocr import load_ocr

        ocr = load_ocr()
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files, problems = discover(paths, include, exclude)
    bad = [MediaError(f"{path}: {reason}") for path, reason in problems.items()]
    for error in bad:
        _bad_file(error, errors)
    for path in files:
        try:
            yield path, file_records(path, transcriber=transcriber, ocr=ocr, options=options)
        except MediaError as error:
            _bad_file(error, errors)


def _bad_file(error: MediaError, errors: ErrorPolicy) -> None:
    if errors == "raise":
        raise error
    logger.warning("skipped: %s", error)  # the error names the file and the reason
