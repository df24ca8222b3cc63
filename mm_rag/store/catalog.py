"""The SQLite catalog: records, their int64 keys, and the store manifest. Source of truth for a store.

Every statement is a named constant; values are always bound with ``?``. Lists of ids and keys travel as one
JSON parameter expanded by ``json_each``, so a batch of any size is one statement.

Metadata is indexed in `INDEX_TABLE` (see `mm_rag.filters`): one row per scalar value or scalar list element
of each field, typed, keyed (field, kind, value, elem, rec) so a filter term is an index range. SQLite's own
``json_each`` derives the rows from the stored JSON text, so their types are exactly those the unindexed filter
reads. The rows are written in the statement after the records' own, inside the same transaction.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

from mm_rag.filters import (
    INDEX_TABLE,
    KIND_FALSE,
    KIND_NULL,
    KIND_NUMBER,
    KIND_PRESENT,
    KIND_TEXT,
    KIND_TRUE,
    register_sql_functions,
)
from mm_rag.records import OPTIONAL_TEXT_FIELDS, Record
from mm_rag.store import lexical
from mm_rag.store.stopwords import DEFAULT_LANGUAGES, stop_words

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
# `value` has no declared type on purpose: no affinity, so '2020' stays text and 2020 a number.
# WITHOUT ROWID: the primary key is the lookup index itself (one b-tree, not a table plus an index), and it
# drops repeated list elements. The rec index serves deletes; new keys are the largest, so it only appends.
INDEX_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {{schema}}{INDEX_TABLE} (
    field TEXT NOT NULL, kind INTEGER NOT NULL, value NOT NULL, elem INTEGER NOT NULL, rec INTEGER NOT NULL,
    PRIMARY KEY (field, kind, value, elem, rec)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {{schema}}{INDEX_TABLE}_rec ON {INDEX_TABLE}(rec);
"""
_KIND = (
    f"CASE {{0}}.type WHEN 'null' THEN {KIND_NULL} WHEN 'false' THEN {KIND_FALSE} WHEN 'true' THEN {KIND_TRUE}"
    f" WHEN 'text' THEN {KIND_TEXT} ELSE {KIND_NUMBER} END"
)
# Index rows of the records with keys in [?1, ?2], in two passes over their metadata: each field's scalar value
# or, for a list or object field, a PRESENT row (nested lists and objects are not values a filter compares, see
# `mm_rag.filters`); then the scalar elements of list fields. (Three passes, one per kind of row, took 12 %
# longer for 100k records.)
INSERT_INDEX_ROWS = f"""
INSERT OR IGNORE INTO {INDEX_TABLE} (field, kind, value, elem, rec)
SELECT f.key, CASE WHEN f.type IN ('array', 'object') THEN {KIND_PRESENT} ELSE {_KIND.format("f")} END,
    coalesce(f.atom, 0), 0, r.key
    FROM records AS r, json_each(r.metadata) AS f WHERE r.key BETWEEN ?1 AND ?2
UNION ALL
SELECT f.key, {_KIND.format("e")}, coalesce(e.atom, 0), 1, r.key
    FROM records AS r, json_each(r.metadata) AS f, json_each(f.value) AS e
    WHERE r.key BETWEEN ?1 AND ?2 AND f.type = 'array' AND e.type NOT IN ('array', 'object')
"""
DELETE_INDEX_ROWS = f"DELETE FROM {INDEX_TABLE} WHERE rec IN (SELECT value FROM json_each(?))"
DELETE_ALL_INDEX_ROWS = f"DELETE FROM {INDEX_TABLE}"
HAS_INDEX = f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{INDEX_TABLE}'"
MAX_KEY = "SELECT max(key) FROM records"
# The largest record key whose index rows were written: records above it were added by an mm-rag that did
# not keep the index (the table is invisible to it), and are indexed when this one next opens the catalog.
INDEXED_UP_TO = "metadata_index_max_key"
KEYWORD_LANGUAGES = "keyword_languages"
CACHE_KIB = 64 * 1024
COLUMNS = "key, id, modality, text, uri, doc_id, content_hash, metadata"
SELECT_KEYS_OF_IDS = "SELECT id, key FROM records WHERE id IN (SELECT value FROM json_each(?))"
SELECT_KEYS_OF_DOC = "SELECT key FROM records WHERE doc_id = ?"
SELECT_RECORDS_BY_KEYS = f"SELECT {COLUMNS} FROM records WHERE key IN (SELECT value FROM json_each(?))"
SELECT_RECORDS_BY_IDS = f"SELECT {COLUMNS} FROM records WHERE id IN (SELECT value FROM json_each(?))"
SELECT_PAGE = f"SELECT {COLUMNS} FROM records WHERE key > ? ORDER BY key LIMIT ?"
SELECT_ANY = "SELECT 1 FROM records LIMIT 1"
COUNT_ROWS = "SELECT count(*) FROM ({select} LIMIT ?)"
# One text value of every key: decoding it with numpy is ~3x faster than one Python tuple per row.
SELECT_KEYS_OF = "SELECT group_concat(key) FROM (SELECT key FROM ({select}) ORDER BY key)"
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
        self._stop_cache: tuple[tuple[str, ...], frozenset[str]] | None = None
        if read_only:
            self._db = _connect_read_only(path)
        else:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=10000")  # first: switching to WAL waits for other openers
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # A bulk add inserts into the metadata index in value order, i.e. all over its b-tree: with
            # SQLite's 2 MiB default cache, pages spill mid-transaction (measured: 100k records insert in
            # 0.54-0.58 s with 64 MiB, 0.60-0.65 s with 2 MiB). An upper bound, only used as pages are touched.
            self._db.execute(f"PRAGMA cache_size={-CACHE_KIB}")
        register_sql_functions(self._db)  # what compiled filters call
        if not read_only:
            self._db.executescript(SCHEMA)
        self._open_index()

    # --- transactions -----------------------------------------------------------------------------------
    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")

    def begin(self) -> None:
        """Start the write transaction now (it holds SQLite's write lock until `commit` or `rollback`)."""
        with self._mutex:
            self._begin()

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """Changes made inside are kept or undone together, within the open write transaction."""
        with self._mutex:
            self._begin()
            self._db.execute("SAVEPOINT batch")
            try:
                yield
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled the whole transaction back already
                    self._db.execute("ROLLBACK TO batch")
                    self._db.execute("RELEASE batch")
                raise
            self._db.execute("RELEASE batch")

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

    # --- the metadata index ---------------------------------------------------------------------------
    def _open_index(self) -> None:
        """Build the metadata index of a catalog written before it existed, or catch up on records added
        without it, in one transaction of its own (a format migration: the records are unchanged).

        A read-only catalog without a current index gets a temporary one, for this connection only (SQLite
        resolves the table name in ``temp`` before ``main``).
        """
        if self.read_only:
            if not self._index_current():
                if not self._metadata_index_current():
                    for statement in _statements(INDEX_SCHEMA.format(schema="temp.")):
                        self._db.execute(statement)
                    self._db.execute(INSERT_INDEX_ROWS, (-(2**63), 2**63 - 1))
                lexical.ensure(self._db, read_only=True, stemming=lexical.DEFAULT_STEMMING)
            return
        if self._index_current():  # the usual case, answered without the write lock another process may hold
            return
        self._db.execute("BEGIN IMMEDIATE")  # checked again under the lock: another process may have migrated
        try:
            built = self._db.execute(HAS_INDEX).fetchone() is not None
            indexed = self.setting(INDEXED_UP_TO) if built else None
            newest = self._db.execute(MAX_KEY).fetchone()[0]
            has_text_index = self._db.execute(lexical.HAS_TABLE).fetchone() is not None
            for statement in _statements(INDEX_SCHEMA.format(schema="")):
                self._db.execute(statement)
            lexical.ensure(self._db, read_only=False, stemming=lexical.DEFAULT_STEMMING)  # indexes every record at once
            if newest is not None and (indexed is None or newest > indexed):
                since = -(2**63) if indexed is None else indexed + 1
                self._db.execute(INSERT_INDEX_ROWS, (since, newest))
                if has_text_index:  # records an older mm-rag added without indexing their text
                    self._db.execute(lexical.INSERT_RANGE, (since, newest))
                self._db.execute(PUT_SETTING, (INDEXED_UP_TO, json.dumps(newest)))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _index_current(self) -> bool:
        """Whether the metadata and text indices exist and cover every record."""
        return self._db.execute(lexical.HAS_TABLE).fetchone() is not None and self._metadata_index_current()

    def _metadata_index_current(self) -> bool:
        if self._db.execute(HAS_INDEX).fetchone() is None:
            return False
        newest = self._db.execute(MAX_KEY).fetchone()[0]
        indexed = self.setting(INDEXED_UP_TO)
        return newest is None or (indexed is not None and newest <= indexed)

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
        if not len(keys):
            return
        # Each bound value costs sqlite3's executemany about 0.2 us: an optional field that is None in the
        # whole batch (the uri of text chunks, the text of pictures) is left to the column's default, NULL.
        columns: dict[str, list[Any]] = {
            "key": keys.tolist(),
            "id": [r.id for r in records],
            "modality": [r.modality for r in records],
        }
        for name in OPTIONAL_TEXT_FIELDS:
            values = list(map(attrgetter(name), records))
            if values.count(None) != len(values):
                columns[name] = values
        columns["metadata"] = list(metadata)
        insert = f"INSERT INTO records ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        low, high = int(keys.min()), int(keys.max())
        with self._mutex:
            self._begin()
            self._db.executemany(insert, zip(*columns.values()))
            # The key range may hold older records too (keys need not be contiguous): OR IGNORE skips their rows.
            self._db.execute(INSERT_INDEX_ROWS, (low, high))
            self._db.execute(lexical.INSERT_RANGE, (low, high))
            indexed = self.setting(INDEXED_UP_TO)
            if indexed is None or high > indexed:
                self._db.execute(PUT_SETTING, (INDEXED_UP_TO, json.dumps(high)))

    def delete_keys(self, keys: np.ndarray) -> None:
        with self._mutex:
            self._begin()
            encoded = json.dumps(keys.tolist())
            self._db.execute(DELETE_INDEX_ROWS, (encoded,))
            self._db.execute(lexical.DELETE_KEYS, (encoded,))
            self._db.execute(DELETE_KEYS, (encoded,))

    def delete_all(self) -> None:
        with self._mutex:
            self._begin()
            self._db.execute(DELETE_ALL_INDEX_ROWS)
            self._db.execute(lexical.DELETE_ALL)
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

    def search_text(self, query: str, condition: str, params: list[Any], k: int) -> list[tuple[int, float]]:
        """(key, BM25 score) of the `k` records whose text best matches `query`, among those matching `condition`."""
        with self._mutex:
            return lexical.search(self._db, query, condition, params, k, self._stop_words())

    # --- keyword settings -------------------------------------------------------------------------------
    def keywords(self, query: str) -> lexical.Keywords:
        """The words of `query` that create keyword matches, and those left out (see `lexical.keywords`)."""
        with self._mutex:
            return lexical.keywords(self._db, query, self._stop_words())

    def keyword_settings(self) -> dict[str, Any]:
        """How the keyword index reads words: ``{"stemming": ..., "languages": [...]}``."""
        return {"stemming": self.stemming(), "languages": list(self.keyword_languages())}

    def keyword_languages(self) -> tuple[str, ...]:
        languages = self.setting(KEYWORD_LANGUAGES)
        return DEFAULT_LANGUAGES if languages is None else tuple(languages)

    def stemming(self) -> lexical.Stemming:
        with self._mutex:
            return lexical.stemming(self._db)

    def restem(self, stemming: lexical.Stemming) -> None:
        """Index the text again with(out) stemming, in the open write transaction."""
        with self._mutex:
            self._begin()
            lexical.restem(self._db, stemming)

    def _stop_words(self) -> frozenset[str]:
        languages = self.keyword_languages()
        if self._stop_cache is None or self._stop_cache[0] != languages:
            self._stop_cache = (languages, stop_words(languages))
        return self._stop_cache[1]

    def count_rows(self, select: str, params: list[Any], cap: int) -> int:
        """How many rows `select` returns, counting no further than `cap` (the planner's estimates)."""
        with self._mutex:
            return self._db.execute(COUNT_ROWS.format(select=select), [*params, cap]).fetchone()[0]

    def keys_of(self, select: str, params: list[Any]) -> np.ndarray:
        """Sorted keys a ``SELECT`` of distinct keys in a ``key`` column returns (`mm_rag.store.planner.plan_filter`)."""
        with self._mutex:
            text = self._db.execute(SELECT_KEYS_OF.format(select=select), params).fetchone()[0]
        if not text:
            return np.empty(0, dtype=np.int64)
        keys = np.fromstring(text, dtype=np.int64, sep=",")
        if len(keys) > 1 and (keys[1:] < keys[:-1]).any():  # group_concat's order is SQLite's, not promised
            keys.sort()
        return keys

    def keys_among(self, keys: np.ndarray, condition: str, params: list[Any]) -> np.ndarray:
        """Sorted keys among `keys` of the records meeting `condition` (on ``r``, e.g. `planner.check_each`)."""
        select = f"SELECT r.key FROM records AS r WHERE r.key IN (SELECT value FROM json_each(?)) AND ({condition})"
        return self.keys_of(select, [json.dumps(keys.tolist()), *params])

    def matching_keys(self, condition: str, params: list[Any]) -> np.ndarray:
        """Sorted keys of the records matching a condition from `mm_rag.filters.compile_filter` (unplanned)."""
        return self.keys_of(f"SELECT r.key FROM records AS r WHERE {condition}", params)


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


def _statements(script: str) -> list[str]:
    # executescript would first commit the open transaction, splitting the migration in two.
    return [statement for statement in script.split(";") if statement.strip()]


def _keys(cursor: sqlite3.Cursor) -> np.ndarray:
    return np.fromiter((row[0] for row in cursor), dtype=np.int64)


def _record(row: tuple) -> Record:
    _, id, modality, text, uri, doc_id, content_hash, metadata = row
    return Record(id, modality, text, uri, json.loads(metadata), doc_id, content_hash)
