"""The lexical index: SQLite FTS5 over the records' text, ranked by BM25, for keyword and hybrid retrieval.

Embeddings blur exact names, codes and numbers ("invoice 4711", "4000 euros"); a keyword index finds them.
The FTS5 table is an external-content index of the records' text keyed by the record key, written in the same
transaction as the records (so it commits, rolls back and survives crashes with them). The ``unicode61``
tokenizer folds case and diacritics for any script; ``-``/``/`` split codes into tokens, and a query word
such as ``INV-4711`` becomes the phrase "inv 4711", so codes match as written.

A query is never FTS5 syntax: each whitespace-separated word becomes a quoted phrase and the phrases are
OR-ed, so quotes, ``*``, ``NEAR`` or ``AND`` in user text are plain words, and BM25 ranks records that
match more (and rarer) words first.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

TABLE = "records_text"
TOKENIZER = "unicode61 remove_diacritics 2"
# The index's content is the records that have text (a picture without a caption is no document: it must not
# count in BM25's document statistics), seen through a view so that FTS5 can check itself against it.
CONTENT = "records_with_text"
SCHEMA = [
    f"CREATE VIEW IF NOT EXISTS {CONTENT} AS SELECT key, text FROM records WHERE text IS NOT NULL",
    (
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5("
        f"text, content='{CONTENT}', content_rowid='key', tokenize='{TOKENIZER}')"
    ),
]
# A read-only catalog without the index gets a private copy in `temp` (an external-content table must live
# beside its content table, so this one keeps the text itself).
TEMP_SCHEMA = f"CREATE VIRTUAL TABLE temp.{TABLE} USING fts5(text, tokenize='{TOKENIZER}')"
HAS_TABLE = f"SELECT 1 FROM sqlite_master WHERE name = '{TABLE}'"
# Asks FTS5 to compare the index with its content, term by term (raises ``DatabaseError`` on a mismatch).
CHECK = f"INSERT INTO {TABLE}({TABLE}, rank) VALUES ('integrity-check', 1)"
REBUILD = f"INSERT INTO {TABLE}({TABLE}) VALUES ('rebuild')"
FILL = f"INSERT INTO {TABLE}(rowid, text) SELECT key, text FROM records WHERE text IS NOT NULL"
# New keys are larger than every stored one, so a batch's key range holds exactly the batch.
INSERT_RANGE = f"INSERT INTO {TABLE}(rowid, text) SELECT key, text FROM records WHERE key BETWEEN ? AND ? AND text IS NOT NULL"
# External content: FTS5 removes a row's terms given the text it indexed, so this runs before the records go.
DELETE_KEYS = (
    f"INSERT INTO {TABLE}({TABLE}, rowid, text) SELECT 'delete', key, text FROM records"
    " WHERE key IN (SELECT value FROM json_each(?)) AND text IS NOT NULL"
)
DELETE_ALL = f"INSERT INTO {TABLE}({TABLE}) VALUES ('delete-all')"
SEARCH = (
    f"SELECT r.key, -bm25({TABLE}) FROM {TABLE} JOIN records AS r ON r.key = {TABLE}.rowid"
    f" WHERE {TABLE} MATCH ? AND {{condition}} ORDER BY bm25({TABLE}) LIMIT ?"
)
_WORD = re.compile(r"\w", re.UNICODE)


def match_expression(query: str) -> str | None:
    """The FTS5 query for user text: each word a quoted phrase, OR-ed; None when it has no word at all."""
    phrases = ['"' + word.replace('"', '""') + '"' for word in query.split() if _WORD.search(word)]
    return " OR ".join(phrases) or None


def search(db: sqlite3.Connection, query: str, condition: str, params: list[Any], k: int) -> list[tuple[int, float]]:
    """(key, BM25 score, higher is better) of the `k` best records matching `query` and the SQL `condition`."""
    expression = match_expression(query)
    if expression is None:
        return []
    return db.execute(SEARCH.format(condition=condition), [expression, *params, k]).fetchall()


def ensure(db: sqlite3.Connection, read_only: bool) -> None:
    """Create and fill the index of a catalog written before it existed (inside the caller's transaction)."""
    if db.execute(HAS_TABLE).fetchone() is not None:
        return
    if read_only:
        db.execute(TEMP_SCHEMA)
        db.execute(FILL)
    else:
        for statement in SCHEMA:
            db.execute(statement)
        db.execute(REBUILD)
