"""The actor side: load the models once, then turn each planned shard into a finished shard directory.

Each file goes through `mm_rag.ingestion.extract.prepare_file` (hash, decode, transcribe) on a few threads,
and the shard's images and texts through `mm_rag.ingestion.pipeline.embed_extracted` (one pass per model):
the same code, hence the same records and vectors, as `mm_rag.ingest`.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mm_rag.distributed.models import ModelSpec, build_transcriber
from mm_rag.distributed.sources import Source, fetched
from mm_rag.ingestion import extract
from mm_rag.ingestion.pipeline import embed_extracted
from mm_rag.records import Record
from mm_rag.shards import ShardSet, SpaceInfo


@dataclass
class ShardOutcome:
    """What writing one shard did: records written, files that failed or were skipped (with reasons)."""

    name: str
    records: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


class ShardBuilder:
    """Models loaded once, and the shard root they write to; `build` makes one shard.

    Args:
        root: The shard root (``shards.json`` is declared here from the loaded models).
        clip, text: The embedders to rebuild, or None.
        transcriber: The transcriber's spec, or None.
        ocr: The OCR engine's name (see `mm_rag.embed.ocr.load_ocr`), or None.
        options: Chunking, windows and keyframe settings.
        device: Device of every model (``"cpu"``, ``"cuda"``…).
        workers: Threads that decode the files of a shard.
    """

    def __init__(
        self,
        root: str,
        clip: ModelSpec | None,
        text: ModelSpec | None,
        transcriber: Mapping[str, Any] | None,
        options: extract.ExtractOptions,
        ocr: str | None = None,
        device: str = "cpu",
        workers: int = 2,
    ) -> None:
        self.shards = ShardSet(root)
        self.clip = clip.build(device) if clip is not None else None
        self.text = text.build(device) if text is not None else None
        self.transcriber = build_transcriber(transcriber, device) if transcriber is not None else None
        self.options = options
        self.workers = workers
        engine = None
        if ocr is not None:
            from mm_rag.embed.ocr import load_ocr

            engine = load_ocr(ocr)
        self.capabilities = extract.Capabilities.of(self.clip, self.transcriber, self.text, engine)
        self.one_transcription = threading.Lock()
        embedders = [(self.clip, clip), (self.text, text)]
        self.shards.declare_spaces(
            {spec.space: SpaceInfo(model.dim, "cosine", spec.spec) for model, spec in embedders if model is not None}
        )

    def build(self, name: str, files: Sequence[Source]) -> ShardOutcome:
        """Ingest `files` and write them as shard `name` (bad files go to its ``failed.json``)."""
        started = time.perf_counter()
        outcome = ShardOutcome(name)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="mm-rag-shard") as pool:
            prepared = list(pool.map(self._prepare, files))
        items: list[extract.Extracted] = []
        for source, result in zip(files, prepared, strict=True):
            if isinstance(result, extract.Failure):
                outcome.failed[source.uri] = result.reason
            elif isinstance(result, extract.Skip):
                outcome.skipped[source.uri] = result.reason
            else:
                items.append(result)
        records, vectors = _shard_rows(embed_extracted(items, self.clip, self.text))
        self.shards.write(name, records, vectors, failed=outcome.failed)
        outcome.records = len(records)
        outcome.seconds = time.perf_counter() - started
        return outcome

    def _prepare(self, source: Source) -> extract.Extracted | extract.Skip | extract.Failure:
        try:
            with fetched(source) as path:
                result = extract.prepare_file(
                    path,
                    self.options,
                    self.capabilities,
                    self.transcriber,
                    doc_id=source.uri,
                    transcription_lock=self.one_transcription,
                )
                if source.remote and isinstance(result, extract.Extracted):  # name the object, not the copy
                    local = str(path)
                    result.records = [
                        dataclasses.replace(r, uri=source.uri) if r.uri == local else r for r in result.records
                    ]
                return result
        except OSError as error:
            return extract.Failure(f"cannot read: {error.strerror or error}")


def _shard_rows(
    embedded: Sequence[tuple[extract.Extracted, list[tuple[list[int], dict[str, np.ndarray]]]]],
) -> tuple[list[Record], dict[str, tuple[list[int], np.ndarray]]]:
    """The shard's records (those with vectors, file by file) and, per space, (ascending rows, vectors)."""
    records: list[Record] = []
    per_space: dict[str, list[tuple[int, np.ndarray]]] = {}
    for item, groups in embedded:
        row_of = {}
        for position in sorted({p for positions, _ in groups for p in positions}):
            row_of[position] = len(records)
            records.append(item.records[position])
        for positions, vectors in groups:
            for space, array in vectors.items():
                per_space.setdefault(space, []).extend((row_of[p], array[i]) for i, p in enumerate(positions))
    vectors = {}
    for space, pairs in per_space.items():
        pairs.sort(key=lambda pair: pair[0])
        vectors[space] = ([row for row, _ in pairs], np.stack([vector for _, vector in pairs]))
    return records, vectors


class ShardWorker:
    """The Ray Data actor: a `ShardBuilder`, called on batches of planned shards (``name``, ``files`` JSON)."""

    def __init__(self, **settings: Any) -> None:
        self.builder = ShardBuilder(**settings)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        results: dict[str, list[Any]] = {"name": [], "records": [], "failed": [], "skipped": [], "seconds": []}
        for name, files in zip(batch["name"], batch["files"], strict=True):
            sources = [Source(uri, int(size), int(mtime)) for uri, size, mtime in json.loads(str(files))]
            outcome = self.builder.build(str(name), sources)
            results["name"].append(outcome.name)
            results["records"].append(outcome.records)
            results["failed"].append(json.dumps(outcome.failed))
            results["skipped"].append(json.dumps(outcome.skipped))
            results["seconds"].append(outcome.seconds)
        return results
