"""The catalog's metadata index: indexed filters give exactly the answers of the JSON scan they replace, on a
key missing from most records, on list values and on mixed types; catalogs written without the index (or
with records added by an mm-rag that did not keep it) are indexed when opened, read-only ones in memory."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from _reference import matches
from test_filters import CASES, RECORDS

from mm_rag import MultimodalStore, Record
from mm_rag.filters import INDEX_TABLE, canonical_filter, compile_filter
from mm_rag.store.catalog import Catalog

MIXED = [None, 0, 1, 1.0, -0.0, 2.5, 2**62, 1e300, "1", "a", "A b", "", True, False, [], [1, "a"],
         ["a", "a"], [True, None], [[1], {"x": 1}], {"x": 1}, [2.5, "straße"]]  # fmt: skip


def both(catalog: Catalog, f) -> tuple[list[int], list[int]]:
    indexed = catalog.matching_keys(*compile_filter(f)).tolist()
    return indexed, catalog.matching_keys(*compile_filter(f, indexed=False)).tolist()


@pytest.fixture
def sparse():
    """400 records; one in 40 has "rare" (of a mixed type), every one has a list "tags" and a number "n"."""
    records = []
    for i in range(400):
        metadata = {"n": i % 7, "tags": [f"t{i % 5}", i % 3, f"t{i % 2}"]}
        if i % 40 == 0:
            metadata["rare"] = MIXED[(i // 40) % len(MIXED)]
        records.append(Record(f"r{i}", "text", metadata=metadata, doc_id=f"d{i % 4}"))
    with MultimodalStore() as store:
        store.upsert(records)
        yield store, records


def _filters() -> list[dict]:
    out: list[dict] = []
    for operand in [None, 0, 1, 2.5, "1", "a", "", True, False, 2**62, "straße"]:
        for op in ("$eq", "$ne", "$contains", "$in", "$nin"):
            out.append({"rare": {op: [operand, "a"] if op in ("$in", "$nin") else operand}})
    for op in ("$gt", "$gte", "$lt", "$lte"):
        out += [{"rare": {op: 1}}, {"rare": {op: "a"}}, {"tags": {op: 1}}, {"tags": {op: "t2"}}]
    out += [
        {"rare": {"$exists": True}},
        {"rare": {"$exists": False}},
        {"rare": {"$icontains": "A"}},
        {"rare": {"$icontains": "STRASSE"}},
        {"tags": "t3"},
        {"tags": 2},
        {"tags": {"$contains": "t1"}},
        {"tags": {"$in": ["t4", 0]}},
        {"tags": {"$nin": ["t0", "t1"]}},
        {"$and": [{"tags": "t1"}, {"tags": 2}, {"n": {"$gte": 3}}]},
        {"$or": [{"rare": "a"}, {"doc_id": "d3", "n": 0}]},
        {"$not": {"rare": {"$exists": True}}, "doc_id": {"$in": ["d1", "d2"]}},
        {"id": {"$in": ["r0", "r40", "nope"]}, "rare": {"$ne": None}},
    ]
    return out


@pytest.mark.parametrize("f", _filters(), ids=canonical_filter)
def test_index_answers_like_the_scan_and_the_reference(sparse, f):
    store, records = sparse
    indexed, scanned = both(store._generations.catalog, f)
    assert indexed == scanned
    assert [r.id for r in store.find(f)] == [r.id for r in records if matches(f, r)]


@pytest.mark.parametrize("f, _", CASES, ids=[canonical_filter(f) for f, _ in CASES])
def test_hand_worked_cases_agree_with_the_scan(tmp_path, f, _):
    catalog = Catalog(tmp_path / "c.sqlite")
    catalog.insert(np.arange(len(RECORDS), dtype=np.int64), RECORDS, [_json(r) for r in RECORDS])
    indexed, scanned = both(catalog, f)
    assert indexed == scanned
    catalog.close()


def test_index_follows_deletes_replacements_and_clear(sparse):
    store, records = sparse
    store.delete([f"r{i}" for i in range(0, 400, 80)])
    store.upsert([Record("r40", "text", metadata={"rare": "new"}), Record("x", "text", metadata={"rare": [1]})])
    live = [r for r in records if r.id not in {f"r{i}" for i in range(0, 400, 80)} | {"r40"}]
    live += store.get(["r40", "x"])
    for f in ({"rare": {"$exists": True}}, {"rare": "new"}, {"rare": 1}, {"rare": {"$contains": 1}}):
        assert {r.id for r in store.find(f)} == {r.id for r in live if matches(f, r)}
    rows = store._generations.catalog._db.execute(f"SELECT count(DISTINCT rec) FROM {INDEX_TABLE}").fetchone()[0]
    assert rows == len(live)  # no rows of deleted or replaced records remain
    store.clear()
    assert store._generations.catalog._db.execute(f"SELECT count(*) FROM {INDEX_TABLE}").fetchone()[0] == 0


def test_a_catalog_without_the_index_is_indexed_when_opened(tmp_path):
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        store.upsert(RECORDS)
        store.save()
    db = sqlite3.connect(path / "catalog.sqlite")
    db.execute(f"DROP TABLE {INDEX_TABLE}")  # as a catalog written before the index existed
    db.execute("DELETE FROM settings WHERE name = 'metadata_index_max_key'")
    db.commit()
    db.close()
    with MultimodalStore.open(path) as store:
        for f, expected in CASES:
            if not isinstance(expected, str):
                assert {r.id for r in store.find(f)} == expected, f


def test_records_added_without_the_index_are_indexed_at_the_next_open(tmp_path):
    path = tmp_path / "c.sqlite"
    catalog = Catalog(path)
    catalog.insert(np.arange(3, dtype=np.int64), RECORDS[:3], [_json(r) for r in RECORDS[:3]])
    catalog.commit()
    catalog.close()
    db = sqlite3.connect(path)  # what an mm-rag without the index does: records only
    db.execute(
        "INSERT INTO records (key, id, modality, metadata) VALUES (7, 'late', 'text', ?)", ('{"year": [2020, 7]}',)
    )
    db.commit()
    db.close()
    catalog = Catalog(path)
    assert catalog.matching_keys(*compile_filter({"year": 2020})).tolist() == [0, 7]
    catalog.close()


def test_a_read_only_catalog_without_the_index_gets_one_in_memory(tmp_path):
    path = tmp_path / "c.sqlite"
    catalog = Catalog(path)
    catalog.insert(np.arange(len(RECORDS), dtype=np.int64), RECORDS, [_json(r) for r in RECORDS])
    catalog.commit()
    catalog.close()
    db = sqlite3.connect(path)
    db.execute(f"DROP TABLE {INDEX_TABLE}")
    db.commit()
    db.close()
    reader = Catalog(path, read_only=True)
    for f, expected in CASES[:20]:
        indexed, scanned = both(reader, f)
        assert indexed == scanned
    reader.close()
    db = sqlite3.connect(path)
    assert db.execute(f"SELECT 1 FROM sqlite_master WHERE name = '{INDEX_TABLE}'").fetchone() is None
    db.close()


def _json(record: Record) -> str:
    from mm_rag.records import encode_record

    return encode_record(record)
