"""Filters planned by cost (`mm_rag.store.planner`): the same keys as the unplanned filter, found the cheap way.

The hypothesis model (`test_store_model.py`) compares planned, indexed, scanned and reference results on random
filters; these tests pin down the plans themselves on a store where the terms' sizes are known.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mm_rag import FilterError, MultimodalStore, Record
from mm_rag.filters import compile_filter
from mm_rag.store import planner
from mm_rag.store.catalog import Catalog
from mm_rag.store.planner import plan_filter

COUNT = 5000
ALL_TAGS = [f"t{i}" for i in range(7)]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5,000 records: ``user`` picks 0.1 %, ``team`` 1 %, ``tag`` 1/7, ``year`` spans 35 years, ``tags`` a list."""
    path = tmp_path_factory.mktemp("planner") / "store"
    records = [
        Record(
            f"r{i}",
            "image" if i % 2 else "text",
            metadata={
                "user": i % 1000,
                "team": i % 100,
                "tag": f"t{i % 7}",
                "year": 1990 + i % 35,
                "tags": ["a", str(i % 3)],
            },
            doc_id=f"d{i % 50}",
        )
        for i in range(COUNT)
    ]
    vectors = np.random.default_rng(0).standard_normal((COUNT, 8)).astype(np.float32)
    with MultimodalStore(path) as store:
        store.create_space("v", 8, index="Flat")
        store.add(records, {"v": vectors})
        store.save()
    return path


class Counts:
    """The catalog's capped counter, recording each cap asked for."""

    def __init__(self, store: MultimodalStore) -> None:
        self.catalog, self.caps = store._generations.catalog, []

    def __call__(self, select: str, params: list, cap: int) -> int:
        self.caps.append(cap)
        return self.catalog.count_rows(select, params, cap)


SHAPES = {
    "selective and broad": {"user": 7, "tag": {"$in": ALL_TAGS}},
    "selective and range": {"user": 7, "year": {"$gte": 1990}},
    "nested": {"$and": [{"year": {"$gte": 1990}}, {"$or": [{"user": 7}, {"team": 8}]}]},
    "broad first, list member": {"tags": {"$contains": "a"}, "team": 8, "modality": "text"},
    "and of two ranges": {"year": {"$gte": 1995, "$lt": 2020}, "user": {"$in": [7, 8, 9]}},
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_broad_terms_are_checked_per_candidate_and_the_keys_are_the_same(store_path: Path, shape: str) -> None:
    filter = SHAPES[shape]
    with MultimodalStore.open(store_path) as store:
        select, params = plan_filter(filter, Counts(store))
        assert "EXISTS" in select  # the broad term became a check of each candidate
        expected = store._generations.catalog.matching_keys(*compile_filter(filter))
        assert store._generations.catalog.keys_of(select, params).tolist() == expected.tolist()
        assert 0 < len(expected) <= 150
        assert [r.id for r in store.find(filter)] == [f"r{k}" for k in expected.tolist()]  # keys are 0-based ids


def test_terms_of_similar_size_are_all_looked_up(store_path: Path) -> None:
    with MultimodalStore.open(store_path) as store:
        filter = {"team": 8, "user": {"$in": [8, 108, 208, 308, 408, 508]}}  # 50 and 30 records
        select, params = plan_filter(filter, Counts(store))
        # the smaller one drives, read from the value index alone; the other is looked up too, not checked
        assert select.startswith("SELECT DISTINCT r.key FROM (SELECT rec AS key FROM meta_values WHERE")
        assert "EXISTS" not in select and "FROM records" not in select and select.count(" IN (SELECT rec") == 1
        expected = store._generations.catalog.matching_keys(*compile_filter(filter))
        assert store._generations.catalog.keys_of(select, params).tolist() == expected.tolist() and len(expected) == 30


def test_a_single_term_or_no_second_lookup_is_compiled_as_it_is(store_path: Path) -> None:
    with MultimodalStore.open(store_path) as store:
        counts = Counts(store)
        for filter in ({"user": 7, "modality": "image"}, {"$or": [{"user": 1}, {"team": 2}]}, None):
            condition, params = compile_filter(filter)
            assert plan_filter(filter, counts) == (f"SELECT r.key FROM records AS r WHERE {condition}", params)
        select, params = plan_filter({"user": {"$in": [7, "7"]}}, counts)  # one lookup: its index rows are the keys
        assert select == (
            "SELECT DISTINCT r.key FROM (SELECT rec AS key FROM meta_values WHERE field = ? AND kind = 3 AND value IN (?)"
            " UNION ALL SELECT rec AS key FROM meta_values WHERE field = ? AND kind = 4 AND value IN (?)) AS r"
        )
        assert store._generations.catalog.keys_of(select, params).tolist() == [7, 1007, 2007, 3007, 4007]
        assert counts.caps == []  # nothing to choose between: nothing estimated


def test_estimates_count_no_further_than_the_smallest_term_needs(store_path: Path) -> None:
    with MultimodalStore.open(store_path) as store:
        counts = Counts(store)
        plan_filter({"user": 7, "year": {"$gte": 1990}, "tags": {"$contains": "a"}}, counts)
        assert max(counts.caps) == planner.FIRST_CAP  # 5 matches found at once: the broad counts stopped at 1,024
        counts.caps.clear()
        plan_filter({"tag": "t1", "year": {"$gte": 1990}}, counts)  # 715 and 5,000: 715 counted, 5,000 stopped
        assert max(counts.caps) <= planner.DRIVER_RATIO * 715 + 1


def test_errors_name_the_users_own_path(store_path: Path) -> None:
    with MultimodalStore.open(store_path) as store, pytest.raises(FilterError, match=r"filter\.year"):
        store.search("v", np.ones(8), k=3, filter={"user": 7, "year": {"$bad": 1}})


def test_a_read_only_catalog_plans_with_its_temporary_index(store_path: Path, tmp_path: Path) -> None:
    """A catalog that cannot be written and lacks the value index (written before it existed) gets one in
    SQLite's temp schema for its connection; the plan's per-record check uses that index too."""
    copy = tmp_path / "ro"
    shutil.copytree(store_path, copy)
    with sqlite3.connect(copy / "catalog.sqlite") as db:
        db.execute("DROP TABLE meta_values")
    catalog = Catalog(copy / "catalog.sqlite", read_only=True)
    try:
        filter = SHAPES["selective and range"]
        select, params = plan_filter(filter, catalog.count_rows)
        assert "EXISTS" in select
        assert catalog.keys_of(select, params).tolist() == [7 + 1000 * i for i in range(5)]
    finally:
        catalog.close()
