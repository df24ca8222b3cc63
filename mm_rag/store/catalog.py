"""The SQLite catalog: records, their int64 keys, and the store manifest. Source of truth for a store.

Every statement is a named constant; values are always bound with ``?``. Lists of ids and keys travel as one
JSON parameter expanded by ``json_each``, so a batch of any size is one statement.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mm_rag.filters import register_sql_functions
from mm_rag.records import Record

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    modality TEXT NOT NULL,
    text TEXT,
    uri TEXT,
    doc_id TEXT,
    content_hash TEXT,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_doc_id ON records(doc_id) WHERE doc_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_content_hash ON records(content_hash) WHERE content_hash IS NOT NULL;
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
COLUMNS = "key, id, modality, text, uri, doc_id, content_hash, metadata"
INSERT_RECORD = f"INSERT INTO records ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
SELECT_KEYS_OF_IDS = "SELECT id, key FROM records WHERE id IN (SELECT value FROM json_each(?))"
SELECT_KEYS_OF_DOC = "SELECT key FROM records WHERE doc_id = ?"
SELECT_RECORDS_BY_KEYS = f"SELECT {COLUMNS} FROM records WHERE key IN (SELECT value FROM json_each(?))"
SELECT_RECORDS_BY_IDS = f"SELECT {COLUMNS} FROM records WHERE id IN (SELECT value FROM json_each(?))"
SELECT_PAGE = f"SELECT {COLUMNS} FROM records WHERE key > ? ORDER BY key LIMIT ?"
SELECT_MATCHING_KEYS = "SELECT r.key FROM records AS r WHERE {condition} ORDER BY r.key"
SELECT_ANY = "SELECT 1 FROM records LIMIT 1"
SELECT_DOCUMENTS = "SELECT doc_id, max(content_hash) FROM records WHERE doc_id IS NOT NULL GROUP BY doc_id"
SELECT_IDS_WITH_HASH = "SELECT id FROM records WHERE content_hash IN (SELECT value FROM json_each(?))"
DELETE_KEYS = "DELETE FROM records WHERE key IN (SELECT value FROM json_each(?))"
DELETE_ALL = "DELETE FROM records"
COUNT_RECORDS = "SELECT count(*) FROM records"
GET_SETTING = "SELECT value FROM settings WHERE name = ?"
PUT_SETTING = "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value"


class Catalog:
    """One SQLite connection in WAL mode, shared by the store's threads behind a mutex.

    Writes accumulate in one open transaction that `commit` ends, so a store's catalog and its Faiss files
    change together at `save` and a crash leaves the last committed state.
    """

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self._mutex = threading.RLock()
        self.read_only = read_only
        if read_only:
            self._db = _connect_read_only(path)
        else:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=10000")  # first: switching to WAL waits for other openers
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        register_sql_functions(self._db)  # what compiled filters call
        if not read_only:
            self._db.executescript(SCHEMA)

    # --- transactions -----------------------------------------------------------------------------------
    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")

    def begin(self) -> None:
        """Start the write transaction now (it holds SQLite's write lock until `commit` or `rollback`)."""
        with self._mutex:
            self._begin()

    def data_version(self) -> int:
        """A number that changes whenever another connection (any process) commits to the catalog.

        SQLite answers it from the WAL index in shared memory, so it is cheap enough to ask before every search.
        """
        with self._mutex:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    @property
    def dirty(self) -> bool:
        return self._db.in_transaction

    def commit(self) -> None:
        with self._mutex:
            if self._db.in_transaction:
                self._db.execute("COMMIT")

    def rollback(self) -> None:
        with self._mutex:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    def close(self) -> None:
        with self._mutex:
            self.rollback()
            self._db.close()

    def checkpoint(self) -> None:
        with self._mutex:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def backup_to(self, path: Path) -> None:
        """Copy the catalog to `path` as one consistent snapshot (call after `commit`)."""
        target = sqlite3.connect(path)
        try:
            with self._mutex:
                self._db.backup(target)
        finally:
            target.close()

    # --- settings ---------------------------------------------------------------------------------------
    def setting(self, name: str) -> Any:
        with self._mutex:
            row = self._db.execute(GET_SETTING, (name,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put_setting(self, name: str, value: Any) -> None:
        with self._mutex:
            self._begin()
            self._db.execute(PUT_SETTING, (name, json.dumps(value)))

    # --- records ----------------------------------------------------------------------------------------
    def keys_of_ids(self, ids: Sequence[str]) -> dict[str, int]:
        with self._mutex:
            if self._db.execute(SELECT_ANY).fetchone() is None:  # a bulk load into an empty store
                return {}
            return dict(self._db.execute(SELECT_KEYS_OF_IDS, (json.dumps(list(ids)),)))

    def keys_of_doc(self, doc_id: str) -> np.ndarray:
        with self._mutex:
            return _keys(self._db.execute(SELECT_KEYS_OF_DOC, (doc_id,)))

    def documents(self) -> dict[str, str | None]:
        with self._mutex:
            return dict(self._db.execute(SELECT_DOCUMENTS))

    def ids_with_hashes(self, hashes: Sequence[str]) -> set[str]:
        with self._mutex:
            return {row[0] for row in self._db.execute(SELECT_IDS_WITH_HASH, (json.dumps(list(hashes)),))}

    def insert(self, keys: np.ndarray, records: Sequence[Record], metadata: Sequence[str]) -> None:
        """Insert records under `keys`, with their metadata already encoded as JSON."""
        rows = (
            (key, r.id, r.modality, r.text, r.uri, r.doc_id, r.content_hash, encoded)
            for key, r, encoded in zip(keys.tolist(), records, metadata)
        )
        with self._mutex:
            self._begin()
            self._db.executemany(INSERT_RECORD, rows)

    def delete_keys(self, keys: np.ndarray) -> None:
        with self._mutex:
            self._begin()
            self._db.execute(DELETE_KEYS, (json.dumps(keys.tolist()),))

    def delete_all(self) -> None:
        with self._mutex:
            self._begin()
            self._db.execute(DELETE_ALL)

    def count(self) -> int:
        with self._mutex:
            return self._db.execute(COUNT_RECORDS).fetchone()[0]

    def records_by_keys(self, keys: Iterable[int]) -> dict[int, Record]:
        with self._mutex:
            rows = self._db.execute(SELECT_RECORDS_BY_KEYS, (json.dumps(list(keys)),)).fetchall()
        return {row[0]: _record(row) for row in rows}

    def records_by_ids(self, ids: Sequence[str]) -> dict[str, Record]:
        with self._mutex:
            rows = self._db.execute(SELECT_RECORDS_BY_IDS, (json.dumps(list(ids)),)).fetchall()
        return {row[1]: _record(row) for row in rows}

    def iter_records(self, page: int = 1000) -> Iterator[Record]:
        last = -1
        while True:
            with self._mutex:
                rows = self._db.execute(SELECT_PAGE, (last, page)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield from (_record(row) for row in rows)

    def matching_keys(self, condition: str, params: list[Any]) -> np.ndarray:
        with self._mutex:
            return _keys(self._db.execute(SELECT_MATCHING_KEYS.format(condition=condition), params))


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to a catalog whose folder cannot be written.

    WAL mode needs the ``-shm`` file: when a writer elsewhere keeps it, ``mode=ro`` shares it and still sees
    that writer's commits; when there is none and it cannot be created, the file is opened ``immutable``.
    """
    for mode in ("mode=ro", "immutable=1"):
        try:
            connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?{mode}", uri=True, isolation_level=None, check_same_thread=False
            )
            connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            connection.execute("PRAGMA busy_timeout=10000")
            return connection
        except sqlite3.OperationalError:
            if mode == "immutable=1":
                raise
    raise AssertionError("unreachable")


def _keys(cursor: sqlite3.Cursor) -> np.ndarray:
    return np.fromiter((row[0] for row in cursor), dtype=np.int64)


def _record(row: tuple) -> Record:
    _, id, modality, text, uri, doc_id, content_hash, metadata = row
    return Record(id, modality, text, uri, json.loads(metadata), doc_id, content_hash)
