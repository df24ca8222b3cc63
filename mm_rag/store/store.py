"""`MultimodalStore`: records in a SQLite catalog, vectors in one Faiss index per embedding space."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mm_rag.errors import InvalidInputError, StoreFormatError, UnknownSpaceError
from mm_rag.filters import Filter, canonical_filter, check_filter, compile_filter
from mm_rag.records import LEXICAL, Hit, Record, encode_records
from mm_rag.store import indexing
from mm_rag.store.catalog import KEYWORD_LANGUAGES
from mm_rag.store.committed import DEFAULT_LOCK_TIMEOUT, CommittedStore
from mm_rag.store.lexical import STEMMINGS, Keywords, Stemming
from mm_rag.store.manifest import CATALOG, MANIFEST, SPACES_DIR, SpaceEntry, SpaceFiles
from mm_rag.store.overlap import both
from mm_rag.store.planner import plan_filter
from mm_rag.store.segments import open_space
from mm_rag.store.space import Space, SpaceConfig, describe_model, same_model
from mm_rag.store.stopwords import STOP_WORDS

__all__ = ["CATALOG", "DEFAULT_LOCK_TIMEOUT", "MANIFEST", "SPACES_DIR", "MultimodalStore"]

_FILTER_CACHE_SIZE = 64
# Batches from this size check and add their vectors on a second thread while the records are checked and
# written (100k x 512: 0.74-0.86 s instead of 1.03 s; 2,048 records: 18.2 against 19.8 ms; 64: 1.35 against 0.72).
_THREADED_ADD = 2048


class MultimodalStore(CommittedStore):
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

    Layout of the directory (see `mmrag.json` inside for what each file is)::

        mmrag.json                  manifest: format version, spaces, files, library versions
        catalog.sqlite              records, metadata, keys (WAL mode); holds the authoritative manifest
        write.lock                  the writers' lock (a flock) and who holds it
        spaces/<space>.<gen>.faiss  the space's Faiss index (absent while an IVF/PQ index awaits training)
        spaces/<space>.<gen>.keys.npy, .vectors.npy   exact vectors of the space, keyed like the index
        spaces/<space>.<gen>.ivfdata  on-disk inverted lists of an IVF index built by `mm_rag.indexbuild`
                                    (mapped read-only; copied into memory at the space's first change)

    A store whose directory cannot be written (a read-only file system or folder) opens for searching;
    its first change raises `ReadOnlyStoreError`.
    """

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
        self._sync()
        existing = self._spaces.get(name)
        if existing is not None and _nothing_to_change(existing.config, config):
            return existing.config  # no change, so no write lock: opening a store to ingest into costs nothing
        with self._writing():
            existing = self._spaces.get(name)
            if existing is not None:
                recorded = existing.config.model
                if dataclasses.replace(existing.config, model=None) != dataclasses.replace(config, model=None):
                    raise InvalidInputError(f"space {name!r} exists as {existing.config}, not {config}")
                if model is not None and recorded is not None and not same_model(recorded, model):
                    raise InvalidInputError(
                        f"space {name!r} holds vectors of the model {describe_model(recorded)}, not of"
                        f" {describe_model(model)}: use that model, or another space"
                    )
                # A space that records no model adopts this one; one that records the same model at another
                # place, or without its fingerprint yet, learns where it was last loaded from and what it is.
                fuller = recorded is None or bool(
                    model and (model.get("fingerprint") or not recorded.get("fingerprint"))
                )
                if model is not None and fuller:
                    existing.config = config
                    self._changed(name)
                return existing.config
            self._spaces[name] = Space(config)
            self._changed(name)
        return config

    def drop_space(self, name: str) -> None:
        """Remove a space and its vectors (records stay in the catalog)."""
        with self._writing():
            self._space(name)
            del self._spaces[name]
            self._changed(name)

    @property
    def spaces(self) -> dict[str, SpaceConfig]:
        """Configuration of every space, by name."""
        self._sync()
        return {name: space.config for name, space in self._spaces.items()}

    def info(self) -> dict[str, Any]:
        """Counts, index types and files per space: what ``mm-rag info`` prints."""
        self._sync()
        with self._lock.reading():
            return {
                "path": str(self.path),
                "generation": self._manifest["generation"],
                "read_only": self._read_only,
                "writer": self._write_lock.holder(),  # another process writing now: pid, since, command
                "records": self._catalog.count(),
                "keywords": self._keyword_settings(),
                "spaces": {
                    name: {
                        "dim": s.config.dim,
                        "metric": s.config.metric,
                        "index": s.config.index,
                        "model": s.config.model,
                        "built": s.spec,
                        "vectors": len(s),
                        "trained": s.index is not None,
                        "memory_mapped": s.mapped,
                        "segments": len(s.files.segments) if s.files is not None else 0,  # saved since the main part
                        "recent_vectors": len(s.recent),  # searched exactly beside the index until folded in
                        **({"on_disk_lists": True} if s.ondisk else {}),  # an index built by mm_rag.indexbuild
                        **({"sharded": True} if s.serving is not None else {}),
                    }
                    for name, s in self._spaces.items()
                },
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
        self._sync()
        with self._lock.reading():
            spaces = dict(self._spaces)  # the second thread takes no lock: one this thread holds would block it
        (metadata, ids), checked = both(lambda: _checked(records), lambda: _check(spaces, vectors, count), threaded)
        with self._writing():
            for name, (config, *_) in checked.items():
                space = self._space(name)
                if space.config != config:  # changed since (another process recreated it): check against it
                    checked[name] = (space.config, *space.check(vectors[name], count, "upsert"))
            with self._catalog_writes():
                existing = self._catalog.keys_of_ids(ids)
                if existing:
                    self._remove(np.fromiter(existing.values(), dtype=np.int64, count=len(existing)))
                keys = np.arange(self._next_key, self._next_key + count, dtype=np.int64)
                self._next_key += count  # spent even if the insert fails: a space may have seen them
                try:
                    with self._catalog.savepoint():  # a failure on either side takes the rows out again
                        both(
                            lambda: self._catalog.insert(keys, records, metadata),
                            lambda: self._add_vectors(keys, checked),
                            threaded,
                        )
                except BaseException:
                    for name in checked:
                        self._spaces[name].delete(keys)  # keys a space never took are ignored
                    raise
            for name in checked:
                self._changed(name)
            self._changed(None)
        return ids

    add = upsert  # re-adding an id replaces it, so adding and upserting are one operation

    def _add_vectors(self, keys: np.ndarray, checked: dict[str, _Checked]) -> None:
        """Normalise checked vectors and add them; on the second thread of a large add, where the copy's page
        faults (at times a 0.5 s wait for the kernel to compact memory into the huge pages NumPy asks for)
        overlap SQLite's work instead of delaying it."""
        for name, (_, array, squares) in checked.items():
            space = self._spaces[name]
            space.add(keys, space.normalised(array, squares))

    def delete(self, ids: Sequence[str]) -> int:
        """Delete records by id; unknown ids are ignored. Returns how many were deleted."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        if not self._write_lock.held:
            self._sync()
            if not self._catalog.keys_of_ids(ids):
                return 0  # nothing to delete: no need to wait for another process's write
        with self._writing(), self._catalog_writes():
            keys = self._catalog.keys_of_ids(ids)
            self._remove(np.fromiter(keys.values(), dtype=np.int64, count=len(keys)))
        return len(keys)

    def delete_doc(self, doc_id: str) -> int:
        """Delete every record of the source document `doc_id`. Returns how many were deleted."""
        if not self._write_lock.held:
            self._sync()
            if not len(self._catalog.keys_of_doc(doc_id)):
                return 0
        with self._writing(), self._catalog_writes():
            keys = self._catalog.keys_of_doc(doc_id)
            self._remove(keys)
        return len(keys)

    def clear(self) -> None:
        """Delete every record and vector; spaces and their configuration stay."""
        with self._writing():
            with self._catalog_writes():
                self._catalog.delete_all()
            for name, space in self._spaces.items():
                space.clear()
                self._changed(name)
            self._changed(None)

    def _remove(self, keys: np.ndarray) -> None:
        if not len(keys):
            return
        keys = np.sort(keys)
        self._catalog.delete_keys(keys)
        for name, space in self._spaces.items():
            if len(space.contains(keys)):
                space.delete(keys)
                self._changed(name)
        self._changed(None)

    def _changed(self, space: str | None) -> None:
        self._filter_cache.clear()
        if space is not None:
            self._dirty_spaces.add(space)
        self._unsaved = True

    def bulk_insert(self, records: Sequence[Record]) -> np.ndarray:
        """Insert records whose ids are new to the store, without vectors; returns their keys. For building a
        store from shards (`mm_rag.indexbuild`): it skips `upsert`'s lookup of existing ids, and the vectors
        come with `adopt_space`. Durable at the next `save`.

        Raises:
            InvalidInputError: an id already stored (the transaction then holds part of the batch: drop it).
        """
        metadata = encode_records(records)
        with self._writing():
            keys = np.arange(self._next_key, self._next_key + len(records), dtype=np.int64)
            try:
                with self._catalog_writes():
                    self._catalog.insert(keys, records, metadata)
            except sqlite3.IntegrityError as error:
                raise InvalidInputError(f"bulk load: a record id is already in the store: {error}") from error
            self._next_key += len(records)
            self._changed(None)
        return keys

    def adopt_space(self, config: SpaceConfig, files: SpaceFiles, spec: str) -> None:
        """Install a space whose `files` (keys of records from `bulk_insert`, their vectors, the Faiss index
        built as `spec`) were written into ``spaces/``, as `mm_rag.indexbuild` does; durable at the next `save`."""
        directory = self.path / SPACES_DIR
        keys = np.load(directory / files.keys, mmap_mode="r", allow_pickle=False)
        entry = SpaceEntry.describe(config, spec, directory, files, len(keys))
        with self._writing():
            self._spaces[config.name] = open_space(self.path, entry, None)
            self._adopted[config.name] = entry
            self._dirty_spaces.discard(config.name)
            self._changed(None)

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
        with self._lock.writing():
            self._space(space).shard(shards, gpus)
        return shards

    # --- reads ------------------------------------------------------------------------------------------
    def get(self, ids: Sequence[str]) -> list[Record]:
        """The stored records among `ids`, in the order asked; unknown ids are left out."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        self._sync()
        with self._lock.reading():
            found = self._catalog.records_by_ids(ids)
        return [found[i] for i in ids if i in found]

    def find(self, filter: Filter | None = None, limit: int | None = None) -> list[Record]:
        """Records matching `filter` (see `mm_rag.filters`; every record when None), oldest first, at most `limit`.

        Raises:
            FilterError: a malformed filter.
        """
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise InvalidInputError(f"find: limit must be a non-negative integer or None, got {limit!r}")
        check_filter(filter)
        self._sync()
        with self._lock.reading():
            keys = self._catalog.keys_of(*plan_filter(filter, self._catalog.count_rows))[:limit]
            found = self._catalog.records_by_keys(keys.tolist())
        return [found[key] for key in keys.tolist()]

    def vectors(self, space: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored (normalised, for cosine) vectors of `ids` in `space`, by id; ids without one are left out."""
        self._sync()
        with self._lock.reading():
            target = self._space(space)
            by_id = self._catalog.keys_of_ids(list(ids))
            keys, vectors = target.take(np.fromiter(by_id.values(), dtype=np.int64, count=len(by_id)))
        id_of = {key: i for i, key in by_id.items()}
        return {id_of[int(key)]: np.array(vector) for key, vector in zip(keys, vectors)}

    def count(self, space: str | None = None) -> int:
        """Number of records, or of vectors in `space`."""
        self._sync()
        with self._lock.reading():
            return self._catalog.count() if space is None else len(self._space(space))

    def __len__(self) -> int:
        return self.count()

    def __iter__(self) -> Iterator[Record]:
        """Every record, oldest key first (read page by page: safe on large stores)."""
        self._sync()
        return self._catalog.iter_records()

    def documents(self) -> dict[str, str | None]:
        """Every stored `doc_id` with the `content_hash` of its records (for incremental ingestion)."""
        self._sync()
        with self._lock.reading():
            return self._catalog.documents()

    def ids_with_hashes(self, hashes: Sequence[str]) -> set[str]:
        """Ids of stored records whose `content_hash` is one of `hashes` (for incremental ingestion)."""
        self._sync()
        with self._lock.reading():
            return self._catalog.ids_with_hashes(list(hashes))

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
        for attempt in range(2):
            self._sync()
            with self._lock.reading():
                target = self._space(space)
                count = len(vectors) if hasattr(vectors, "__len__") else 0
                if count == 0:
                    raise InvalidInputError("search: no query vectors given")
                queries = target.prepare(vectors, count, "search")
                allowed = None if filter is None else self._matching_keys(filter)
                scores, keys = target.search(queries, k, allowed)
                wanted = {int(key) for key in keys.ravel() if key >= 0}
                found = self._catalog.records_by_keys(wanted)
            if len(found) == len(wanted) or attempt:
                break
            # Another process committed between the check and the catalog read: records it deleted are gone
            # from the catalog but not yet from these spaces. Catch up and search again rather than come back short.
        return [
            [
                Hit(found[key], space, float(score), rank)
                for rank, (score, key) in enumerate(
                    (s, kk) for s, kk in zip(row_scores, row_keys.tolist()) if kk in found
                )
            ]
            for row_scores, row_keys in zip(scores, keys)
        ]

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
        self._sync()
        with self._lock.reading():
            target = None if space is None else self._space(space)
            wanted = k if target is None else 4 * k
            while True:
                rows = self._catalog.search_text(query, *condition, wanted)
                if target is None:
                    break
                inside = set(target.contains(np.fromiter((key for key, _ in rows), dtype=np.int64)).tolist())
                kept = [(key, score) for key, score in rows if key in inside]
                if len(kept) >= k or len(rows) < wanted:
                    rows = kept[:k]
                    break
                wanted *= 4
            found = self._catalog.records_by_keys([key for key, _ in rows])
        ranked = [(found[key], score) for key, score in rows if key in found]
        return [Hit(record, LEXICAL, float(score), rank) for rank, (record, score) in enumerate(ranked)]

    def keywords(self, query: str) -> Keywords:
        """The words of `query` that `search_text` matches, and those it leaves out as carrying no information:
        stop words of the store's keyword languages, and in larger stores words found in half the records."""
        self._sync()
        with self._lock.reading():
            return self._catalog.keywords(query)

    def state(self, name: str) -> Any:
        """The JSON value an application keeps with the store under `name` (None when there is none); e.g.
        ingestion remembers there the files that wait for a model (`mm_rag.ingestion.waiting`)."""
        self._sync()
        with self._lock.reading():
            return self._catalog.setting(_STATE_PREFIX + name)

    def put_state(self, name: str, value: Any) -> None:
        """Keep the JSON-serialisable `value` under `name`; durable at the next `save`, like any change."""
        with self._writing(), self._catalog_writes():
            self._catalog.put_setting(_STATE_PREFIX + name, value)
            self._changed(None)

    @property
    def keyword_settings(self) -> dict[str, Any]:
        """``{"stemming": "porter" | "none", "languages": [...]}``: how the keyword index reads words."""
        self._sync()
        return self._keyword_settings()

    def _keyword_settings(self) -> dict[str, Any]:
        return {"stemming": self._catalog.stemming(), "languages": list(self._catalog.keyword_languages())}

    def configure_keywords(self, *, stemming: Stemming | None = None, languages: Sequence[str] | None = None) -> None:
        """Change how the keyword index reads words; durable at the next `save`, like any change.

        Args:
            stemming: ``"porter"`` (English stemming over the Unicode tokenizer: "maps" finds "map") or
                ``"none"`` (words as written). Changing it indexes every record's text again.
            languages: Codes of `mm_rag.store.stopwords.STOP_WORDS` whose stop words are left out of queries.

        Raises:
            InvalidInputError: an unknown stemming or language.
        """
        if stemming is not None and stemming not in STEMMINGS:
            raise InvalidInputError(
                f"configure_keywords: unknown stemming {stemming!r}; expected one of {list(STEMMINGS)}"
            )
        if languages is not None:
            languages = [languages] if isinstance(languages, str) else list(languages)
            unknown = sorted(set(languages) - set(STOP_WORDS))
            if unknown:
                raise InvalidInputError(
                    f"configure_keywords: no stop words for language(s) {unknown}; known: {sorted(STOP_WORDS)}"
                )
        with self._writing(), self._catalog_writes():
            if stemming is not None and stemming != self._catalog.stemming():
                self._catalog.restem(stemming)
            if languages is not None:
                self._catalog.put_setting(KEYWORD_LANGUAGES, languages)
            self._changed(None)

    def _matching_keys(self, filter: Filter) -> np.ndarray:
        cache_key = canonical_filter(filter)
        keys = self._filter_cache.get(cache_key)
        if keys is None:
            keys = self._catalog.keys_of(*plan_filter(filter, self._catalog.count_rows))
            with self._filter_cache_lock:  # concurrent searches share the cache
                self._filter_cache[cache_key] = keys
                while len(self._filter_cache) > _FILTER_CACHE_SIZE:
                    self._filter_cache.popitem(last=False)
        return keys

    def _space(self, name: str) -> Space:
        return _lookup(self._spaces, name)

    def __repr__(self) -> str:
        return f"MultimodalStore({str(self.path)!r}, spaces={sorted(self._spaces)})"


# Application state lives beside the store's own settings, under names that cannot collide with them.
_STATE_PREFIX = "state:"


def _nothing_to_change(existing: SpaceConfig, wanted: SpaceConfig) -> bool:
    """Whether `create_space` with `wanted` would leave the space `existing` exactly as it is."""
    same = dataclasses.replace(existing, model=None) == dataclasses.replace(wanted, model=None)
    return same and (wanted.model is None or wanted.model == existing.model)


def _lookup(spaces: Mapping[str, Space], name: str) -> Space:
    try:
        return spaces[name]
    except KeyError:
        raise UnknownSpaceError(f"unknown space {name!r}; this store has {sorted(spaces)}") from None


# A space's configuration, and vectors checked against it with their squared norms (see `Space.check`).
_Checked = tuple[SpaceConfig, np.ndarray, np.ndarray]


def _check(spaces: Mapping[str, Space], vectors: Mapping[str, Any], count: int) -> dict[str, _Checked]:
    """Each space's vectors checked (not yet normalised), with the configuration they were checked against."""
    checked = {}
    for name, array in vectors.items():
        space = _lookup(spaces, name)
        checked[name] = (space.config, *space.check(array, count, "upsert"))
    return checked


def _checked(records: list[Record]) -> tuple[list[str], list[str]]:
    """The records' metadata as JSON and their ids, once every record is storable and no id repeats."""
    metadata = encode_records(records)
    ids = [record.id for record in records]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicate = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InvalidInputError(f"upsert: id {duplicate!r} appears more than once in one batch")
    return metadata, ids
