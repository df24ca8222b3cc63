"""`MultimodalStore`: records in a SQLite catalog, vectors in one Faiss index per embedding space."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from mm_rag.errors import InvalidInputError, StoreFormatError
from mm_rag.filters import Filter, check_filter, compile_filter
from mm_rag.records import LEXICAL, Hit, Record, encode_records
from mm_rag.store import indexing, merging, searching, segments, writes
from mm_rag.store.catalog import KEYWORD_LANGUAGES
from mm_rag.store.committed import DEFAULT_LOCK_TIMEOUT, Generations, lock_seconds
from mm_rag.store.config import SpaceConfig
from mm_rag.store.lexical import Keywords, Stemming
from mm_rag.store.manifest import CATALOG, MANIFEST, SPACES_DIR, SpaceEntry, SpaceFiles
from mm_rag.store.overlap import both
from mm_rag.store.space import Space
from mm_rag.store.writes import (
    check_keyword_settings,
    check_records,
    check_vectors,
    lookup,
    updated_config,
)

__all__ = ["CATALOG", "DEFAULT_LOCK_TIMEOUT", "MANIFEST", "SPACES_DIR", "MultimodalStore"]

# Batches from this size check and add their vectors on a second thread while the records are checked and
# written (100k x 512: 0.74-0.86 s instead of 1.03 s; 2,048 records: 18.2 against 19.8 ms; 64: 1.35 against 0.72).
_THREADED_ADD = 2048


class MultimodalStore:
    """A directory-backed store of records with one Faiss index per embedding space.

    ``MultimodalStore()`` is a temporary store, deleted on `close`; ``MultimodalStore(path)`` opens the store
    at `path`, creating it when the directory holds none; `MultimodalStore.open` opens only an existing one.

    Changes are visible to searches at once and become durable at `save`, which is atomic: a crash at any
    moment leaves the previously saved state. Many threads may search while one writes.

    Several processes may open one store (a server, ``mm-rag ingest``, app workers). Any number read; one
    writes at a time. A handle takes the store's write lock (``write.lock``, released by the kernel if the
    process dies) at its first change, loads the latest commit first if another process made one, and keeps
    the lock until `save`, `rollback` or `close`; another writer waits up to `lock_timeout` seconds, then gets
    `StoreLockedError` naming the holder. Every read first checks, at the cost of one SQLite pragma, whether
    another process committed, and if so loads the spaces that changed (memory-mapped where large) before
    answering; searches already running finish on the state they started with.

    The directory's files are described in `mm_rag.store.manifest`; the parts of a store in DESIGN.md: its
    committed generations and write lock (`mm_rag.store.committed`), the catalog (`mm_rag.store.catalog`),
    each space's index and segments (`mm_rag.store.space`, `mm_rag.store.segments`), filtered search
    (`mm_rag.store.searching`).

    A store whose directory cannot be written (a read-only file system or folder) opens for searching;
    its first change raises `ReadOnlyStoreError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        mmap: bool | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self._generations = Generations(path, mmap=mmap, lock_timeout=lock_timeout)
        self._matching = searching.MatchingKeys(self._generations)
        self.path: Path = self._generations.path

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, mmap: bool | None = None, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    ) -> MultimodalStore:
        """Open the existing store at `path`; raises `StoreFormatError` when there is none.

        Args:
            mmap: memory-map index and vector files (``None``: only those over 256 MiB, and always the
                on-disk inverted lists of an index built by `mm_rag.indexbuild`). A mapped space is read into
                memory before its first change (on-disk lists are copied, keeping the trained quantizer).
            lock_timeout: Seconds a change waits for another process's write before `StoreLockedError`.
        """
        if not (Path(path) / MANIFEST).is_file():
            raise StoreFormatError(f"no mm-rag store at {path} (missing {MANIFEST})")
        return cls(path, mmap=mmap, lock_timeout=lock_timeout)

    # --- spaces -----------------------------------------------------------------------------------------
    def create_space(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        index: str = "auto",
        memory_budget: int = indexing.DEFAULT_MEMORY_BUDGET,
        model: dict[str, Any] | None = None,
    ) -> SpaceConfig:
        """Create an embedding space, or return the existing one when its configuration is the same.

        See `SpaceConfig` for the arguments. A `model` given for an existing space that records none is
        adopted; the same model loaded from another place (`same_model`) updates the record. Raises `InvalidInputError` for a bad configuration, or one that differs from an existing
        space of the same name (another model's vectors would silently mix with its own).
        """
        config = SpaceConfig(name, dim, metric, index, memory_budget, model)
        config.validate()
        self._generations.sync()
        existing = self._generations.spaces.get(name)
        if existing is not None and updated_config(existing.config, config) is None:
            return existing.config  # no change, so no write lock: opening a store to ingest into costs nothing
        with self._generations.writing():
            existing = self._generations.spaces.get(name)
            if existing is None:
                self._generations.put_space(Space(config))
                return config
            update = updated_config(existing.config, config)
            if update is not None:
                existing.config = update
                self._generations.changed(name)
            return existing.config

    def drop_space(self, name: str) -> None:
        """Remove a space and its vectors (records stay in the catalog)."""
        with self._generations.writing():
            self._space(name)
            self._generations.remove_space(name)

    @property
    def spaces(self) -> dict[str, SpaceConfig]:
        """Configuration of every space, by name."""
        self._generations.sync()
        return {name: space.config for name, space in self._generations.spaces.items()}

    def info(self) -> dict[str, Any]:
        """Counts, index types and files per space: what ``mm-rag info`` prints."""
        with self._generations.reading():
            return {
                "path": str(self.path),
                "generation": self._generations.manifest["generation"],
                "read_only": self._generations.read_only,
                "writer": self._generations.write_lock.holder(),  # another process writing now: pid, since, command
                "records": self._generations.catalog.count(),
                "keywords": self._generations.catalog.keyword_settings(),
                "spaces": {name: segments.describe(space) for name, space in self._generations.spaces.items()},
            }

    # --- writes -----------------------------------------------------------------------------------------
    def upsert(self, records: Sequence[Record], vectors: Mapping[str, Any] | None = None) -> list[str]:
        """Add records, replacing any stored record with the same id; returns the ids.

        Args:
            records: The records; ids must be unique within the call.
            vectors: For each space name, one vector per record (an ``(n, dim)`` array or nested lists), in
                the order of `records`. A replaced record loses the vectors of spaces not given here.

        Raises:
            InvalidInputError: empty batch, duplicate ids, bad record fields, unknown space, wrong dimension,
                NaN/inf or (cosine) all-zero vectors. Nothing is changed then.
        """
        records = list(records)
        if not records:
            raise InvalidInputError("upsert: empty batch (no records given)")
        count, vectors = len(records), dict(vectors or {})
        threaded = bool(vectors) and count >= _THREADED_ADD
        with self._generations.reading():
            spaces = dict(self._generations.spaces)  # the second thread takes no lock: ours would block it
        (metadata, ids), checked = both(
            lambda: check_records(records), lambda: check_vectors(spaces, vectors, count), threaded
        )
        with self._generations.writing():
            writes.upsert(self._generations, records, metadata, ids, checked, vectors, threaded)
        return ids

    add = upsert  # re-adding an id replaces it, so adding and upserting are one operation

    def delete(self, ids: Sequence[str]) -> int:
        """Delete records by id; unknown ids are ignored. Returns how many were deleted."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        if not self._generations.write_lock.held:
            self._generations.sync()
            if not self._generations.catalog.keys_of_ids(ids):
                return 0  # nothing to delete: no need to wait for another process's write
        with self._generations.writing(), self._generations.catalog_writes():
            keys = self._generations.catalog.keys_of_ids(ids)
            writes.remove(self._generations, np.fromiter(keys.values(), dtype=np.int64, count=len(keys)))
        return len(keys)

    def delete_doc(self, doc_id: str) -> int:
        """Delete every record of the source document `doc_id`. Returns how many were deleted."""
        if not self._generations.write_lock.held:
            self._generations.sync()
            if not len(self._generations.catalog.keys_of_doc(doc_id)):
                return 0
        with self._generations.writing(), self._generations.catalog_writes():
            keys = self._generations.catalog.keys_of_doc(doc_id)
            writes.remove(self._generations, keys)
        return len(keys)

    def clear(self) -> None:
        """Delete every record and vector; spaces and their configuration stay."""
        with self._generations.writing():
            with self._generations.catalog_writes():
                self._generations.catalog.delete_all()
            for name, space in self._generations.spaces.items():
                space.clear()
                self._generations.changed(name)
            self._generations.changed(None)

    def bulk_insert(self, records: Sequence[Record]) -> np.ndarray:
        """Insert records whose ids are new to the store, without vectors; returns their keys. For building a
        store from shards (`mm_rag.indexbuild`): it skips `upsert`'s lookup of existing ids, and the vectors
        come with `adopt_space`. Durable at the next `save`.

        Raises:
            InvalidInputError: an id already stored (the transaction then holds part of the batch: drop it).
        """
        metadata = encode_records(records)
        with self._generations.writing():
            return writes.insert_new(self._generations, records, metadata)

    def adopt_space(self, config: SpaceConfig, files: SpaceFiles, spec: str) -> None:
        """Install a space whose `files` (keys of records from `bulk_insert`, their vectors, the Faiss index
        built as `spec`) were written into ``spaces/``, as `mm_rag.indexbuild` does; durable at the next `save`."""
        directory = self.path / SPACES_DIR
        keys = np.load(directory / files.keys, mmap_mode="r", allow_pickle=False)
        entry = SpaceEntry.describe(config, spec, directory, files, len(keys))
        space = segments.open_space(self.path, entry, None)
        with self._generations.writing():
            self._generations.adopt(space, entry)

    def shard(self, space: str, shards: int | None = None, *, gpus: bool = False) -> int:
        """Serve `space` through a threaded `faiss.IndexShards` until its next change (here, or a commit of
        another process that changes it); returns the shard count.

        The IVF index is split into `shards` sub-indices (default: one per CPU core) sharing its quantizer,
        each scanning part of every inverted list, so one query uses every core and results (filters
        included) equal the unsharded index's. The sub-indices hold their lists in memory. With `gpus`
        (a faiss build with GPUs), the index is spread over every GPU by `faiss.index_cpu_to_all_gpus`.

        Raises:
            InvalidInputError: the space's index is not IVF, or `shards` is not a positive integer.
        """
        if shards is None:
            shards = max(1, os.cpu_count() or 1)
        if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
            raise InvalidInputError(f"shard: shards must be a positive integer, got {shards!r}")
        with self._generations.lock.writing():
            self._space(space).shard(shards, gpus)
        return shards

    # --- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Make every change durable, atomically, and let other writers in; with `path`, also write a copy there.

        A temporary store needs `path`. The copy's directory must not exist yet or be empty. Without unsaved
        changes nothing is written in place.

        Once the commit stands and the write lock is let go, segments past the merge policy's limit are merged
        (`mm_rag.store.merging`): outside the lock, each merge committed as a generation of its own.

        Raises:
            StoreWriteError: the save failed (disk full, I/O error…): the last commit is intact, and the
                message says whether this handle's changes are kept for another `save`.
        """
        self._generations.save(path)
        if not (self.temporary or self.read_only):
            merging.merge_segments(self._generations)

    def rollback(self) -> None:
        """Drop the changes not saved yet and show the latest committed state (this process's or another's)."""
        self._generations.rollback()

    def close(self) -> None:
        """Release the store. Unsaved changes are dropped (with a warning); a temporary store is deleted."""
        self._generations.close()

    @property
    def unsaved(self) -> bool:
        """Whether there are changes that `save` has not made durable yet."""
        return self._generations.unsaved

    @property
    def read_only(self) -> bool:
        """Whether the store's folder cannot be written: searches work, changes raise `ReadOnlyStoreError`."""
        return self._generations.read_only

    @property
    def temporary(self) -> bool:
        """Whether this store lives in a temporary directory deleted on `close` (nothing to `save` in place)."""
        return self._generations.temporary

    @property
    def lock_timeout(self) -> float:
        """Seconds a change waits for another process's write before `StoreLockedError`."""
        return self._generations.lock_timeout

    @lock_timeout.setter
    def lock_timeout(self, seconds: float) -> None:
        self._generations.lock_timeout = lock_seconds(seconds)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads ------------------------------------------------------------------------------------------
    def get(self, ids: Sequence[str]) -> list[Record]:
        """The stored records among `ids`, in the order asked; unknown ids are left out."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        with self._generations.reading():
            found = self._generations.catalog.records_by_ids(ids)
        return [found[i] for i in ids if i in found]

    def find(self, filter: Filter | None = None, limit: int | None = None) -> list[Record]:
        """Records matching `filter` (see `mm_rag.filters`; every record when None), oldest first, at most `limit`.

        Raises:
            FilterError: a malformed filter.
        """
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise InvalidInputError(f"find: limit must be a non-negative integer or None, got {limit!r}")
        check_filter(filter)
        with self._generations.reading():
            keys = self._matching(filter)[:limit]
            found = self._generations.catalog.records_by_keys(keys.tolist())
        return [found[key] for key in keys.tolist()]

    def vectors(self, space: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored (normalised, for cosine) vectors of `ids` in `space`, by id; ids without one are left out."""
        with self._generations.reading():
            target = self._space(space)
            by_id = self._generations.catalog.keys_of_ids(list(ids))
            keys, vectors = target.take(np.fromiter(by_id.values(), dtype=np.int64, count=len(by_id)))
        id_of = {key: i for i, key in by_id.items()}
        return {id_of[int(key)]: np.array(vector) for key, vector in zip(keys, vectors)}

    def count(self, space: str | None = None) -> int:
        """Number of records, or of vectors in `space`."""
        with self._generations.reading():
            return self._generations.catalog.count() if space is None else len(self._space(space))

    def __len__(self) -> int:
        return self.count()

    def __iter__(self) -> Iterator[Record]:
        """Every record, oldest key first (read page by page: safe on large stores)."""
        self._generations.sync()
        return self._generations.catalog.iter_records()

    def documents(self) -> dict[str, str | None]:
        """Every stored `doc_id` with the `content_hash` of its records (for incremental ingestion)."""
        with self._generations.reading():
            return self._generations.catalog.documents()

    def ids_with_hashes(self, hashes: Sequence[str]) -> set[str]:
        """Ids of stored records whose `content_hash` is one of `hashes` (for incremental ingestion)."""
        with self._generations.reading():
            return self._generations.catalog.ids_with_hashes(list(hashes))

    def search(self, space: str, vector: Any, k: int = 10, filter: Filter | None = None) -> list[Hit]:
        """The `k` records nearest to one query vector in `space`, best first, restricted by `filter`.

        A filtered search is exact over the matching records whenever few match (and on Flat indices), and
        never returns fewer than ``min(k, matches)`` hits. See `mm_rag.filters` for the filter language.
        """
        return self.search_batch(space, [vector], k, filter)[0]

    def search_batch(self, space: str, vectors: Any, k: int = 10, filter: Filter | None = None) -> list[list[Hit]]:
        """`search` for several query vectors at once (one list of hits per query)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InvalidInputError(f"search: k must be a positive integer, got {k!r}")
        check_filter(filter)
        count = len(vectors) if hasattr(vectors, "__len__") else 0
        if count == 0:
            raise InvalidInputError("search: no query vectors given")
        return searching.vector_hits(self._generations, self._matching, space, vectors, count, k, filter)

    def search_text(self, query: str, k: int = 10, filter: Filter | None = None, space: str | None = None) -> list[Hit]:
        """The `k` records whose text best matches the words of `query`, best first (BM25 over SQLite FTS5).

        Keyword search finds what embeddings blur: exact names, codes ("INV-4711") and numbers. Every word of
        `query` counts, as a plain word (quotes and FTS5 operators have no special meaning); case and
        diacritics are folded. `filter` restricts the search exactly, in the same SQL query; `space` keeps
        only records with a vector in that space (exactly: more candidates are ranked until `k` qualify).
        Hits carry ``space=LEXICAL`` and the BM25 score (higher is better, comparable within one query).

        Raises:
            InvalidInputError: `query` is not text, or `k` is not a positive integer.
            FilterError: a malformed filter.
            UnknownSpaceError: an unknown `space`.
        """
        if not isinstance(query, str):
            raise InvalidInputError(f"search_text: query must be text, got {type(query).__name__}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InvalidInputError(f"search_text: k must be a positive integer, got {k!r}")
        condition = compile_filter(filter)
        with self._generations.reading():
            target = None if space is None else self._space(space)
            rows = searching.text_rows(self._generations.catalog, target, query, condition, k)
            found = self._generations.catalog.records_by_keys([key for key, _ in rows])
        ranked = [(found[key], score) for key, score in rows if key in found]
        return [Hit(record, LEXICAL, float(score), rank) for rank, (record, score) in enumerate(ranked)]

    def keywords(self, query: str) -> Keywords:
        """The words of `query` that `search_text` matches, and those it leaves out as carrying no information:
        stop words of the store's keyword languages, and in larger stores words found in half the records."""
        with self._generations.reading():
            return self._generations.catalog.keywords(query)

    def state(self, name: str) -> Any:
        """The JSON value an application keeps with the store under `name` (None when there is none); e.g.
        ingestion remembers there the files that wait for a model (`mm_rag.ingestion.waiting`)."""
        with self._generations.reading():
            return self._generations.catalog.setting(_STATE_PREFIX + name)

    def put_state(self, name: str, value: Any) -> None:
        """Keep the JSON-serialisable `value` under `name`; durable at the next `save`, like any change."""
        with self._generations.writing(), self._generations.catalog_writes():
            self._generations.catalog.put_setting(_STATE_PREFIX + name, value)
            self._generations.changed(None)

    @property
    def keyword_settings(self) -> dict[str, Any]:
        """``{"stemming": "porter" | "none", "languages": [...]}``: how the keyword index reads words."""
        self._generations.sync()
        return self._generations.catalog.keyword_settings()

    def configure_keywords(self, *, stemming: Stemming | None = None, languages: Sequence[str] | None = None) -> None:
        """Change how the keyword index reads words; durable at the next `save`, like any change.

        Args:
            stemming: ``"porter"`` (English stemming over the Unicode tokenizer: "maps" finds "map") or
                ``"none"`` (words as written). Changing it indexes every record's text again.
            languages: Codes of `mm_rag.store.stopwords.STOP_WORDS` whose stop words are left out of queries.

        Raises:
            InvalidInputError: an unknown stemming or language.
        """
        languages = check_keyword_settings(stemming, languages)
        with self._generations.writing(), self._generations.catalog_writes():
            if stemming is not None and stemming != self._generations.catalog.stemming():
                self._generations.catalog.restem(stemming)
            if languages is not None:
                self._generations.catalog.put_setting(KEYWORD_LANGUAGES, languages)
            self._generations.changed(None)

    def _space(self, name: str) -> Space:
        return lookup(self._generations.spaces, name)

    def __repr__(self) -> str:
        return f"MultimodalStore({str(self.path)!r}, spaces={sorted(self._generations.spaces)})"


# Application state lives beside the store's own settings, under names that cannot collide with them.
_STATE_PREFIX = "state:"
