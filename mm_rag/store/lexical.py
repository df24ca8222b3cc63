"""The lexical index: SQLite FTS5 over the records' text, ranked by BM25, for keyword and hybrid retrieval.

Embeddings blur exact names, codes and numbers ("invoice 4711", "4000 euros"); a keyword index finds them.
The FTS5 table is an external-content index of the records' text keyed by the record key, written in the same
transaction as the records (so it commits, rolls back and survives crashes with them). The ``unicode61``
tokenizer folds case and diacritics for any script; ``-``/``/`` split codes into tokens, and a query word
such as ``INV-4711`` becomes the phrase "inv 4711", so codes match as written. With stemming (the store's
``porter`` setting, the default for new stores) "maps" finds "map" and "baking" finds "bake"; codes match as
before, since a query is stemmed exactly like the text (measured in ``benchmarks/README.md``).

A query is never FTS5 syntax: each whitespace-separated word becomes a quoted phrase and the phrases are
OR-ed, so quotes, ``*``, ``NEAR`` or ``AND`` in user text are plain words, and BM25 ranks records that
match more (and rarer) words first. Words that carry no information create no match on their own (see
`keywords`): stop words of the store's languages, and, in a store of `MIN_RECORDS_FOR_FREQUENCY` records or
more, words found in half of the records or more, where BM25's own idf, ``log((N - n + 0.5) / (n + 0.5))``,
is zero or below. Without this "how do the …" matches nearly every record, and those matches outrank meaning
in any rank fusion.
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

Stemming = Literal["porter", "none"]
STEMMINGS: tuple[Stemming, ...] = ("porter", "none")
TOKENIZERS: dict[Stemming, str] = {
    "porter": "porter unicode61 remove_diacritics 2",
    "none": "unicode61 remove_diacritics 2",
}
DEFAULT_STEMMING: Stemming = "porter"
# Below this many records, "found in half the records" says little about a word (two notes out of three
# mention the budget): only stop words are left out.
MIN_RECORDS_FOR_FREQUENCY = 16

TABLE = "records_text"
# The index's content is the records that have text (a picture without a caption is no document: it must not
# count in BM25's document statistics), seen through a view so that FTS5 can check itself against it.
CONTENT = "records_with_text"
VIEW = f"CREATE VIEW IF NOT EXISTS {CONTENT} AS SELECT key, text FROM records WHERE text IS NOT NULL"
CREATE = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5("
    "text, content='" + CONTENT + "', content_rowid='key', tokenize='{tokenizer}')"
)
# A read-only catalog without the index gets a private copy in `temp` (an external-content table must live
# beside its content table, so this one keeps the text itself).
TEMP_CREATE = f"CREATE VIRTUAL TABLE temp.{TABLE} USING fts5(text, tokenize='{{tokenizer}}')"
HAS_TABLE = f"SELECT 1 FROM sqlite_master WHERE name = '{TABLE}'"
TABLE_SQL = f"SELECT sql FROM sqlite_temp_master WHERE name = '{TABLE}' UNION ALL SELECT sql FROM sqlite_master WHERE name = '{TABLE}'"
# Asks FTS5 to compare the index with its content, term by term (raises ``DatabaseError`` on a mismatch).
CHECK = f"INSERT INTO {TABLE}({TABLE}, rank) VALUES ('integrity-check', 1)"
REBUILD = f"INSERT INTO {TABLE}({TABLE}) VALUES ('rebuild')"
FILL = f"INSERT INTO {TABLE}(rowid, text) SELECT key, text FROM records WHERE text IS NOT NULL"
# New keys are larger than every stored one, so a batch's key range holds exactly the batch.
INSERT_RANGE = (
    f"INSERT INTO {TABLE}(rowid, text) SELECT key, text FROM records WHERE key BETWEEN ? AND ? AND text IS NOT NULL"
)
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
# FTS5 keeps the number of indexed rows as the first varint of its "averages" record (id 1 of the data table):
# reading it costs one lookup, where COUNT(*) over the records would scan them all on every query.
AVERAGES = f"SELECT block FROM {{schema}}.{TABLE}_data WHERE id = 1"
# How many records hold each term, straight from the index (fts5vocab, created per connection in `temp`).
TERM_COUNTS = f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{TABLE}_terms USING fts5vocab({{schema}}, {TABLE}, row)"
TERM_COUNT = f"SELECT doc FROM temp.{TABLE}_terms WHERE term = ?"
# The query's words tokenized by SQLite itself, with the index's own tokenizer (stemming included): one row
# per word, read back term by term; a scratch table in `temp`, emptied after each use.
QUERY_WORDS = "CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_words_{stemming} USING fts5(text, tokenize='{tokenizer}')"
QUERY_TERMS = "CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_terms_{stemming} USING fts5vocab(temp, query_words_{stemming}, instance)"
_WORD = re.compile(r"\w", re.UNICODE)
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Keywords:
    """What a query searches for: the words kept, and those left out as carrying no information."""

    kept: tuple[str, ...]
    ignored: tuple[str, ...]

    @property
    def expression(self) -> str | None:
        """The FTS5 query: each kept word a quoted phrase, OR-ed; None when no word is kept."""
        return " OR ".join('"' + word.replace('"', '""') + '"' for word in self.kept) or None


def fold(word: str) -> str:
    """Lower case without diacritics, as ``unicode61 remove_diacritics 2`` folds a token."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def keywords(db: sqlite3.Connection, query: str, stop: frozenset[str]) -> Keywords:
    """Split `query` into the words that create keyword matches and those that carry no information.

    A word is left out when every token of it is a stop word (`stop`, folded), or when the store holds at
    least `MIN_RECORDS_FOR_FREQUENCY` records and every token of it is found in half of them or more.
    """
    words = [word for word in query.split() if _WORD.search(word)]
    ignored = [word for word in words if all(token in stop for token in _TOKEN.findall(fold(word)))]
    candidates = [word for word in words if word not in ignored]
    total = indexed_records(db)
    if candidates and total >= MIN_RECORDS_FOR_FREQUENCY:
        counts = _term_counts(db)
        common = [
            word
            for word, terms in zip(candidates, _query_terms(db, candidates))
            if all(2 * counts(term) >= total for term in terms)
        ]
        ignored += common
        candidates = [word for word in candidates if word not in common]
    return Keywords(tuple(candidates), tuple(word for word in words if word in ignored))


