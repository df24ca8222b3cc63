"""Embedding shards: the durable output of distributed ingestion and the input of index building.

A shard directory is self-describing and holds no pickle::

    <root>/
      shards.json                    format, version, spaces (dim, metric, model spec) — written by the first shard
      <shard>/records.parquet        one row per record: id, modality, text, uri, doc_id, content_hash,
                                     metadata (JSON text)
      <shard>/<space>.rows.npy       int64: which rows of records.parquet have a vector in <space>, ascending
      <shard>/<space>.vectors.npy    float32 (len(rows), dim): those vectors (L2-normalised for cosine)
      <shard>/failed.json            files of this shard that could not be ingested, with the reason
      <shard>/_SUCCESS               written last; a shard directory without it is unfinished and redone

A shard is written to a temporary sibling directory and renamed into place once complete, so a killed run
leaves only finished shards (and temporary debris that the next run removes); a re-run skips them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mm_rag._optional import require
from mm_rag.errors import InvalidInputError, StoreFormatError
from mm_rag.records import Record, encode_records
from mm_rag.store.durable import fsync_path, write_atomically

FORMAT = "mm-rag-shards"
FORMAT_VERSION = 1
MANIFEST = "shards.json"
RECORDS = "records.parquet"
SUCCESS = "_SUCCESS"
FAILED = "failed.json"
_TEMPORARY_PREFIX = ".tmp-"
_COLUMNS = ("id", "modality", "text", "uri", "doc_id", "content_hash", "metadata")


@dataclass(frozen=True)
class SpaceInfo:
    """A space as shards describe it: dimension, metric and the model that made the vectors."""

    dim: int
    metric: str = "cosine"
    model: dict[str, Any] | None = None


@dataclass
class Shard:
    """One finished shard, read back: its records and, per space, which rows have vectors and the vectors."""

    name: str
    records: list[Record]
    vectors: dict[str, tuple[np.ndarray, np.ndarray]]  # space → (rows, vectors)
    failed: dict[str, str]


class ShardSet:
    """The shards under one root directory: write them (one per call), list the finished ones, read them."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    # --- writing ----------------------------------------------------------------------------------------
    def declare_spaces(self, spaces: Mapping[str, SpaceInfo]) -> None:
        """Record the spaces in ``shards.json``, or check them against those already recorded.

        Raises:
            InvalidInputError: a space recorded with another dimension, metric or model.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        wanted = {name: vars(info) for name, info in spaces.items()}
        existing = self.manifest(required=False)
        if existing is not None:
            for name, info in wanted.items():
                recorded = existing["spaces"].get(name)
                if recorded is not None and recorded != info:
                    raise InvalidInputError(f"{self.root}: space {name!r} was written as {recorded}, not {info}")
            if all(name in existing["spaces"] for name in wanted):
                return
            wanted = {**existing["spaces"], **wanted}
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "spaces": wanted}
        write_atomically(self.root / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())

    def write(
        self,
        name: str,
        records: Sequence[Record],
        vectors: Mapping[str, tuple[Sequence[int], np.ndarray]],
        failed: Mapping[str, str] | None = None,
    ) -> Path:
        """Write shard `name` atomically: `records`, and per space (rows of `records`, vectors). Returns its path.

        Raises:
            InvalidInputError: an undeclared space, mismatched rows and vectors, or a wrong dimension.
        """
        _check_name(name)
        spaces = self.manifest()["spaces"]
        pa = require("pyarrow", "embedding shards")
        parquet = require("pyarrow.parquet", "embedding shards")
        records = list(records)
        metadata = encode_records(records)  # first: it checks every record
        columns: dict[str, list[Any]] = {column: [getattr(r, column) for r in records] for column in _COLUMNS[:-1]}
        columns["metadata"] = metadata
        staging = Path(tempfile.mkdtemp(prefix=f"{_TEMPORARY_PREFIX}{name}-", dir=self.root))
        try:
            table = pa.table({column: pa.array(values, type=pa.string()) for column, values in columns.items()})
            parquet.write_table(table, staging / RECORDS)
            for space, (rows, array) in vectors.items():
                if space not in spaces:
                    raise InvalidInputError(f"shard {name}: space {space!r} is not declared in {MANIFEST}")
                rows = np.asarray(rows, dtype=np.int64)
                array = np.ascontiguousarray(array, dtype=np.float32)
                if array.ndim != 2 or array.shape != (len(rows), spaces[space]["dim"]):
                    raise InvalidInputError(
                        f"shard {name}: space {space!r} needs ({len(rows)}, {spaces[space]['dim']}) vectors,"
                        f" got {array.shape}"
                    )
                if len(rows) and (rows.min() < 0 or rows.max() >= len(records) or np.any(np.diff(rows) <= 0)):
                    raise InvalidInputError(f"shard {name}: rows of space {space!r} must be ascending rows of the records")
                np.save(staging / f"{space}.rows.npy", rows, allow_pickle=False)
                np.save(staging / f"{space}.vectors.npy", array, allow_pickle=False)
            (staging / FAILED).write_text(json.dumps(dict(failed or {}), indent=2))
            (staging / SUCCESS).write_text("")
            for file in staging.iterdir():
                fsync_path(file)
            fsync_path(staging)
            target = self.root / name
            if target.exists():  # an unfinished leftover of the same name (no _SUCCESS): replace it
                shutil.rmtree(target)
            os.replace(staging, target)
            fsync_path(self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.root / name

    def remove_debris(self) -> None:
        """Delete temporary and unfinished shard directories (left by a killed run)."""
        if not self.root.is_dir():
            return
        for entry in self.root.iterdir():
            if entry.is_dir() and (entry.name.startswith(_TEMPORARY_PREFIX) or not (entry / SUCCESS).exists()):
                shutil.rmtree(entry, ignore_errors=True)

    # --- reading ----------------------------------------------------------------------------------------
    def manifest(self, *, required: bool = True) -> dict[str, Any] | None:
        """The parsed ``shards.json`` (None when absent and not `required`).

        Raises:
            StoreFormatError: missing (when required), unreadable, or of another format or version.
        """
        path = self.root / MANIFEST
        if not path.is_file():
            if required:
                raise StoreFormatError(f"no embedding shards at {self.root} (missing {MANIFEST})")
            return None
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise StoreFormatError(f"{path} is unreadable: {error}") from error
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise StoreFormatError(f"{path} is not an mm-rag shards manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise StoreFormatError(f"{path} has format version {manifest.get('format_version')}, this mm-rag reads {FORMAT_VERSION}")
        return manifest

    @property
    def spaces(self) -> dict[str, SpaceInfo]:
        return {name: SpaceInfo(**info) for name, info in self.manifest()["spaces"].items()}

    def finished(self) -> list[str]:
        """Names of the finished shards, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and not entry.name.startswith(_TEMPORARY_PREFIX) and (entry / SUCCESS).exists()
        )

    def read(self, name: str, *, mmap: bool = False) -> Shard:
        """Read one finished shard (vectors memory-mapped with `mmap`)."""
        parquet = require("pyarrow.parquet", "embedding shards")
        folder = self.root / name
        if not (folder / SUCCESS).exists():
            raise StoreFormatError(f"shard {folder} is not finished (no {SUCCESS})")
        table = parquet.read_table(folder / RECORDS).to_pydict()
        records = [
            Record(id, modality, text, uri, json.loads(metadata), doc_id, content_hash)
            for id, modality, text, uri, doc_id, content_hash, metadata in zip(*(table[c] for c in _COLUMNS))
        ]
        vectors = {}
        for space in self.manifest()["spaces"]:
            rows_file = folder / f"{space}.rows.npy"
            if rows_file.exists():
                mode = "r" if mmap else None
                vectors[space] = (
                    np.load(rows_file, allow_pickle=False),
                    np.load(folder / f"{space}.vectors.npy", allow_pickle=False, mmap_mode=mode),
                )
        failed = json.loads((folder / FAILED).read_text()) if (folder / FAILED).exists() else {}
        return Shard(name, records, vectors, failed)

    def __iter__(self) -> Iterator[Shard]:
        """Every finished shard, in name order."""
        return (self.read(name) for name in self.finished())


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name or name in (MANIFEST,):
        raise InvalidInputError(f"invalid shard name {name!r}")
