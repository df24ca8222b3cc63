"""Which way a filtered search goes (`mm_rag.store.searching`), and that either way gives the exact answer on Flat.

A broad filter ranks candidates first and checks them; a selective one, a repeated one (keys cached) and one
that keeps exactly the vectors farthest from the query (so that the candidates never hold enough) collect the
matching keys first. Every answer is compared with brute force over the matching vectors.
"""

from __future__ import annotations

import numpy as np
import pytest

from mm_rag import MultimodalStore, Record
from mm_rag.store import searching

N, DIM, K = 20_000, 16, 10


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    query = vectors[0] + 0.1 * rng.normal(size=DIM).astype(np.float32)
    query /= np.linalg.norm(query)
    far = set(np.argsort(vectors @ query)[: N // 10].tolist())  # the tenth least like the query
    records = [
        Record(f"r{i}", "text", text="x", metadata={"g": i % 10, "y": 1990 + i % 30, "far": i in far, "u": i % 1000})
        for i in range(N)
    ]
    store = MultimodalStore(tmp_path_factory.mktemp("plans") / "store")
    store.create_space("v", DIM, index="Flat")
    store.add(records, {"v": vectors})
    store.save()
    yield store, vectors, query, records
    store.close()


def brute_force(vectors, query, records, keep) -> list[str]:
    ids = np.array([i for i, record in enumerate(records) if keep(record.metadata)])
    order = np.argsort(-(vectors[ids] @ query), kind="stable")[:K]
    return [records[i].id for i in ids[order]]


@pytest.fixture()
def collected(monkeypatch):
    """How many times a search collected a filter's keys (the keys-first way)."""
    calls = []
    planned = searching.plan_filter
    monkeypatch.setattr(searching, "plan_filter", lambda *args: calls.append(1) or planned(*args))
    return calls


CASES = {
    "broad conjunction (10 %)": ({"g": 3, "y": {"$gte": 1990}}, lambda m: m["g"] == 3, False),
    "broad or (20 %)": ({"$or": [{"g": 1}, {"g": 2}]}, lambda m: m["g"] in (1, 2), False),
    "single term from the index (10 %)": ({"g": 4}, lambda m: m["g"] == 4, True),
    "selective conjunction (0.1 %)": ({"u": 5, "g": {"$in": [5, 6]}}, lambda m: m["u"] == 5, True),
    "the farthest tenth": ({"far": True, "y": {"$gte": 1990}}, lambda m: m["far"], True),
}


@pytest.mark.parametrize("case", CASES)
def test_each_way_gives_the_exact_answer(data, collected, case):
    store, vectors, query, records = data
    filter, keep, keys_first = CASES[case]
    store._matching.clear()
    hits = store.search("v", query, k=K, filter=filter)
    assert [hit.record.id for hit in hits] == brute_force(vectors, query, records, keep)
    assert bool(collected) == keys_first


def test_a_repeated_filter_uses_its_cached_keys(data, collected):
    store, _vectors, query, _records = data
    store._matching.clear()
    filter = {"g": 3, "y": {"$gte": 1990}}
    first = store.search("v", query, k=K, filter=filter)
    assert not collected  # broad: candidates first, nothing collected, nothing cached
    store._matching(filter)
    collected.clear()
    again = store.search("v", query, k=K, filter=filter)
    assert [hit.record.id for hit in again] == [hit.record.id for hit in first]
    assert np.allclose([hit.score for hit in again], [hit.score for hit in first], atol=1e-5)
    assert not collected  # the cached keys answered, without planning again


def test_candidates_first_widens_until_every_query_has_k(data, monkeypatch):
    """With a margin far too small, the first candidates hold too few hits: the search asks for more."""
    store, vectors, query, records = data
    store._matching.clear()
    monkeypatch.setattr(searching, "MARGIN", 0.05)
    asked = []
    search = type(store._generations.spaces["v"]).search
    monkeypatch.setattr(
        type(store._generations.spaces["v"]), "search", lambda s, q, k, a: asked.append(k) or search(s, q, k, a)
    )
    hits = store.search_batch("v", np.stack([query, vectors[1]]), k=K, filter={"g": 7, "y": {"$lt": 2100}})
    assert asked[0] < asked[-1] and len(asked) > 1
    for row, q in zip(hits, (query, vectors[1])):
        assert [hit.record.id for hit in row] == brute_force(vectors, q, records, lambda m: m["g"] == 7)
