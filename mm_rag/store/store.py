"""`MultimodalStore`: records in a SQLite catalog, vectors in one Faiss index per embedding space."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from mm_rag.errors import InvalidInputError, StoreFormatError, UnknownSpaceError
from mm_rag.filters import Filter, canonical_filter, compile_filter
from mm_rag.records import Hit, Record, encode_record
from mm_rag.store import indexing
from mm_rag.store.catalog import Catalog
from mm_rag.store.durable import fsync_path, write_atomically
from mm_rag.store.locking import ReadWriteLock
from mm_rag.store.space import Space, SpaceConfig

FORMAT = "mm-rag-store"
FORMAT_VERSION = 1
MANIFEST = "mmrag.json"
CATALOG = "catalog.sqlite"
SPACES_DIR = "spaces"
# Index files at least this large open memory-mapped unless the caller says otherwise.
MMAP_THRESHOLD = 256 * 2**20
_FILTER_CACHE_SIZE = 64


class MultimodalStore:
    """A directory-backed store of records with one Faiss index per embedding space.

    ``MultimodalStore()`` is a temporary store, deleted on `close`; ``MultimodalStore(path)`` opens the store
    at `path`, creating it when the directory holds none; `MultimodalStore.open` opens only an existing one.

    Changes are visible to searches at once and become durable at `save`, which is atomic: a crash at any
    moment leaves the previously saved state. Many threads may search while one writes.

    Layout of the directory (see `mmrag.json` inside for what each file is)::

        mmrag.json                  manifest: format version, spaces, files, library versions
        catalog.sqlite              records, metadata, keys (WAL mode); holds the authoritative manifest
        spaces/<space>.<gen>.faiss  the space's Faiss index (absent while an IVF/PQ index awaits training)
        spaces/<space>.<gen>.keys.npy, .vectors.npy   exact vectors of the space, keyed like the index
        spaces/<space>.<gen>.ivfdata  on-disk inverted lists of an IVF index built by `mm_rag.indexbuild`
                                    (mapped read-only; copied into memory at the space's first change)
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, mmap: bool | None = None) -> None:
        self._temporary = path is None
        self.path = Path(tempfile.mkdtemp(prefix="mm-rag-store-") if path is None else path).resolve()
        if self._temporary:
            self._cleanup = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)
        try:
            (self.path / SPACES_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreFormatError(f"cannot create a store at {self.path}: {error}") from error
        self._lock = ReadWriteLock()
        self._filter_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._dirty_spaces: set[str] = set()
        self._adopted: dict[str, dict[str, Any]] = {}  # spaces built in place by mm_rag.indexbuild, until saved
        self._closed = False
        self._unsaved = False
        self._filter_cache_lock = threading.Lock()
        manifest = self._load_manifest()
        self._manifest = manifest
        self._next_key = int(manifest["next_key"])
        self._spaces: dict[str, Space] = {}
        for name, entry in manifest["spaces"].items():
            self._spaces[name] = self._open_space(name, entry, mmap)
        if not (self.path / MANIFEST).exists():
            self._write_manifest_file()

    def _load_manifest(self) -> dict[str, Any]:
        """The committed manifest (a new store's when none); refuses a damaged store rather than overwrite it.

        The catalog's copy is authoritative. A catalog without a committed manifest is a store that was never
        saved (or whose creation was interrupted) and starts empty, unless `mmrag.json` records a save.
        """
        manifest_file, catalog_file = self.path / MANIFEST, self.path / CATALOG
        saved_generation = 0
        if manifest_file.exists():
            described = _read_json(manifest_file)
            _check_format(described, manifest_file)
            saved_generation = described.get("generation", 0)
        if saved_generation and not catalog_file.is_file():  # else a new, empty catalog would replace the store
            raise StoreFormatError(f"{self.path} has {MANIFEST} but no {CATALOG}: the store is damaged")
        try:
            self._catalog = Catalog(catalog_file)
            manifest = self._catalog.setting("manifest")
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError):  # locked, unreadable…: not a damaged file
                raise
            raise StoreFormatError(f"{catalog_file} is damaged or not an SQLite catalog: {error}") from error
        if manifest is None:
            if saved_generation:  # an emptied (e.g. zero-length) or replaced catalog would lose every record
                self._catalog.close()
                raise StoreFormatError(
                    f"{catalog_file} holds no manifest but {MANIFEST} records saved generation"
                    f" {saved_generation}: the catalog is damaged"
                )
            return {"format": FORMAT, "format_version": FORMAT_VERSION, "generation": 0, "next_key": 0, "spaces": {}}
        _check_format(manifest, catalog_file)
        return manifest

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, mmap: bool | None = None) -> MultimodalStore:
        """Open the existing store at `path`; raises `StoreFormatError` when there is none.

        Args:
            mmap: memory-map index and vector files (``None``: only those over 256 MiB, and always the
                on-disk inverted lists of an index built by `mm_rag.indexbuild`). A mapped space is read into
                memory before its first change (on-disk lists are copied, keeping the trained quantizer).
        """
        if not (Path(path) / MANIFEST).is_file():
            raise StoreFormatError(f"no mm-rag store at {path} (missing {MANIFEST})")
        return cls(path, mmap=mmap)

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
        with self._lock.writing():
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
        with self._lock.writing():
            self._space(name)
            del self._spaces[name]
            self._changed(name)

    @property
    def spaces(self) -> dict[str, SpaceConfig]:
        """Configuration of every space, by name."""
        return {name: space.config for name, space in self._spaces.items()}

    def info(self) -> dict[str, Any]:
        """Counts, index types and files per space: what ``mm-rag info`` prints."""
        with self._lock.reading():
            return {
                "path": str(self.path),
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
        with self._lock.writing():
            prepared = {
                name: self._space(name).prepare(array, len(records), "upsert")
                for name, array in (vectors or {}).items()
            }
            existing = self._catalog.keys_of_ids(ids)
            if existing:
                self._remove(np.fromiter(existing.values(), dtype=np.int64, count=len(existing)))
            keys = np.arange(self._next_key, self._next_key + len(records), dtype=np.int64)
            self._next_key += len(records)
            self._catalog.insert(keys, records, metadata)
            for name, array in prepared.items():
                self._spaces[name].add(keys, array)
                self._changed(name)
            self._changed(None)
        return ids

    add = upsert  # re-adding an id replaces it, so adding and upserting are one operation

    def delete(self, ids: Sequence[str]) -> int:
        """Delete records by id; unknown ids are ignored. Returns how many were deleted."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        with self._lock.writing():
            keys = self._catalog.keys_of_ids(ids)
            self._remove(np.fromiter(keys.values(), dtype=np.int64, count=len(keys)))
        return len(keys)

    def delete_doc(self, doc_id: str) -> int:
        """Delete every record of the source document `doc_id`. Returns how many were deleted."""
        with self._lock.writing():
            keys = self._catalog.keys_of_doc(doc_id)
            self._remove(keys)
        return len(keys)

    def clear(self) -> None:
        """Delete every record and vector; spaces and their configuration stay."""
        with self._lock.writing():
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
        with self._lock.writing():
            keys = np.arange(self._next_key, self._next_key + len(records), dtype=np.int64)
            try:
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
        entry = {
            "dim": config.dim,
            "metric": config.metric,
            "index": config.index,
            "memory_budget": config.memory_budget,
            "model": config.model,
            "built": spec,
            "files": files,
            "sizes": [(directory / file).stat().st_size for file in files],
            "vectors": len(keys),
        }
        with self._lock.writing():
            self._spaces[config.name] = self._open_space(config.name, entry, None)
            self._adopted[config.name] = entry
            self._dirty_spaces.discard(config.name)
            self._changed(None)

    def shard(self, space: str, shards: int | None = None, *, gpus: bool = False) -> int:
        """Serve `space` through a threaded `faiss.IndexShards` until its next change; returns the shard count.

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
        with self._lock.reading():
            keys = self._catalog.matching_keys(*condition)[:limit]
            found = self._catalog.records_by_keys(keys.tolist())
        return [found[key] for key in keys.tolist()]

    def vectors(self, space: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored (normalised, for cosine) vectors of `ids` in `space`, by id; ids without one are left out."""
        with self._lock.reading():
            table = self._space(space).table
            by_id = self._catalog.keys_of_ids(list(ids))
            keys, vectors = table.take(np.fromiter(by_id.values(), dtype=np.int64, count=len(by_id)))
        id_of = {key: i for i, key in by_id.items()}
        return {id_of[int(key)]: np.array(vector) for key, vector in zip(keys, vectors)}

    def count(self, space: str | None = None) -> int:
        """Number of records, or of vectors in `space`."""
        with self._lock.reading():
            return self._catalog.count() if space is None else len(self._space(space).table)

    def __len__(self) -> int:
        return self.count()

    def __iter__(self) -> Iterator[Record]:
        """Every record, oldest key first (read page by page: safe on large stores)."""
        return self._catalog.iter_records()

    def documents(self) -> dict[str, str | None]:
        """Every stored `doc_id` with the `content_hash` of its records (for incremental ingestion)."""
        with self._lock.reading():
            return self._catalog.documents()

    @property
    def temporary(self) -> bool:
        """Whether this store lives in a temporary directory deleted on `close` (nothing to `save` in place)."""
        return self._temporary

    def ids_with_hashes(self, hashes: Sequence[str]) -> set[str]:
        """Ids of stored records whose `content_hash` is one of `hashes` (for incremental ingestion)."""
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
        with self._lock.reading():
            target = self._space(space)
            count = len(vectors) if hasattr(vectors, "__len__") else 0
            if count == 0:
                raise InvalidInputError("search: no query vectors given")
            queries = target.prepare(vectors, count, "search")
            allowed = None if condition is None else self._matching_keys(filter, condition)
            scores, keys = target.search(queries, k, allowed)
            found = self._catalog.records_by_keys({int(key) for key in keys.ravel() if key >= 0})
        return [
            [
                Hit(found[key], space, float(score), rank)
                for rank, (score, key) in enumerate((s, kk) for s, kk in zip(row_scores, row_keys.tolist()) if kk in found)
            ]
            for row_scores, row_keys in zip(scores, keys)
        ]

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
        """Make every change durable, atomically; with `path`, also write a copy of the store there.

        A temporary store needs `path`. The copy's directory must not exist yet or be empty.
        """
        if path is None and self._temporary:
            raise InvalidInputError("save: this is a temporary store; pass a path to save it to")
        with self._lock.writing():
            self._commit()
            if path is not None and Path(path).resolve() != self.path:
                self._copy_to(Path(path))

    def _commit(self) -> None:
        generation = self._manifest["generation"] + 1
        spaces_dir = self.path / SPACES_DIR
        entries = dict(self._manifest["spaces"])
        entries.update(self._adopted)
        for name in list(entries):
            if name not in self._spaces:
                del entries[name]
        for name in sorted(self._dirty_spaces & set(self._spaces)):
            space = self._spaces[name]
            files = space.write(spaces_dir, f"{name}.{generation}")
            entries[name] = {
                "dim": space.config.dim,
                "metric": space.config.metric,
                "index": space.config.index,
                "memory_budget": space.config.memory_budget,
                "model": space.config.model,
                "built": space.spec,
                "files": files,
                "sizes": [(spaces_dir / file).stat().st_size for file in files],
                "vectors": len(space.table),
            }
        fsync_path(spaces_dir)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "generation": generation,
            "next_key": self._next_key,
            "spaces": entries,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": _library_versions(),
        }
        self._catalog.put_setting("manifest", manifest)
        self._catalog.commit()  # the commit point: before it the old state, after it the new one
        self._manifest = manifest
        self._dirty_spaces.clear()
        self._adopted.clear()
        self._unsaved = False
        self._write_manifest_file()
        referenced = {file for entry in entries.values() for file in entry["files"]}
        for file in spaces_dir.iterdir():
            if file.name not in referenced:
                file.unlink(missing_ok=True)
        self._catalog.checkpoint()

    def _write_manifest_file(self) -> None:
        """The human-readable copy of the manifest (the catalog's copy is the authoritative one)."""
        described = dict(self._manifest, files={CATALOG: "SQLite catalog: records, metadata, keys, manifest"})
        write_atomically(self.path / MANIFEST, json.dumps(described, indent=2).encode())

    def _copy_to(self, target: Path) -> None:
        if target.exists() and any(target.iterdir()):
            raise InvalidInputError(f"save: {target} exists and is not empty")
        staging = Path(tempfile.mkdtemp(prefix=".mm-rag-copy-", dir=target.parent if target.parent.exists() else None))
        (staging / SPACES_DIR).mkdir()
        self._catalog.backup_to(staging / CATALOG)
        for entry in self._manifest["spaces"].values():
            for file in entry["files"]:
                shutil.copyfile(self.path / SPACES_DIR / file, staging / SPACES_DIR / file)
        shutil.copyfile(self.path / MANIFEST, staging / MANIFEST)
        if target.exists():
            target.rmdir()
        shutil.move(str(staging), str(target))

    def _open_space(self, name: str, entry: dict[str, Any], mmap: bool | None) -> Space:
        config = SpaceConfig(name, entry["dim"], entry["metric"], entry["index"], entry["memory_budget"], entry.get("model"))
        directory = self.path / SPACES_DIR
        files = entry["files"]
        missing = [file for file in files if not (directory / file).is_file()]
        if missing:
            raise StoreFormatError(f"store {self.path}: space {name!r} is missing {missing}")
        sizes = [(directory / file).stat().st_size for file in files]
        if "sizes" in entry and sizes != entry["sizes"]:
            raise StoreFormatError(
                f"store {self.path}: space {name!r}: files {files} have sizes {sizes}, not the saved"
                f" {entry['sizes']}: truncated or modified"
            )
        if mmap is None:  # on-disk inverted lists (a fourth file) are always mapped unless mmap=False
            mmap = len(files) > 3 or sum(sizes) >= MMAP_THRESHOLD
        try:
            space = Space.read(config, directory, files, entry.get("built"), mmap)
        except (ValueError, RuntimeError, EOFError) as error:  # np.load raises EOFError on an empty file
            raise StoreFormatError(f"store {self.path}: cannot read space {name!r}: {error}") from error
        index = space.index
        if index is not None and (index.d != config.dim or index.ntotal != len(space.table) + len(space.tombstones)):
            raise StoreFormatError(
                f"store {self.path}: space {name!r}: its index (dim {index.d}, {index.ntotal} vectors) does not"
                f" match its vectors (dim {config.dim}, {len(space.table)} vectors)"
            )
        return space

    @property
    def unsaved(self) -> bool:
        """Whether there are changes that `save` has not made durable yet."""
        return self._unsaved

    def close(self) -> None:
        """Release the store. Unsaved changes are dropped (with a warning); a temporary store is deleted."""
        if self._closed:
            return
        with self._lock.writing():
            if self.unsaved and not self._temporary:
                warnings.warn(f"closing store {self.path} with unsaved changes; call save() to keep them", stacklevel=2)
            self._catalog.close()
            self._closed = True
        if self._temporary:
            self._cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MultimodalStore({str(self.path)!r}, spaces={sorted(self._spaces)})"


def _check_format(manifest: Any, where: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreFormatError(f"{where} is not an mm-rag store manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise StoreFormatError(
            f"{where} has store format version {version!r}; this mm-rag reads version {FORMAT_VERSION}"
            + (" (upgrade mm-rag)" if isinstance(version, int) and version > FORMAT_VERSION else "")
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise StoreFormatError(f"cannot read {path}: {error}") from error


def _library_versions() -> dict[str, str]:
    import faiss

    from mm_rag import __version__

    return {"mm_rag": __version__, "faiss": faiss.__version__, "numpy": np.__version__}