def search(
    db: sqlite3.Connection, query: str, condition: str, params: list[Any], k: int, stop: frozenset[str]
) -> list[tuple[int, float]]:
    """(key, BM25 score, higher is better) of the `k` best records matching `query` and the SQL `condition`."""
    expression = keywords(db, query, stop).expression
    if expression is None:
        return []
    return db.execute(SEARCH.format(condition=condition), [expression, *params, k]).fetchall()


def indexed_records(db: sqlite3.Connection) -> int:
    """How many records the index holds (those with text)."""
    row = db.execute(AVERAGES.format(schema=_schema(db))).fetchone()
    return 0 if row is None or not row[0] else _varint(row[0])


def stemming(db: sqlite3.Connection) -> Stemming:
    """The stemming of the index as it was created (``"none"`` for an index from before the setting)."""
    row = db.execute(TABLE_SQL).fetchone()
    return "porter" if row is not None and "porter" in row[0] else "none"


def ensure(db: sqlite3.Connection, read_only: bool, stemming: Stemming) -> None:
    """Create and fill the index of a catalog written before it existed (inside the caller's transaction)."""
    if db.execute(HAS_TABLE).fetchone() is not None:
        return
    if read_only:
        db.execute(TEMP_CREATE.format(tokenizer=TOKENIZERS[stemming]))
        db.execute(FILL)
    else:
        db.execute(VIEW)
        db.execute(CREATE.format(tokenizer=TOKENIZERS[stemming]))
        db.execute(REBUILD)


def restem(db: sqlite3.Connection, stemming: Stemming) -> None:
    """Index every record's text again with another tokenizer (inside the caller's write transaction)."""
    db.execute(f"DROP TABLE IF EXISTS temp.{TABLE}_terms")  # refers to the table being replaced
    db.execute(f"DROP TABLE {TABLE}")
    ensure(db, read_only=False, stemming=stemming)


def _schema(db: sqlite3.Connection) -> str:
    return "main" if db.execute(HAS_TABLE).fetchone() is not None else "temp"


def _term_counts(db: sqlite3.Connection) -> Any:
    db.execute(TERM_COUNTS.format(schema=_schema(db)))

    def count(term: str) -> int:
        row = db.execute(TERM_COUNT, (term,)).fetchone()
        return 0 if row is None else int(row[0])

    return count


def _query_terms(db: sqlite3.Connection, words: list[str]) -> list[list[str]]:
    """The index terms of each word, in order, tokenized (and stemmed) exactly as the index does it."""
    kind = stemming(db)
    db.execute(QUERY_WORDS.format(stemming=kind, tokenizer=TOKENIZERS[kind]))
    db.execute(QUERY_TERMS.format(stemming=kind))
    db.executemany(f"INSERT INTO temp.query_words_{kind}(rowid, text) VALUES (?, ?)", enumerate(words))
    terms: list[list[str]] = [[] for _ in words]
    for number, term in db.execute(f"SELECT doc, term FROM temp.query_terms_{kind} ORDER BY doc, offset"):
        terms[number].append(term)
    db.execute(f"DELETE FROM temp.query_words_{kind}")
    return terms


def _varint(data: bytes) -> int:
    """SQLite's variable-length integer at the start of `data` (big-endian, 7 bits a byte, 8 in the ninth)."""
    value = 0
    for position, byte in enumerate(data[:9]):
        if position == 8:
            return (value << 8) | byte
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value
    return value
