"""A store directory shared by processes: its committed generations, the write lock, catching up, saving.

`Generations` holds what a handle of a store directory shares with the others through the files: the catalog
connection, the manifest of the generation this handle shows, the spaces of that generation with this handle's
unsaved changes, and the inter-process write lock. `mm_rag.store.store.MultimodalStore` is the records-and-
vectors API composed of it; the rules of who may write and who sees what are in its documentation.

The interface: read `spaces`, `catalog` and `manifest` under ``lock.reading()`` after `sync`; change them only
inside `writing` (the write lock, then the thread lock), through `put_space`, `remove_space`, `adopt`,
`take_keys` and the catalog's writes, each change announced with `changed`; `save` commits them. `edition`
counts what searches can see change (a change here, or a commit loaded from another process), for caches.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import tempfile
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from mm_rag.errors import (
    InvalidInputError,
    ReadOnlyStoreError,
    StoreFormatError,
    StoreLockedError,
    StoreWriteError,
)
from mm_rag.store import segments
from mm_rag.store.durable import fsync_path
from mm_rag.store.locking import ReadWriteLock, StoreWriteLock
from mm_rag.store.manifest import (
    CATALOG,
    MANIFEST,
    SPACES_DIR,
    WRITE_LOCK,
    SpaceEntry,
    SpaceFiles,
    check_format,
    copy_store,
    empty_manifest,
    new_manifest,
    open_catalog,
    remove_unreferenced,
    write_manifest_file,
)
from mm_rag.store.space import Space

# How long a write waits for another process's write (its change and save) before `StoreLockedError`.
DEFAULT_LOCK_TIMEOUT = 60.0
# A reader that finds the files of the manifest it just read already replaced by a newer commit reads again.
_OPEN_ATTEMPTS = 5


class Generations:
    """The committed state of a store directory as one handle sees it, its unsaved changes, and the rules for
    changing it.

    See `MultimodalStore` for the arguments and the model: one writer at a time across processes (the write
    lock from a handle's first change to its save), every read first catching up with newer commits.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        mmap: bool | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self.lock_timeout = lock_seconds(lock_timeout)
        self.temporary = path is None
        self.path = Path(tempfile.mkdtemp(prefix="mm-rag-store-") if path is None else path).resolve()
        if self.temporary:
            self._cleanup = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)
        self.read_only = self.path.is_dir() and not os.access(self.path, os.W_OK)
        if not self.read_only:
            try:
                (self.path / SPACES_DIR).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreFormatError(f"cannot create a store at {self.path}: {error}") from error
        self.lock = ReadWriteLock()
        self.write_lock = StoreWriteLock(self.path / WRITE_LOCK)
        self._writes = 0  # depth of nested `exclusive` blocks: the write lock goes with the outermost
        # This handle's writing thread (re-entrant: blocks nest). Separate from `lock` so that a save can write
        # its files while searches go on, and no other thread of this handle changes what is being written.
        self._writer = threading.RLock()
        self._sync_mutex = threading.Lock()
        self._acquiring = threading.Lock()
        self._behind = False  # holding the write lock, but not yet on the commit made before it was taken
        self._mmap = mmap
        self.edition = 0  # grows whenever what a search sees may have changed
        self._dirty_spaces: set[str] = set()
        self._adopted: dict[str, SpaceEntry] = {}  # spaces built in place by mm_rag.indexbuild, until saved
        self._closed = False
        self.unsaved = False
        self.manifest = empty_manifest()
        self._next_key = 0
        self.spaces: dict[str, Space] = {}
        self.catalog = open_catalog(self.path, self.read_only)
        self._seen_version = self.catalog.data_version()
        try:
            self._catch_up()
        except BaseException:
            self.catalog.close()
            raise
        if not (self.path / MANIFEST).exists() and not self.read_only:
            write_manifest_file(self.path, self.manifest)

    def _committed(self) -> dict[str, Any]:
        """The manifest the catalog holds now (a new store's when none was committed yet)."""
        manifest = self.catalog.setting("manifest")
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
            version = self.catalog.data_version()  # before the manifest: a later commit is noticed next time
            manifest = self._committed()
            if manifest["generation"] == self.manifest["generation"] and not discard:
                self._seen_version = version
                return False
            entries = _entries(manifest)
            kept = {
                name: space
                for name, space in self.spaces.items()
                if name not in self._dirty_spaces
                and name not in self._adopted
                and name in entries
                and space.files == entries[name].files
                and (space.config, space.spec) == (entries[name].config, entries[name].built)
            }
            spaces: dict[str, Space] = {}
            changes = {}
            try:
                for name, entry in entries.items():
                    if name in kept:
                        spaces[name] = kept[name]
                        continue
                    ours = None if discard else self.spaces.get(name)
                    change = None if ours is None else segments.read_changes(self.path, ours, entry, self._mmap)
                    if change is not None:
                        spaces[name], changes[name] = ours, change
                    else:
                        spaces[name] = segments.open_space(self.path, entry, self._mmap)
            except StoreFormatError:
                if attempt + 1 == _OPEN_ATTEMPTS or self._committed()["generation"] == manifest["generation"]:
                    raise
                continue  # its files were replaced by a newer commit meanwhile: read that one
            with self.lock.writing():
                if not discard and (self.unsaved or manifest["generation"] <= self.manifest["generation"]):
                    return False  # another thread caught up meanwhile (and may have changed things since)
                for name, change in changes.items():  # what a commit wrote: applied while searches wait
                    segments.apply(spaces[name], change)
                self.manifest = manifest
                self._next_key = int(manifest["next_key"])
                self.spaces = spaces
                self._dirty_spaces.clear()
                self._adopted.clear()
                self.edition += 1
                self.unsaved = False
                self._seen_version = version
            return True
        raise AssertionError("unreachable")

    def sync(self) -> None:
        """Catch up with commits other processes made since this handle last looked (one pragma when none)."""
        if self.write_lock.held or self._closed or self.catalog.data_version() == self._seen_version:
            return  # a handle holding the write lock is the latest state: nobody else can commit
        with self._sync_mutex:  # one thread loads; the others wait for it rather than load the same files
            if not self.write_lock.held and self.catalog.data_version() != self._seen_version:
                self._catch_up()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """The latest commit (caught up with other processes'), held still by the thread lock for reading."""
        self.sync()
        with self.lock.reading():
            yield

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Exclusive access for a change: the store's write lock on the latest commit, this handle's writer,
        then the thread lock (searches of this process wait for the change, not for the store's lock)."""
        with self.exclusive(), self.lock.writing():
            yield

    @contextmanager
    def exclusive(self, timeout: float | None = None) -> Iterator[None]:
        """The store's write lock (taken by the outermost block, waiting at most `timeout` seconds, kept while
        there are unsaved changes) on the latest commit, and this handle's writer: no other writer anywhere,
        while searches go on."""
        while True:
            self._take_write_lock(timeout)
            with self._writer:
                if not self.write_lock.held:  # another thread of this handle saved and let go meanwhile
                    continue
                if self._behind:
                    self._catch_up()  # cheap when the thread that took the lock has done it already
                    self._behind = False
                self._writes += 1
                try:
                    yield
                finally:
                    self._writes -= 1
                    if not self._writes and not self.unsaved:
                        self.write_lock.release()
                return

    def _take_write_lock(self, timeout: float | None = None) -> None:
        self.check_open()
        if self.write_lock.held:
            return
        with self._acquiring:  # one thread of this handle waits for the lock; the others wait for it
            if self.write_lock.held:
                return
            if self.read_only:
                raise ReadOnlyStoreError(
                    f"store {self.path} is read-only (its folder cannot be written): it can be searched but not changed"
                )
            self.write_lock.acquire(self.lock_timeout if timeout is None else timeout, self.path)
            self._behind = True
            try:
                self._catch_up()  # spaces load outside the thread lock: searches go on
            except BaseException:
                self.write_lock.release()
                raise
            self._behind = False

    @contextmanager
    def catalog_writes(self) -> Iterator[None]:
        """Turn SQLite's write failures into our errors, and never keep changes SQLite rolled back."""
        try:
            yield
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):  # a writer that ignores write.lock holds SQLite's
                raise StoreLockedError(
                    f"store {self.path}: the catalog is locked by another writer: {error}"
                ) from error
            full = getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            self._fail(f"writing the catalog failed: {error}", error, errno.ENOSPC if full else None)

    def _fail(self, what: str, error: BaseException, errno_: int | None = None) -> NoReturn:
        """Raise `StoreWriteError`; if SQLite rolled the transaction back, first drop the unsaved changes it held."""
        lost = self.unsaved and not self.catalog.dirty
        generation = self.manifest["generation"]
        if lost:
            self._discard()
        if lost:
            kept = (
                "this handle's unsaved changes were lost with the transaction SQLite rolled back, and it shows"
                f" generation {generation} again: apply them again"
            )
        elif self.unsaved:
            kept = "the unsaved changes are kept: save again once the cause is fixed"
        else:
            kept = "nothing was changed"
        failure = StoreWriteError(
            f"store {self.path}: {what}; the last commit (generation {generation}) is intact; {kept}"
        )
        failure.errno = errno_ if errno_ is not None else getattr(error, "errno", None)
        raise failure from error

    def check_open(self) -> None:
        if self._closed:
            raise InvalidInputError(f"store {self.path} is closed")

    # --- changes (inside `writing`) ---------------------------------------------------------------------
    def changed(self, space: str | None) -> None:
        """Record a change: of the catalog only (`space` None), or also of that space's vectors or configuration."""
        self.edition += 1
        if space is not None:
            self._dirty_spaces.add(space)
        self.unsaved = True

    def take_keys(self, count: int) -> np.ndarray:
        """`count` new record keys, never handed out before (spent even if the change using them fails)."""
        keys = np.arange(self._next_key, self._next_key + count, dtype=np.int64)
        self._next_key += count
        return keys

    def put_space(self, space: Space) -> None:
        """Add a new space, or replace one by another holding the same vectors."""
        self.spaces[space.config.name] = space
        self.changed(space.config.name)

    def remove_space(self, name: str) -> None:
        del self.spaces[name]
        self.changed(name)

    def adopt(self, space: Space, entry: SpaceEntry) -> None:
        """Install a space whose files `entry` names were written into ``spaces/`` already (by
        `mm_rag.indexbuild`): the next save commits them as they are."""
        name = entry.config.name
        self.spaces[name] = space
        self._adopted[name] = entry
        self._dirty_spaces.discard(name)
        self.changed(None)

    # --- persistence ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """`MultimodalStore.save`: commit the changes as the next generation and let the write lock go."""
        if path is None and self.temporary:
            raise InvalidInputError("save: this is a temporary store; pass a path to save it to")
        copy = path is not None and Path(path).resolve() != self.path
        if not self.unsaved and not copy:
            return
        if self.read_only and not self.unsaved:
            with self.lock.reading():  # nobody can change a read-only store: the committed files stay
                copy_store(self.path, Path(path), self.catalog, self.manifest)  # type: ignore[arg-type]
            return
        with self.exclusive():  # the write lock also keeps the committed files in place while they are copied
            if self.unsaved:
                self._commit()
            if copy:
                copy_store(self.path, Path(path), self.catalog, self.manifest)  # type: ignore[arg-type]

    def rollback(self) -> None:
        """Drop the changes not saved yet and show the latest committed state (this process's or another's)."""
        with self._writer, self.lock.writing():
            self.check_open()
            if self.unsaved:
                self._discard()
            if not self._writes:
                self.write_lock.release()

    def _discard(self) -> None:
        self.catalog.rollback()
        self._catch_up(discard=True)

    def _commit(self) -> None:
        base = self.manifest["generation"]
        generation = base + 1
        spaces_dir = self.path / SPACES_DIR
        with self.catalog_writes():
            self.catalog.begin()  # SQLite's write lock, from this check to the commit
            theirs = self._committed()["generation"]
        if theirs != base:  # only a writer that ignores write.lock (an old mm-rag, a file system without locks)
            self._discard()
            raise StoreWriteError(
                f"store {self.path}: generation {theirs} was committed by a writer that did not hold the store's"
                f" lock, after this handle loaded generation {base}; nothing was overwritten, and this handle's"
                " unsaved changes were dropped: apply them again"
            )
        entries = dict(self.manifest["spaces"])
        entries.update((name, entry.to_json()) for name, entry in self._adopted.items())
        for name in list(entries):
            if name not in self.spaces:
                del entries[name]
        dirty = sorted(self._dirty_spaces & set(self.spaces))
        with self.lock.writing():  # a fold or a rebuild changes what searches read: they wait for it
            main = {name: segments.prepare(self.spaces[name]) for name in dirty}
        written = {}
        try:
            for name in dirty:  # writing only reads the spaces: searches go on, and merges are off their path
                space = self.spaces[name]
                files, dead = segments.write_space(space, spaces_dir, f"{name}.{generation}", main[name])
                written[name] = (files, dead)
                entries[name] = SpaceEntry.describe(space.config, space.spec, spaces_dir, files, len(space)).to_json()
            fsync_path(spaces_dir)
        except (OSError, RuntimeError, MemoryError) as error:  # Faiss reports failed writes as RuntimeError
            self._remove_files_of(generation)
            code = getattr(error, "errno", None) or (errno.ENOSPC if "No space left" in str(error) else None)
            self._fail(f"saving generation {generation} failed: {error}", error, code)
        self.publish(generation, entries, written)

    def publish(
        self, generation: int, entries: dict[str, Any], written: dict[str, tuple[SpaceFiles, np.ndarray]]
    ) -> None:
        """Commit the manifest of `generation`, whose `entries` name the files `written` (inside `exclusive`, in
        the catalog's open transaction), then show it, then remove the files no commit references."""
        manifest = new_manifest(generation, self._next_key, entries)
        try:
            with self.catalog_writes():
                self.catalog.put_setting("manifest", manifest)
                self.catalog.commit()  # the commit point: before it the old state, after it the new one
        except StoreWriteError:
            self._remove_files_of(generation)
            raise
        with self.lock.writing():
            for name, (files, dead) in written.items():
                segments.saved(self.spaces[name], files, dead, self._next_key)
            self.manifest = manifest
            self._dirty_spaces.clear()
            self._adopted.clear()
            self.unsaved = False
        try:  # the commit stands: what follows only tidies, and a failure here loses nothing
            write_manifest_file(self.path, self.manifest)
            remove_unreferenced(self.path, manifest)
            self.catalog.checkpoint()
        except (OSError, sqlite3.Error) as error:
            warnings.warn(
                f"store {self.path}: generation {generation} is saved, but tidying up failed: {error}", stacklevel=4
            )

    def _remove_files_of(self, generation: int) -> None:
        """Remove what a failed save wrote: files named after its generation, which no commit references."""
        for file in (self.path / SPACES_DIR).glob(f"*.{generation}.*"):
            file.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the store. Unsaved changes are dropped (with a warning); a temporary store is deleted."""
        if self._closed:
            return
        with self._writer, self.lock.writing():
            if self.unsaved and not self.temporary:
                warnings.warn(f"closing store {self.path} with unsaved changes; call save() to keep them", stacklevel=3)
            self.catalog.close()
            self.write_lock.release()
            self._closed = True
        if self.temporary:
            self._cleanup()


def lock_seconds(value: float) -> float:
    """`value` as a lock timeout: a non-negative number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidInputError(f"lock_timeout must be a non-negative number of seconds, got {value!r}")
    return float(value)


def _entries(manifest: dict[str, Any]) -> dict[str, SpaceEntry]:
    return {name: SpaceEntry.from_json(name, entry) for name, entry in manifest["spaces"].items()}
