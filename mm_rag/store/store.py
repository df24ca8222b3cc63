"""`MultimodalStore`: records in a SQLite catalog, vectors in one Faiss index per embedding space."""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import sqlite3
import tempfile
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, Self

import numpy as np

from mm_rag.errors import (
    InvalidInputError,
    ReadOnlyStoreError,
    StoreFormatError,
    StoreLockedError,
    StoreWriteError,
    UnknownSpaceError,
)
from mm_rag.filters import Filter, canonical_filter, compile_filter
from mm_rag.records import LEXICAL, Hit, Record, encode_record
from mm_rag.store import indexing
from mm_rag.store.catalog import Catalog
from mm_rag.store.durable import fsync_path
from mm_rag.store.locking import ReadWriteLock, StoreWriteLock
from mm_rag.store.manifest import (
    CATALOG,
    MANIFEST,
    SPACES_DIR,
    WRITE_LOCK,
    check_format,
    empty_manifest,
    new_manifest,
    open_space,
    read_delta,
    read_json,
    space_entry,
    write_manifest_file,
)
from mm_rag.store.space import Space, SpaceConfig

__all__ = ["CATALOG", "DEFAULT_LOCK_TIMEOUT", "MANIFEST", "SPACES_DIR", "MultimodalStore"]

# How long a write waits for another process's write (its change and save) before `StoreLockedError`.
DEFAULT_LOCK_TIMEOUT = 60.0
_FILTER_CACHE_SIZE = 64
# A reader that finds the files of the manifest it just read already replaced by a newer commit reads again.
_OPEN_ATTEMPTS = 5


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

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        mmap: bool | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float)) or not lock_timeout >= 0:
            raise InvalidInputError(f"lock_timeout must be a non-negative number of seconds, got {lock_timeout!r}")
        self._temporary = path is None
        self.path = Path(tempfile.mkdtemp(prefix="mm-rag-store-") if path is None else path).resolve()
        if self._temporary:
            self._cleanup = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)
        self._read_only = self.path.is_dir() and not os.access(self.path, os.W_OK)
        if not self._read_only:
            try:
                (self.path / SPACES_DIR).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreFormatError(f"cannot create a store at {self.path}: {error}") from error
        self.lock_timeout = float(lock_timeout)
        self._lock = ReadWriteLock()
        self._write_lock = StoreWriteLock(self.path / WRITE_LOCK)
        self._writes = 0  # depth of nested `_writing` blocks: the write lock goes with the outermost
        self._sync_mutex = threading.Lock()
        self._acquiring = threading.Lock()
        self._behind = False  # holding the write lock, but not yet on the commit made before it was taken
        self._mmap = mmap
        self._filter_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._filter_cache_lock = threading.Lock()
        self._dirty_spaces: set[str] = set()
        self._adopted: dict[str, dict[str, Any]] = {}  # spaces built in place by mm_rag.indexbuild, until saved
        self._closed = False
        self._unsaved = False
        self._manifest = empty_manifest()
        self._next_key = 0
        self._spaces: dict[str, Space] = {}
        self._connect()
        try:
            self._catch_up()
        except BaseException:
            self._catalog.close()
            raise
        if not (self.path / MANIFEST).exists() and not self._read_only:
            self._write_manifest_file()

    def _connect(self) -> None:
        """Open the catalog; refuses a damaged store rather than overwrite it.

        The catalog's manifest is authoritative. A catalog without a committed manifest is a store that was
        never saved (or whose creation was interrupted) and starts empty, unless `mmrag.json` records a save.
        """
        manifest_file, catalog_file = self.path / MANIFEST, self.path / CATALOG
        saved_generation = 0
        if manifest_file.exists():
            described = read_json(manifest_file)
            check_format(described, manifest_file)
            saved_generation = described.get("generation", 0)
        if saved_generation and not catalog_file.is_file():  # else a new, empty catalog would replace the store
            raise StoreFormatError(f"{self.path} has {MANIFEST} but no {CATALOG}: the store is damaged")
        if self._read_only and not catalog_file.is_file():
            raise StoreFormatError(f"no mm-rag store at {self.path}, and the folder is read-only")
        try:
            self._catalog = Catalog(catalog_file, read_only=self._read_only)
            self._seen_version = self._catalog.data_version()
            manifest = self._catalog.setting("manifest")
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError):  # locked, unreadable…: not a damaged file
                raise
            raise StoreFormatError(f"{catalog_file} is damaged or not an SQLite catalog: {error}") from error
        if manifest is None and saved_generation:  # an emptied (e.g. zero-length) or replaced catalog
            self._catalog.close()
            raise StoreFormatError(
                f"{catalog_file} holds no manifest but {MANIFEST} records saved generation"
                f" {saved_generation}: the catalog is damaged"
            )

    def _committed(self) -> dict[str, Any]:
        """The manifest the catalog holds now (a new store's when none was committed yet)."""
        manifest = self._catalog.setting("manifest")
        if manifest is None:
            return empty_manifest()
        check_format(manifest, self.path / CATALOG)
        return manifest

    def _catch_up(self, discard: bool = False) -> bool:
        """Load the latest committed state when it is newer than this handle's; returns whether it was.

        Spaces whose files are unchanged (and that this handle has not changed) are kept as they are; the
        others are opened from their new files outside the thread locks, then swapped in at once, unless
        another thread of this process got there first. With `discard`, this handle's unsaved changes are
        dropped (the catalog's transaction must be rolled back already) and every changed space reopened.
        """
        for attempt in range(_OPEN_ATTEMPTS):
            version = self._catalog.data_version()  # before the manifest: a later commit is noticed next time
            manifest = self._committed()
            if manifest["generation"] == self._manifest["generation"] and not discard:
                self._seen_version = version
                return False
            kept = {
                name: space
                for name, space in self._spaces.items()
                if name not in self._dirty_spaces
                and name not in self._adopted
                and self._manifest["spaces"].get(name, {}).get("files") == manifest["spaces"].get(name, {}).get("files")
            }
            spaces: dict[str, Space] = {}
            deltas = {}
            try:
                for name, entry in manifest["spaces"].items():
                    if name in kept:
                        spaces[name] = kept[name]
                        continue
                    ours = None if discard else self._spaces.get(name)
                    delta = None if ours is None else read_delta(self.path, ours, entry, self._manifest["next_key"])
                    if delta is not None:
                        spaces[name], deltas[name] = ours, delta
                    else:
                        spaces[name] = open_space(self.path, name, entry, self._mmap)
            except StoreFormatError:
                if attempt + 1 == _OPEN_ATTEMPTS or self._committed()["generation"] == manifest["generation"]:
                    raise
                continue  # its files were replaced by a newer commit meanwhile: read that one
            with self._lock.writing():
                if not discard and (self._unsaved or manifest["generation"] <= self._manifest["generation"]):
                    return False  # another thread caught up meanwhile (and may have changed things since)
                for name, (gone, keys, vectors) in deltas.items():  # small: applied while searches wait
                    spaces[name].delete(gone)
                    spaces[name].add(keys, vectors)
                self._manifest = manifest
                self._next_key = int(manifest["next_key"])
                self._spaces = spaces
                self._dirty_spaces.clear()
                self._adopted.clear()
                self._filter_cache.clear()
                self._unsaved = False
                self._seen_version = version
            return True
        raise AssertionError("unreachable")

    def _sync(self) -> None:
        """Catch up with commits other processes made since this handle last looked (one pragma when none)."""
        if self._write_lock.held or self._closed or self._catalog.data_version() == self._seen_version:
            return  # a handle holding the write lock is the latest state: nobody else can commit
        with self._sync_mutex:  # one thread loads; the others wait for it rather than load the same files
            if not self._write_lock.held and self._catalog.data_version() != self._seen_version:
                self._catch_up()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Exclusive access for a change: the store's write lock on the latest commit, then the thread lock.

        The store's lock is awaited before the thread lock, so this process's searches go on meanwhile; it is
        taken by the outermost block and kept while there are unsaved changes.
        """
        while True:
            self._take_write_lock()
            with self._lock.writing():
                if not self._write_lock.held:  # another thread of this handle saved and let go meanwhile
                    continue
                if self._behind:
                    self._catch_up()  # cheap when the thread that took the lock has done it already
                    self._behind = False
                self._writes += 1
                try:
                    yield
                finally:
                    self._writes -= 1
                    if not self._writes and not self._unsaved:
                        self._write_lock.release()
                return

    def _take_write_lock(self) -> None:
        self._check_open()
        if self._write_lock.held:
            return
        with self._acquiring:  # one thread of this handle waits for the lock; the others wait for it
            if self._write_lock.held:
                return
            if self._read_only:
                raise ReadOnlyStoreError(
                    f"store {self.path} is read-only (its folder cannot be written): it can be searched but not changed"
                )
            self._write_lock.acquire(self.lock_timeout, self.path)
            self._behind = True
            try:
                self._catch_up()  # spaces load outside the thread lock: searches go on
            except BaseException:
                self._write_lock.release()
                raise
            self._behind = False

    @contextmanager
    def _catalog_writes(self) -> Iterator[None]:
        """Turn SQLite's write failures into our errors, and never keep changes SQLite rolled back."""
        try:
            yield
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):  # a writer that ignores write.lock holds SQLite's
                raise StoreLockedError(f"store {self.path}: the catalog is locked by another writer: {error}") from error
            full = getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            self._fail(f"writing the catalog failed: {error}", error, errno.ENOSPC if full else None)

    def _fail(self, what: str, error: BaseException, errno_: int | None = None) -> NoReturn:
        """Raise `StoreWriteError`; if SQLite rolled the transaction back, first drop the unsaved changes it held."""
        lost = self._unsaved and not self._catalog.dirty
        generation = self._manifest["generation"]
        if lost:
            self._discard()
        if lost:
            kept = (
                "this handle's unsaved changes were lost with the transaction SQLite rolled back, and it shows"
                f" generation {generation} again: apply them again"
            )
        elif self._unsaved:
            kept = "the unsaved changes are kept: save again once the cause is fixed"
        else:
            kept = "nothing was changed"
        failure = StoreWriteError(f"store {self.path}: {what}; the last commit (generation {generation}) is intact; {kept}")
        failure.errno = errno_ if errno_ is not None else getattr(error, "errno", None)
        raise failure from error

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInputError(f"store {self.path} is closed")

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
        adopted. Raises `InvalidInputError` for a bad configuration, or one that differs from an existing
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
                if model is not None and recorded is not None and model != recorded:
                    raise InvalidInputError(
                        f"space {name!r} holds vectors of the model {recorded}, not of {model}:"
                        " use that model, or another space"
                    )
                if model is not None and recorded is None:
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
                "spaces": {
                    name: {
                        "dim": s.config.dim,
                        "metric": s.config.metric,
                        "index": s.config.index,
                        "model": s.config.model,
                        "built": s.spec,
                        "vectors": len(s.table),
                        "trained": s.index is not None,
                        "memory_mapped": s.mapped,
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
        metadata = [encode_record(record) for record in records]
        ids = [record.id for record in records]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            duplicate = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise InvalidInputError(f"upsert: id {duplicate!r} appears more than once in one batch")
        with self._writing():
            prepared = {
                name: self._space(name).prepare(array, len(records), "upsert")
                for name, array in (vectors or {}).items()
            }
            with self._catalog_writes():
                existing = self._catalog.keys_of_ids(ids)
                if existing:
                    self._remove(np.fromiter(existing.values(), dtype=np.int64, count=len(existing)))
                keys = np.arange(self._next_key, self._next_key + len(records), dtype=np.int64)
                self._catalog.insert(keys, records, metadata)
            self._next_key += len(records)
            for name, array in prepared.items():
                self._spaces[name].add(keys, array)
                self._changed(name)
            self._changed(None)
        return ids

    add = upsert  # re-adding an id replaces it, so adding and upserting are one operation

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
            if len(space.table.contains(keys)):
                space.delete(keys)
                self._changed(name)
        self._changed(None)

    def _changed(self, space: str | None) -> None:
        self._filter_cache.clear()
        if space is not None:
            self._dirty_spaces.add(space)
        self._unsaved = True

    def _append_records(self, records: Sequence[Record]) -> np.ndarray:
        """Insert records whose ids are new to the store, without vectors; returns their keys (bulk loading
        for `mm_rag.indexbuild`, which skips the per-batch lookup of existing ids).

        Raises:
            InvalidInputError: an id already stored (the transaction then holds part of the batch: drop it).
        """
        metadata = [encode_record(record) for record in records]
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

    def _adopt_space(self, config: SpaceConfig, files: list[str], spec: str) -> None:
        """Install a space whose files `mm_rag.indexbuild` wrote into ``spaces/``; durable at the next `save`."""
        directory = self.path / SPACES_DIR
        keys = np.load(directory / files[0], mmap_mode="r", allow_pickle=False)
        entry = space_entry(config, spec, directory, files, len(keys))
        with self._writing():
            self._spaces[config.name] = open_space(self.path, config.name, entry, None)
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
        condition = compile_filter(filter)
        self._sync()
        with self._lock.reading():
            keys = self._catalog.matching_keys(*condition)[:limit]
            found = self._catalog.records_by_keys(keys.tolist())
        return [found[key] for key in keys.tolist()]

    def vectors(self, space: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored (normalised, for cosine) vectors of `ids` in `space`, by id; ids without one are left out."""
        self._sync()
        with self._lock.reading():
            table = self._space(space).table
            by_id = self._catalog.keys_of_ids(list(ids))
            keys, vectors = table.take(np.fromiter(by_id.values(), dtype=np.int64, count=len(by_id)))
        id_of = {key: i for i, key in by_id.items()}
        return {id_of[int(key)]: np.array(vector) for key, vector in zip(keys, vectors)}

    def count(self, space: str | None = None) -> int:
        """Number of records, or of vectors in `space`."""
        self._sync()
        with self._lock.reading():
            return self._catalog.count() if space is None else len(self._space(space).table)

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

    @property
    def temporary(self) -> bool:
        """Whether this store lives in a temporary directory deleted on `close` (nothing to `save` in place)."""
        return self._temporary

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

    def search_batch(
        self, space: str, vectors: Any, k: int = 10, filter: Filter | None = None
    ) -> list[list[Hit]]:
        """`search` for several query vectors at once (one list of hits per query)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InvalidInputError(f"search: k must be a positive integer, got {k!r}")
        condition = None if filter is None else compile_filter(filter)
        for attempt in range(2):
            self._sync()
            with self._lock.reading():
                target = self._space(space)
                count = len(vectors) if hasattr(vectors, "__len__") else 0
                if count == 0:
                    raise InvalidInputError("search: no query vectors given")
                queries = target.prepare(vectors, count, "search")
                allowed = None if condition is None else self._matching_keys(filter, condition)
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
                for rank, (score, key) in enumerate((s, kk) for s, kk in zip(row_scores, row_keys.tolist()) if kk in found)
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
            table = None if space is None else self._space(space).table
            wanted = k if table is None else 4 * k
            while True:
                rows = self._catalog.search_text(query, *condition, wanted)
                if table is None:
                    break
                inside = set(table.contains(np.fromiter((key for key, _ in rows), dtype=np.int64)).tolist())
                kept = [(key, score) for key, score in rows if key in inside]
                if len(kept) >= k or len(rows) < wanted:
                    rows = kept[:k]
                    break
                wanted *= 4
            found = self._catalog.records_by_keys([key for key, _ in rows])
        ranked = [(found[key], score) for key, score in rows if key in found]
        return [Hit(record, LEXICAL, float(score), rank) for rank, (record, score) in enumerate(ranked)]

    def _matching_keys(self, filter: Filter, condition: tuple[str, list[Any]]) -> np.ndarray:
        cache_key = canonical_filter(filter)
        keys = self._filter_cache.get(cache_key)
        if keys is None:
            keys = self._catalog.matching_keys(*condition)
            with self._filter_cache_lock:  # concurrent searches share the cache
                self._filter_cache[cache_key] = keys
                while len(self._filter_cache) > _FILTER_CACHE_SIZE:
                    self._filter_cache.popitem(last=False)
        return keys

    def _space(self, name: str) -> Space:
        try:
            return self._spaces[name]
        except KeyError:
            raise UnknownSpaceError(f"unknown space {name!r}; this store has {sorted(self._spaces)}") from None

    # --- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Make every change durable, atomically, and let other writers in; with `path`, also write a copy there.

        A temporary store needs `path`. The copy's directory must not exist yet or be empty. Without unsaved
        changes nothing is written in place.

        Raises:
            StoreWriteError: the save failed (disk full, I/O error…): the last commit is intact, and the
                message says whether this handle's changes are kept for another `save`.
        """
        if path is None and self._temporary:
            raise InvalidInputError("save: this is a temporary store; pass a path to save it to")
        copy = path is not None and Path(path).resolve() != self.path
        if not self._unsaved and not copy:
            return
        if self._read_only and not self._unsaved:
            with self._lock.reading():  # nobody can change a read-only store: the committed files stay
                self._copy_to(Path(path))  # type: ignore[arg-type]
            return
        with self._writing():  # the write lock also keeps the committed files in place while they are copied
            if self._unsaved:
                self._commit()
            if copy:
                self._copy_to(Path(path))  # type: ignore[arg-type]

    def rollback(self) -> None:
        """Drop the changes not saved yet and show the latest committed state (this process's or another's)."""
        with self._lock.writing():
            self._check_open()
            if self._unsaved:
                self._discard()
            if not self._writes:
                self._write_lock.release()

    def _discard(self) -> None:
        self._catalog.rollback()
        self._catch_up(discard=True)

    def _commit(self) -> None:
        base = self._manifest["generation"]
        generation = base + 1
        spaces_dir = self.path / SPACES_DIR
        with self._catalog_writes():
            self._catalog.begin()  # SQLite's write lock, from this check to the commit
            theirs = self._committed()["generation"]
        if theirs != base:  # only a writer that ignores write.lock (an old mm-rag, a file system without locks)
            self._discard()
            raise StoreWriteError(
                f"store {self.path}: generation {theirs} was committed by a writer that did not hold the store's"
                f" lock, after this handle loaded generation {base}; nothing was overwritten, and this handle's"
                " unsaved changes were dropped: apply them again"
            )
        entries = dict(self._manifest["spaces"])
        entries.update(self._adopted)
        for name in list(entries):
            if name not in self._spaces:
                del entries[name]
        try:
            for name in sorted(self._dirty_spaces & set(self._spaces)):
                space = self._spaces[name]
                files = space.write(spaces_dir, f"{name}.{generation}")
                entries[name] = space_entry(space.config, space.spec, spaces_dir, files, len(space.table))
            fsync_path(spaces_dir)
            manifest = new_manifest(generation, self._next_key, entries)
            with self._catalog_writes():
                self._catalog.put_setting("manifest", manifest)
                self._catalog.commit()  # the commit point: before it the old state, after it the new one
        except StoreWriteError:
            self._remove_files_of(generation)
            raise
        except (OSError, RuntimeError, MemoryError) as error:  # Faiss reports failed writes as RuntimeError
            self._remove_files_of(generation)
            code = getattr(error, "errno", None) or (errno.ENOSPC if "No space left" in str(error) else None)
            self._fail(f"saving generation {generation} failed: {error}", error, code)
        self._manifest = manifest
        self._dirty_spaces.clear()
        self._adopted.clear()
        self._unsaved = False
        try:  # the commit stands: what follows only tidies, and a failure here loses nothing
            self._write_manifest_file()
            referenced = {file for entry in entries.values() for file in entry["files"]}
            for file in spaces_dir.iterdir():
                if file.name not in referenced:
                    file.unlink(missing_ok=True)
            self._catalog.checkpoint()
        except (OSError, sqlite3.Error) as error:
            warnings.warn(f"store {self.path}: generation {generation} is saved, but tidying up failed: {error}", stacklevel=3)

    def _remove_files_of(self, generation: int) -> None:
        """Remove what a failed save wrote: files named after its generation, which no commit references."""
        for file in (self.path / SPACES_DIR).glob(f"*.{generation}.*"):
            file.unlink(missing_ok=True)

    def _write_manifest_file(self) -> None:
        write_manifest_file(self.path, self._manifest)

    def _copy_to(self, target: Path) -> None:
        if target.exists() and any(target.iterdir()):
            raise InvalidInputError(f"save: {target} exists and is not empty")
        staging = Path(tempfile.mkdtemp(prefix=".mm-rag-copy-", dir=target.parent if target.parent.exists() else None))
        (staging / SPACES_DIR).mkdir()
        self._catalog.backup_to(staging / CATALOG)
        for entry in self._manifest["spaces"].values():
            for file in entry["files"]:
                shutil.copyfile(self.path / SPACES_DIR / file, staging / SPACES_DIR / file)
        write_manifest_file(staging, self._manifest)
        if target.exists():
            target.rmdir()
        shutil.move(str(staging), str(target))

    @property
    def unsaved(self) -> bool:
        """Whether there are changes that `save` has not made durable yet."""
        return self._unsaved

    @property
    def read_only(self) -> bool:
        """Whether the store's folder cannot be written: searches work, changes raise `ReadOnlyStoreError`."""
        return self._read_only

    def close(self) -> None:
        """Release the store. Unsaved changes are dropped (with a warning); a temporary store is deleted."""
        if self._closed:
            return
        with self._lock.writing():
            if self.unsaved and not self._temporary:
                warnings.warn(f"closing store {self.path} with unsaved changes; call save() to keep them", stacklevel=2)
            self._catalog.close()
            self._write_lock.release()
            self._closed = True
        if self._temporary:
            self._cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MultimodalStore({str(self.path)!r}, spaces={sorted(self._spaces)})"



def _nothing_to_change(existing: SpaceConfig, wanted: SpaceConfig) -> bool:
    """Whether `create_space` with `wanted` would leave the space `existing` exactly as it is."""
    same = dataclasses.replace(existing, model=None) == dataclasses.replace(wanted, model=None)
    return same and (wanted.model is None or wanted.model == existing.model)
