"""Every `MultimodalStore` operation: spaces, writes, reads, search, persistence, bad input, threads."""

from __future__ import annotations

import itertools
import json
import math
import threading
import time

import numpy as np
import pytest

from mm_rag import InvalidInputError, MultimodalStore, Record, SpaceConfig, StoreFormatError, UnknownSpaceError
from mm_rag.store import space as space_module
from mm_rag.store import store as store_module

DIM = 16


def vecs(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def recs(n: int, prefix: str = "r", start: int = 0, **fields) -> list[Record]:
    return [
        Record(f"{prefix}{i}", "text", text=f"item {i}", metadata={"n": i, "even": i % 2 == 0}, **fields)
        for i in range(start, start + n)
    ]


def hit_ids(hits) -> list[str]:
    return [h.record.id for h in hits]


def brute_force(metric: str, queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) best first, with the store's score convention: higher is better."""
    if metric == "cosine":
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
    if metric == "l2":
        scores = -np.linalg.norm(queries[:, None, :] - base[None, :, :], axis=2)
    else:
        scores = queries @ base.T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


def snapshot(store: MultimodalStore, queries: np.ndarray | None = None) -> dict:
    """Everything observable about a store, to compare before and after an operation."""
    state = {
        "count": store.count(),
        "records": list(store),
        "spaces": store.spaces,
        "vector counts": {name: store.count(name) for name in store.spaces},
    }
    ids = [r.id for r in state["records"]]
    for name in store.spaces:
        state[f"vectors:{name}"] = {i: v.tolist() for i, v in store.vectors(name, ids).items()}
    if queries is not None:
        for name, config in store.spaces.items():
            q = queries[:, : config.dim]
            state[f"search:{name}"] = [
                [(h.record.id, round(h.score, 5)) for h in hits] for hits in store.search_batch(name, q, k=20)
            ]
            state[f"filtered:{name}"] = [
                [(h.record.id, round(h.score, 5)) for h in hits]
                for hits in store.search_batch(name, q, k=20, filter={"even": True})
            ]
    return state


@pytest.fixture
def store():
    with MultimodalStore() as s:
        yield s


# --- spaces --------------------------------------------------------------------------------------------


def _circular() -> dict:
    metadata: dict = {"a": 1}
    metadata["self"] = metadata
    return metadata


def test_create_space_returns_its_config_and_is_idempotent(store):
    config = store.create_space("clip", 8, "cosine")
    assert config == SpaceConfig("clip", 8, "cosine", "auto")
    assert store.create_space("clip", 8, "cosine") == config
    assert store.create_space("clip", 8) == config
    assert store.spaces == {"clip": config}
    store.create_space("text-2_b", 4, "l2", "HNSW32")
    assert set(store.spaces) == {"clip", "text-2_b"}


@pytest.mark.parametrize(
    "args",
    [
        ("clip", 9, "cosine"),
        ("clip", 8, "l2"),
        ("clip", 8, "ip"),
        ("clip", 8, "cosine", "HNSW32"),
        ("clip", 8, "cosine", "auto", 1234),
    ],
)
def test_create_space_with_a_different_config_raises(store, args):
    config = store.create_space("clip", 8, "cosine")
    with pytest.raises(InvalidInputError, match="clip"):
        store.create_space(*args)
    assert store.spaces == {"clip": config}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "s", "dim": 8, "metric": "cos"}, "metric"),
        ({"name": "s", "dim": 8, "metric": "L2"}, "metric"),
        ({"name": "s", "dim": 0}, "dim"),
        ({"name": "s", "dim": -3}, "dim"),
        ({"name": "s", "dim": 8.0}, "dim"),
        ({"name": "s", "dim": True}, "dim"),
        ({"name": "s", "dim": "8"}, "dim"),
        ({"name": "", "dim": 8}, "name"),
        ({"name": "a b", "dim": 8}, "name"),
        ({"name": "../up", "dim": 8}, "name"),
        ({"name": "a/b", "dim": 8}, "name"),
        ({"name": "a.b", "dim": 8}, "name"),
        ({"name": 5, "dim": 8}, "name"),
        ({"name": "s", "dim": 8, "index": "NotAnIndex"}, "index_factory"),
        ({"name": "s", "dim": 8, "index": "IVF16,PQ3"}, "index_factory"),  # 3 does not divide 8
        ({"name": "s", "dim": 8, "index": ""}, "index_factory"),
    ],
)
def test_create_space_rejects_a_bad_config(store, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        store.create_space(**kwargs)
    assert store.spaces == {}


def test_drop_space_keeps_the_records(store):
    store.create_space("a", 4)
    store.create_space("b", 4)
    store.upsert(recs(3), {"a": vecs(3, 4), "b": vecs(3, 4, 1)})
    store.drop_space("a")
    assert set(store.spaces) == {"b"}
    assert len(store) == 3
    with pytest.raises(UnknownSpaceError):
        store.search("a", vecs(1, 4)[0])
    with pytest.raises(UnknownSpaceError):
        store.drop_space("a")
    assert len(store.search("b", vecs(1, 4)[0], k=10)) == 3


# --- writes --------------------------------------------------------------------------------------------


def test_add_is_upsert():
    assert MultimodalStore.add is MultimodalStore.upsert


def test_upsert_thousands_in_one_call(store):
    store.create_space("a", DIM)
    store.create_space("b", 8, "l2")
    n = 3000
    a, b = vecs(n), vecs(n, 8, 1)
    records = recs(n)
    assert store.upsert(records, {"a": a, "b": b.tolist()}) == [r.id for r in records]
    assert len(store) == store.count() == n
    assert store.count("a") == store.count("b") == n
    assert store.get(["r0", "r2999"]) == [records[0], records[2999]]
    got = store.vectors("b", ["r17", "r2500"])
    np.testing.assert_allclose(got["r17"], b[17], rtol=1e-6)
    np.testing.assert_allclose(got["r2500"], b[2500], rtol=1e-6)
    hits = store.search("b", b[1234], k=1)
    assert hit_ids(hits) == ["r1234"] and hits[0].score == pytest.approx(0.0, abs=1e-3)


def test_records_without_vectors_are_stored_but_not_searchable(store):
    store.create_space("a", 4)
    store.upsert(recs(2, "v"), {"a": vecs(2, 4)})
    store.upsert(recs(3, "n"))
    assert len(store) == 5 and store.count("a") == 2
    assert set(hit_ids(store.search("a", [1, 0, 0, 0], k=10))) == {"v0", "v1"}
    assert store.vectors("a", ["n0", "v1"]).keys() == {"v1"}


def test_re_adding_an_id_replaces_record_and_vector(store):
    store.create_space("a", DIM)
    old, new = vecs(50), vecs(50, seed=1)
    store.upsert(recs(50), {"a": old})
    replacement = Record("r7", "image", uri="new.png", metadata={"n": 700})
    store.add([replacement], {"a": new[7:8]})
    assert len(store) == 50 and store.count("a") == 50
    assert store.get(["r7"]) == [replacement]
    np.testing.assert_allclose(store.vectors("a", ["r7"])["r7"], new[7] / np.linalg.norm(new[7]), rtol=1e-5)
    # searching with the old vector finds the old vector no more: r7 scores as the new vector does
    hits = store.search("a", old[7], k=50)
    assert [h.record.id for h in hits].count("r7") == 1
    score = next(h.score for h in hits if h.record.id == "r7")
    cos = float(old[7] @ new[7] / np.linalg.norm(old[7]) / np.linalg.norm(new[7]))
    assert score == pytest.approx(cos, abs=1e-5)
    assert hit_ids(store.search("a", new[7], k=1)) == ["r7"]
    assert store.search("a", old[7], k=50, filter={"n": 7}) == []
    assert hit_ids(store.search("a", old[7], k=50, filter={"n": 700})) == ["r7"]


def test_a_replaced_record_loses_the_vectors_it_is_not_given(store):
    store.create_space("a", 8)
    store.create_space("b", 8)
    store.upsert(recs(10), {"a": vecs(10, 8), "b": vecs(10, 8, 1)})
    store.upsert([Record("r3", "text", text="only b now")], {"b": vecs(1, 8, 2)})
    assert store.count("a") == 9 and store.count("b") == 10
    assert "r3" not in hit_ids(store.search("a", vecs(1, 8)[0], k=100))
    assert store.vectors("a", ["r3"]) == {}
    assert "r3" in hit_ids(store.search("b", vecs(1, 8, 2)[0], k=1))
    store.upsert([Record("r4", "text")])  # no vectors at all: gone from both spaces, still a record
    assert store.count("a") == 8 and store.count("b") == 9 and len(store) == 10
    assert store.get(["r4"]) == [Record("r4", "text")]


def test_upsert_in_several_batches_with_mixed_new_and_existing_ids(store):
    store.create_space("a", 8, "l2")
    base = vecs(20, 8)
    store.upsert(recs(10), {"a": base[:10]})
    store.upsert(recs(10, start=5), {"a": base[10:20]})  # r5..r9 replaced, r10..r14 new
    assert len(store) == 15 and store.count("a") == 15
    got = store.vectors("a", [f"r{i}" for i in range(15)])
    for i in range(15):
        np.testing.assert_array_equal(got[f"r{i}"], base[i] if i < 5 else base[i + 5])


def test_delete(store):
    store.create_space("a", 8)
    v = vecs(20, 8)
    store.upsert(recs(20), {"a": v})
    assert store.delete(["r1", "r2", "nope"]) == 2
    assert store.delete(["r1"]) == 0
    assert store.delete(["r6", "r6"]) == 1
    assert store.delete([]) == 0
    assert store.delete("r3") == 1  # one id as a plain string
    assert len(store) == 16 and store.count("a") == 16
    assert store.get(["r1", "r2", "r3", "r4"]) == [recs(20)[4]]
    found = hit_ids(store.search("a", v[1], k=100))
    assert len(found) == 16 and not {"r1", "r2", "r3", "r6"} & set(found)
    assert store.vectors("a", ["r1", "r4"]).keys() == {"r4"}


def test_delete_doc(store):
    store.create_space("a", 8)
    records = recs(4, "x", doc_id="doc-x") + recs(3, "y", doc_id="doc-y") + recs(2, "z")
    store.upsert(records, {"a": vecs(9, 8)})
    assert store.delete_doc("doc-x") == 4
    assert store.delete_doc("doc-x") == 0
    assert store.delete_doc("unknown") == 0
    assert sorted(r.id for r in store) == ["y0", "y1", "y2", "z0", "z1"]
    assert store.count("a") == 5
    assert not set(hit_ids(store.search("a", vecs(1, 8)[0], k=100))) & {"x0", "x1", "x2", "x3"}


def test_clear(store):
    store.create_space("a", 8)
    store.create_space("b", 4, "l2")
    store.upsert(recs(30), {"a": vecs(30, 8), "b": vecs(30, 4)})
    store.clear()
    assert len(store) == 0 and store.count("a") == 0 and store.count("b") == 0
    assert list(store) == []
    assert set(store.spaces) == {"a", "b"}
    assert store.search("a", vecs(1, 8)[0], k=5) == []
    assert store.search("b", vecs(1, 4)[0], k=5, filter={"n": 1}) == []
    store.upsert(recs(2), {"a": vecs(2, 8)})
    assert set(hit_ids(store.search("a", vecs(1, 8)[0], k=5))) == {"r0", "r1"}


# --- reads ---------------------------------------------------------------------------------------------


def test_get_keeps_the_order_asked_and_omits_unknown_ids(store):
    records = recs(10)
    store.upsert(records)
    assert store.get(["r5", "nope", "r1", "r9"]) == [records[5], records[1], records[9]]
    assert store.get([]) == []
    assert store.get("r2") == [records[2]]
    full = Record(
        "full",
        "video",
        "transcript",
        "file:///v.mp4",
        {"start": 1.5, "tags": ["a", "b"], "x": None, "deep": {"k": [1, {"z": True}]}},
        "doc",
        "hash",
    )
    store.upsert([full])
    assert store.get(["full"]) == [full]


def test_find_returns_matching_records_oldest_first_up_to_the_limit(store):
    records = recs(10)
    store.upsert(records)
    assert store.find({"even": True}) == records[0::2]
    assert store.find({"n": {"$gte": 7}}, limit=2) == records[7:9]
    assert store.find() == records
    assert store.find({"n": 99}) == []
    assert store.find(limit=0) == []
    with pytest.raises(InvalidInputError, match="limit"):
        store.find(limit=-1)
    with pytest.raises(InvalidInputError, match="operator"):
        store.find({"n": {"$bogus": 1}})


def test_iteration_yields_every_record_oldest_first(store):
    records = recs(2500)  # more than one page of the catalog
    store.upsert(records)
    assert list(store) == records
    store.upsert([Record("r0", "image")])  # replacing makes it the newest
    ids = [r.id for r in store]
    assert len(ids) == 2500 and ids[-1] == "r0" and ids[:2] == ["r1", "r2"]


def test_vectors_returns_normalised_cosine_and_raw_l2_ip(store):
    raw = vecs(5, 4)
    for metric in ("cosine", "l2", "ip"):
        store.create_space(metric, 4, metric)
    store.upsert(recs(5), {"cosine": raw, "l2": raw, "ip": raw})
    for metric in ("cosine", "l2", "ip"):
        got = store.vectors(metric, ["r4", "r0", "nope"])
        assert set(got) == {"r0", "r4"}
        expected = raw / np.linalg.norm(raw, axis=1, keepdims=True) if metric == "cosine" else raw
        np.testing.assert_allclose(got["r0"], expected[0], rtol=1e-6)
        np.testing.assert_allclose(got["r4"], expected[4], rtol=1e-6)
        assert got["r0"].dtype == np.float32
    with pytest.raises(UnknownSpaceError):
        store.vectors("nope", ["r0"])


def test_ids_with_hashes(store):
    store.upsert(
        [
            Record("a", "text", content_hash="h1"),
            Record("b", "text", content_hash="h2"),
            Record("c", "text", content_hash="h1"),
            Record("d", "text"),
        ]
    )
    assert store.ids_with_hashes(["h1", "zz"]) == {"a", "c"}
    assert store.ids_with_hashes(["h2"]) == {"b"}
    assert store.ids_with_hashes([]) == set()


def test_count_and_len(store):
    assert len(store) == 0 and store.count() == 0
    store.create_space("a", 4)
    assert store.count("a") == 0
    store.upsert(recs(7), {"a": vecs(7, 4)})
    store.upsert(recs(3, "n"))
    assert len(store) == store.count() == 10 and store.count("a") == 7
    with pytest.raises(UnknownSpaceError):
        store.count("nope")


def test_info(store):
    store.create_space("a", 8, "l2")
    store.create_space("h", 8, "cosine", "HNSW32")
    store.create_space("p", 8, "ip", "IVF16,PQ4")
    store.upsert(recs(40), {"a": vecs(40, 8), "h": vecs(40, 8)})
    info = store.info()
    assert info["path"] == str(store.path) and info["records"] == 40
    assert info["spaces"]["a"] == {
        "dim": 8,
        "metric": "l2",
        "index": "auto",
        "model": None,
        "built": "Flat",
        "vectors": 40,
        "trained": True,
        "memory_mapped": False,
        "segments": 0,
        "recent_vectors": 0,
        "mapped_segments": 0,
    }
    assert info["spaces"]["h"]["built"] == "HNSW32" and info["spaces"]["h"]["vectors"] == 40
    assert info["spaces"]["p"]["vectors"] == 0 and info["spaces"]["p"]["trained"] is False
    json.dumps(info)  # plain data


def test_info_shows_the_segments_saved_since_the_main_part(tmp_path):
    with MultimodalStore(tmp_path / "store") as store:
        store.create_space("a", 8, "l2")
        store.upsert(recs(40), {"a": vecs(40, 8)})
        store.save()
        store.upsert(recs(3, start=40), {"a": vecs(3, 8, seed=1)})
        store.save()  # a small save: one segment, searched exactly until it folds into the index
        shown = store.info()["spaces"]["a"]
        assert (shown["segments"], shown["recent_vectors"], shown["vectors"]) == (1, 3, 43)


def test_a_space_records_its_model_and_refuses_another(tmp_path):
    clip = {"kind": "open_clip", "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}
    with MultimodalStore(tmp_path / "s") as store:
        store.create_space("clip", 8)
        store.upsert(recs(3), {"clip": vecs(3, 8)})
        store.create_space("clip", 8, model=clip)  # a space made before models were recorded adopts one
        assert store.spaces["clip"].model == clip
        store.create_space("clip", 8, model=clip)  # the same model again is fine
        with pytest.raises(InvalidInputError, match="holds vectors of the model"):
            store.create_space("clip", 8, model=clip | {"pretrained": "openai"})
        store.save()
    with MultimodalStore.open(tmp_path / "s") as reopened:
        assert reopened.spaces["clip"].model == clip and reopened.count("clip") == 3
        assert json.loads((tmp_path / "s" / "mmrag.json").read_text())["spaces"]["clip"]["model"] == clip


# --- search --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_compressed_indices_are_refined_with_the_exact_vectors(store, metric):
    base, queries = vecs(12_000, 32), vecs(20, 32, seed=3)
    store.create_space("pq", 32, metric, "IVF16,PQ4")  # 4 bytes per vector: a coarse ranking on its own
    store.upsert(recs(12_000), {"pq": base})
    space = store._generations.spaces["pq"]
    assert space.index is not None and space.spec == "IVF16,PQ4"  # trained, so the index path is taken
    _, exact_rows = brute_force(metric, queries, base, 10)
    prepared = space.prepare(queries, len(queries), "search")
    _, raw = space.index.search(prepared, 10)  # the codes alone (keys are rows here)
    hits = store.search_batch("pq", queries, k=10)

    def recall(found):
        return np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact_rows.tolist())])

    ours = [[int(h.record.id[1:]) for h in row] for row in hits]
    assert recall(ours) >= recall(raw.tolist()) + 0.2  # re-scoring recovers much of what the codes lose
    for query, row in zip(queries, hits):  # and the scores are the exact ones
        for hit in row:
            expected, _ = brute_force(metric, query[None], base[int(hit.record.id[1:])][None], 1)
            assert hit.score == pytest.approx(float(expected[0, 0]), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_search_scores_match_brute_force(store, metric):
    base, queries = vecs(300), vecs(5, seed=1)
    store.create_space("s", DIM, metric)
    store.upsert(recs(300), {"s": base})
    results = store.search_batch("s", queries, k=10)
    expected_scores, expected_rows = brute_force(metric, queries, base, 10)
    assert len(results) == 5
    for hits, scores, rows in zip(results, expected_scores, expected_rows):
        assert hit_ids(hits) == [f"r{row}" for row in rows]
        assert [h.score for h in hits] == pytest.approx(scores.tolist(), rel=1e-4, abs=1e-4)
        assert [h.rank for h in hits] == list(range(10))
        assert all(h.space == "s" for h in hits)
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    # search is search_batch of one
    single = store.search("s", queries[2], k=10)
    assert [(h.record, h.score, h.rank) for h in single] == [(h.record, h.score, h.rank) for h in results[2]]


def test_cosine_vectors_of_extreme_magnitude_are_normalised(store):
    store.create_space("c", 4)
    store.upsert(
        [Record("huge", "text"), Record("tiny", "text"), Record("y", "text")],
        {"c": [[1e20, 0, 0, 1e20], [0, 3e-25, 0, -4e-25], [0, 1, 0, 0]]},
    )
    got = store.vectors("c", ["huge", "tiny"])
    np.testing.assert_allclose(got["huge"], [0.7071068, 0, 0, 0.7071068], rtol=1e-6)
    np.testing.assert_allclose(got["tiny"], [0, 0.6, 0, -0.8], rtol=1e-6)
    hits = store.search("c", [0, 1e-30, 0, 0], k=3)
    assert [(h.record.id, round(h.score, 5)) for h in hits] == [("y", 1.0), ("tiny", 0.6), ("huge", 0.0)]
    hits = store.search("c", [1e30, 0, 0, 1e30], k=1)
    assert hits[0].record.id == "huge" and hits[0].score == pytest.approx(1.0)


def test_auto_index_moves_up_the_size_rule_and_stays_complete(tmp_path, monkeypatch):
    from mm_rag.store import indexing

    monkeypatch.setattr(indexing, "FLAT_LIMIT", 100)
    path = tmp_path / "store"
    built = []
    with MultimodalStore(path) as store:
        store.create_space("s", 8, "l2")
        base = vecs(300, 8)
        for start in range(0, 300, 60):
            store.upsert(recs(60, start=start), {"s": base[start : start + 60]})
            built.append(store.info()["spaces"]["s"]["built"])
            assert len(store.search("s", base[0], k=1000)) == start + 60
        assert built == ["Flat", "HNSW32", "HNSW32", "HNSW32", "HNSW32"]
        store.delete([f"r{i}" for i in range(100)])
        hits = store.search("s", base[150], k=1000)
        assert len(hits) == 200 and hits[0].record.id == "r150"
        store.save()
    with MultimodalStore.open(path) as reopened:
        assert reopened.info()["spaces"]["s"]["built"] == "HNSW32"
        assert len(reopened.search("s", base[0], k=1000)) == 200


def test_l2_score_is_minus_the_euclidean_distance(store):
    store.create_space("s", 2, "l2")
    store.upsert([Record("a", "text"), Record("b", "text")], {"s": [[3, 4], [1, 0]]})
    hits = store.search("s", [0, 0], k=2)
    assert [(h.record.id, h.score) for h in hits] == [("b", pytest.approx(-1.0)), ("a", pytest.approx(-5.0))]


def test_cosine_and_ip_scores(store):
    store.create_space("c", 2, "cosine")
    store.create_space("i", 2, "ip")
    store.upsert([Record("a", "text"), Record("b", "text")], {"c": [[3, 4], [0, 2]], "i": [[3, 4], [0, 2]]})
    assert [(h.record.id, h.score) for h in store.search("c", [0, 10], k=2)] == [
        ("b", pytest.approx(1.0)),
        ("a", pytest.approx(0.8)),
    ]
    assert [(h.record.id, h.score) for h in store.search("i", [0, 10], k=2)] == [
        ("a", pytest.approx(40.0)),
        ("b", pytest.approx(20.0)),
    ]


@pytest.mark.parametrize("index", ["auto", "HNSW32", "IVF16,Flat", "IVF16,PQ4x4", "IVF16,PQ4"])
def test_search_never_returns_fewer_than_k_or_the_matches(store, index, monkeypatch):
    store.create_space("s", DIM, "l2", index)
    store.upsert(recs(700), {"s": vecs(700)})
    store.delete([f"r{i}" for i in range(0, 700, 7)])  # HNSW keeps tombstones
    live = 700 - 100
    q = vecs(3, seed=5)
    for hits in store.search_batch("s", q, k=1000):
        assert len(hits) == live and len(set(hit_ids(hits))) == live
        assert [h.rank for h in hits] == list(range(live))
    assert len(store.search("s", q[0], k=25)) == 25
    # a filtered search through the index (forced by lowering the exact-scan limit) as well as exactly
    for limit in (space_module.EXACT_SCAN_LIMIT, 0):
        monkeypatch.setattr(space_module, "EXACT_SCAN_LIMIT", limit)
        hits = store.search("s", q[0], k=40, filter={"n": {"$lt": 100}})
        expected = {f"r{i}" for i in range(100) if i % 7}
        assert len(hits) == 40 and set(hit_ids(hits)) <= expected
        hits = store.search("s", q[0], k=1000, filter={"n": {"$lt": 100}})
        assert set(hit_ids(hits)) == expected


def test_filtered_search_through_a_flat_index_is_exact(store, monkeypatch):
    monkeypatch.setattr(space_module, "EXACT_SCAN_LIMIT", 0)
    base = vecs(500)
    store.create_space("s", DIM, "cosine")
    store.upsert(recs(500), {"s": base})
    q = vecs(1, seed=9)
    rows = np.arange(0, 500, 2)
    scores, order = brute_force("cosine", q, base[rows], 10)
    hits = store.search("s", q[0], k=10, filter={"even": True})
    assert hit_ids(hits) == [f"r{rows[i]}" for i in order[0]]
    assert [h.score for h in hits] == pytest.approx(scores[0].tolist(), abs=1e-5)


def test_search_k_larger_than_the_collection(store):
    store.create_space("s", 4)
    store.upsert(recs(3), {"s": vecs(3, 4)})
    hits = store.search("s", vecs(1, 4)[0], k=50)
    assert sorted(hit_ids(hits)) == ["r0", "r1", "r2"] and [h.rank for h in hits] == [0, 1, 2]
    assert store.search_batch("s", vecs(2, 4), k=50)[1] != []


@pytest.mark.parametrize("index", ["auto", "HNSW32", "IVF16,Flat"])
def test_search_with_a_huge_k_returns_everything_without_allocating_k_results(store, index):
    store.create_space("s", 8, "l2", index)
    store.upsert(recs(700), {"s": vecs(700, 8)})
    hits = store.search("s", vecs(1, 8)[0], k=10**9)
    assert len(hits) == 700 and len(set(hit_ids(hits))) == 700
    filtered = store.search("s", vecs(1, 8)[0], k=10**9, filter={"n": {"$lt": 10}})
    assert sorted(hit_ids(filtered)) == sorted(f"r{i}" for i in range(10))
    assert len(store.search_batch("s", vecs(3, 8), k=2**40)[2]) == 700  # k results per query would be terabytes


def test_search_in_an_empty_space(store):
    store.create_space("s", 4)
    assert store.search("s", [1, 0, 0, 0]) == []
    store.upsert(recs(3))
    assert store.search("s", [1, 0, 0, 0], filter={"n": 1}) == []


@pytest.mark.parametrize("k", [0, -1, 1.5, "3", True, None])
def test_search_rejects_a_bad_k(store, k):
    store.create_space("s", 4)
    store.upsert(recs(3), {"s": vecs(3, 4)})
    with pytest.raises(InvalidInputError, match="k"):
        store.search("s", [1, 0, 0, 0], k=k)
    with pytest.raises(InvalidInputError):
        store.search_batch("s", vecs(2, 4), k=k)


@pytest.mark.parametrize(
    "query",
    [
        [1, 0, 0],
        [1, 0, 0, 0, 0],
        [[1, 0, 0, 0]],
        [float("nan"), 0, 0, 0],
        [0, float("inf"), 0, 0],
        [0, 0, 0, 0],
        "abcd",
        [None, 1, 2, 3],
    ],
)
def test_search_rejects_a_bad_query_vector(store, query):
    store.create_space("s", 4)
    store.upsert(recs(3), {"s": vecs(3, 4)})
    with pytest.raises(InvalidInputError):
        store.search("s", query)


def test_search_batch_rejects_no_queries_and_unknown_space(store):
    store.create_space("s", 4)
    with pytest.raises(InvalidInputError):
        store.search_batch("s", [])
    with pytest.raises(InvalidInputError):
        store.search_batch("s", np.empty((0, 4), dtype=np.float32))
    with pytest.raises(UnknownSpaceError, match="nope") as error:
        store.search("nope", [1, 0, 0, 0])
    assert isinstance(error.value, KeyError) and isinstance(error.value, InvalidInputError)


# --- bad input leaves the store unchanged --------------------------------------------------------------

BAD_UPSERTS = {
    "wrong dimension": lambda: ([Record("new", "text")], {"c": vecs(1, 5)}),
    "wrong dimension, second space": lambda: ([Record("r1", "text")], {"c": vecs(1, 8), "l": vecs(1, 8)}),
    "NaN vector": lambda: (recs(2, "n"), {"c": np.array([[1] * 8, [float("nan")] + [1] * 7])}),
    "inf vector": lambda: (recs(2, "n"), {"l": np.array([[1] * 4, [1, 2, float("-inf"), 3]])}),
    "zero vector in a cosine space": lambda: ([Record("r2", "text")], {"c": np.zeros((1, 8))}),
    "empty batch": lambda: ([], None),
    "empty batch with vectors": lambda: ([], {"c": np.empty((0, 8))}),
    "duplicate ids": lambda: ([Record("d", "text"), Record("e", "text"), Record("d", "text")], None),
    "duplicate existing ids": lambda: ([Record("r1", "text"), Record("r1", "image")], {"c": vecs(2, 8)}),
    "unknown space": lambda: ([Record("r1", "text")], {"nope": vecs(1, 8)}),
    "bad modality": lambda: ([Record("r1", "pdf")], None),
    "non-string id": lambda: ([Record(5, "text")], None),
    "empty id": lambda: ([Record("", "text")], None),
    "non-string text": lambda: ([Record("r1", "text", text=5)], None),
    "set metadata": lambda: ([Record("r1", "text", metadata={"s": {1, 2}})], None),
    "NaN metadata": lambda: ([Record("r1", "text", metadata={"x": [1.0, float("nan")]})], None),
    "infinite metadata": lambda: ([Record("r1", "text", metadata={"x": float("inf")})], None),
    "object metadata": lambda: ([Record("r1", "text", metadata={"o": object()})], None),
    "non-string metadata key": lambda: ([Record("r1", "text", metadata={1: "a"})], None),
    "metadata not a dict": lambda: ([Record("r1", "text", metadata=[1, 2])], None),
    "circular metadata": lambda: ([Record("r1", "text", metadata=_circular())], None),
    "not a record": lambda: ([{"id": "x", "modality": "text"}], None),
    "too many vectors": lambda: (recs(2, "n"), {"c": vecs(3, 8)}),
    "too few vectors": lambda: (recs(3, "n"), {"c": vecs(2, 8)}),
    "non-numeric vectors": lambda: ([Record("n", "text")], {"c": [["a"] * 8]}),
    "ragged vectors": lambda: (recs(2, "n"), {"c": [[1.0] * 8, [1.0] * 7]}),
    "good records then a bad one": lambda: (
        recs(5, "n") + [Record("r1", "text", metadata={"s": {1}})],
        {"c": vecs(6, 8)},
    ),
    "replacement with a bad vector": lambda: (recs(3), {"c": np.vstack([vecs(2, 8), np.zeros((1, 8))])}),
}


# A large add checks its vectors on a second thread: every bad input is tried on that path too.
THREADED = pytest.mark.parametrize("threaded", [False, True], ids=["one-thread", "vectors-beside"])


@THREADED
@pytest.mark.parametrize("name", list(BAD_UPSERTS))
def test_bad_upsert_changes_nothing(name, threaded, monkeypatch):
    monkeypatch.setattr(store_module, "_THREADED_ADD", 1 if threaded else 10**9)
    with MultimodalStore() as store:
        store.create_space("c", 8, "cosine")
        store.create_space("l", 4, "l2", "HNSW32")
        store.upsert(recs(40), {"c": vecs(40, 8), "l": vecs(40, 4)})
        queries = vecs(3, 8, seed=3)
        before = snapshot(store, queries)
        records, vectors = BAD_UPSERTS[name]()
        with pytest.raises(InvalidInputError) as error:
            store.upsert(records, vectors)
        if name == "unknown space":
            assert isinstance(error.value, UnknownSpaceError) and "nope" in str(error.value)
        assert snapshot(store, queries) == before
        # and the store still takes good writes afterwards
        store.upsert([Record("after", "text")], {"c": vecs(1, 8, 4)})
        assert store.count("c") == 41


def test_a_space_changed_between_the_checks_and_the_write_is_checked_again(monkeypatch):
    """Vectors are checked before the write lock is taken; a space recreated meanwhile (by another process)
    gets them checked again against its new configuration."""
    check = store_module.check_vectors

    with MultimodalStore() as store:

        def then_recreate(spaces, vectors, count):
            checked = check(spaces, vectors, count)
            store.drop_space("s")
            store.create_space("s", 4, "l2")  # not cosine any more: the vectors must not be normalised
            return checked

        store.create_space("s", 4)
        monkeypatch.setattr(store_module, "check_vectors", then_recreate)
        store.add([Record("a", "text")], {"s": [[3.0, 0.0, 0.0, 4.0]]})
        assert store.vectors("s", ["a"])["a"].tolist() == [3.0, 0.0, 0.0, 4.0]


@THREADED
def test_an_add_inside_a_held_write_lock_completes(monkeypatch, threaded):
    """The second thread of a large add takes no lock, so an add made while this thread holds the store's
    lock (nested in another write) cannot wait for itself."""
    monkeypatch.setattr(store_module, "_THREADED_ADD", 1 if threaded else 10**9)
    store = MultimodalStore()
    store.create_space("s", 8)
    done = threading.Event()

    def nested_add():
        with store._generations.writing():
            store.add(recs(30), {"s": vecs(30, 8)})
        done.set()

    threading.Thread(target=nested_add, daemon=True).start()
    # Not closed on failure: closing would wait for the stuck thread's lock too.
    assert done.wait(30), "the add waited for a lock its own thread holds"
    assert store.count("s") == 30
    store.close()


@THREADED
def test_bad_input_messages_name_the_problem(store, threaded, monkeypatch):
    monkeypatch.setattr(store_module, "_THREADED_ADD", 1 if threaded else 10**9)
    store.create_space("c", 8)
    cases = [
        (([Record("a", "text")], {"c": vecs(1, 5)}), "dim 8"),
        (([Record("a", "text")], {"c": np.zeros((1, 8))}), "all zeros"),
        (([Record("a", "text")], {"c": np.full((1, 8), np.nan)}), "NaN"),
        (([Record("a", "pdf")], None), "pdf"),
        (([Record("a", "text"), Record("a", "text")], None), "'a'"),
        (([Record("a", "text", metadata={"x": {"y": {1}}})], None), "x.y"),
        (([Record("a", "text", metadata={"x": [0, float("nan")]})], None), "x[1]"),
        (([], None), "empty"),
    ]
    for (records, vectors), message in cases:
        with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
            store.upsert(records, vectors)
    assert len(store) == 0


# --- persistence ---------------------------------------------------------------------------------------

INDEXES = ["auto", "Flat", "HNSW32", "IVF16,Flat", "IVF16,PQ4", "IVF16,PQ4x4"]


def _fill(store: MultimodalStore, index: str, n: int = 800) -> None:
    store.create_space("s", DIM, "l2", index)
    store.create_space("c", 8, "cosine")
    records = [
        Record(
            f"r{i}",
            ["text", "image", "audio", "video"][i % 4],
            text=f"t{i}",
            metadata={"n": i, "even": i % 2 == 0, "tags": ["x", str(i % 5)]},
            doc_id=f"d{i % 10}",
            content_hash=f"h{i}",
        )
        for i in range(n)
    ]
    store.upsert(records, {"s": vecs(n), "c": vecs(n, 8, 1)})
    store.delete([f"r{i}" for i in range(0, n, 9)])
    store.upsert([Record(f"r{i}", "text", metadata={"n": -i}) for i in range(1, 40, 3)], {"s": vecs(13, seed=2)})


def _observe(store: MultimodalStore) -> dict:
    ids = [r.id for r in store]
    queries = vecs(4, seed=11)
    return {
        "records": list(store),
        "spaces": store.spaces,
        "counts": (store.count(), store.count("s"), store.count("c")),
        "vectors": {k: v.tolist() for k, v in store.vectors("s", ids).items()},
        "vectors_c": {k: v.tolist() for k, v in store.vectors("c", ids).items()},
        "search": [
            [(h.record.id, h.rank, round(h.score, 4)) for h in hits] for hits in store.search_batch("s", queries, k=15)
        ],
        "filtered": [
            [(h.record.id, round(h.score, 4)) for h in hits]
            for hits in store.search_batch("s", queries, k=15, filter={"even": True, "tags": "3"})
        ],
        "search_c": [hit_ids(hits) for hits in store.search_batch("c", queries[:, :8], k=15)],
        "built": {name: space["built"] for name, space in store.info()["spaces"].items()},
        "hashes": store.ids_with_hashes(["h5", "h9", "h10"]),
    }


@pytest.mark.parametrize("index", INDEXES)
def test_save_and_reopen_gives_the_same_store(tmp_path, index):
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        _fill(store, index)
        assert store.unsaved
        store.save()
        assert not store.unsaved
        before = _observe(store)
    with MultimodalStore.open(path) as reopened:
        assert _observe(reopened) == before
        assert not reopened.unsaved
        # the reopened store keeps working: new keys do not collide with the saved ones
        reopened.upsert([Record("r1", "text"), Record("brand-new", "text")], {"s": vecs(2, seed=3)})
        assert hit_ids(reopened.search("s", vecs(2, seed=3)[1], k=1, filter={"id": "brand-new"})) == ["brand-new"]
        assert reopened.count("s") == before["counts"][1] + 1
        reopened.save()
        after = _observe(reopened)
    with MultimodalStore.open(path) as again:
        assert _observe(again) == after


@pytest.mark.parametrize("index", ["auto", "HNSW32", "IVF16,Flat", "IVF16,PQ4x4"])
def test_memory_mapped_open_searches_the_same_and_takes_writes(tmp_path, index):
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        _fill(store, index)
        store.save()
        before = _observe(store)
    with MultimodalStore.open(path, mmap=True) as mapped:
        assert _observe(mapped) == before
        if index == "auto":
            assert mapped.info()["spaces"]["s"]["memory_mapped"] is True
        new = vecs(1, seed=77)
        mapped.add([Record("added", "text", metadata={"even": True, "tags": "3"})], {"s": new})
        count = before["counts"][1] + 1
        assert mapped.count("s") == count
        for hits in mapped.search_batch("s", vecs(4, seed=11), k=2000):
            ids = hit_ids(hits)
            assert len(ids) == count and len(set(ids)) == count  # every vector once, the new one included
        hits = mapped.search("s", new[0], k=1, filter={"id": "added"})
        assert hit_ids(hits) == ["added"] and hits[0].score == pytest.approx(0.0, abs=1e-3)
        if index == "auto":
            assert hit_ids(mapped.search("s", new[0], k=1)) == ["added"]
        assert mapped.delete(["added", "r2"]) == 2
        for hits in mapped.search_batch("s", vecs(4, seed=11), k=2000):
            assert len(hits) == count - 2 and not {"added", "r2"} & set(hit_ids(hits))
        mapped.save()
        after = _observe(mapped)
    with MultimodalStore.open(path) as reopened:
        assert _observe(reopened) == after


def test_memory_mapped_delete_first(tmp_path):
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        _fill(store, "auto", 200)
        store.save()
    with MultimodalStore.open(path, mmap=True) as mapped:
        count = mapped.count("s")
        assert mapped.delete(["r5"]) == 1
        hits = mapped.search("s", vecs(1)[0], k=1000)
        assert len(hits) == count - 1 and "r5" not in hit_ids(hits)
        mapped.save()
    with MultimodalStore.open(path, mmap=True) as reopened:
        assert reopened.count("s") == count - 1 and reopened.get(["r5"]) == []


def test_unsaved_changes_are_dropped_on_reopen(tmp_path):
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        store.create_space("s", 8)
        store.upsert(recs(20), {"s": vecs(20, 8)})
        store.save()
        saved = _records_and_hits(store)
        store.upsert(recs(5, "late"), {"s": vecs(5, 8, 1)})
        store.upsert([Record("r3", "image")])
        store.delete(["r4", "r5"])
        store.create_space("extra", 4)
        assert store.unsaved
        with pytest.warns(UserWarning, match="unsaved"):
            store.close()
    with MultimodalStore.open(path) as reopened:
        assert _records_and_hits(reopened) == saved
        assert set(reopened.spaces) == {"s"}


def test_another_instance_sees_only_the_saved_state(tmp_path):
    path = tmp_path / "store"
    with MultimodalStore(path) as writer:
        writer.create_space("s", 8)
        writer.upsert(recs(20), {"s": vecs(20, 8)})
        writer.save()
        saved = _records_and_hits(writer)
        writer.upsert(recs(5, "late"), {"s": vecs(5, 8, 1)})
        writer.delete(["r1"])
        with MultimodalStore.open(path) as reader:
            assert _records_and_hits(reader) == saved
        writer.save()
        current = _records_and_hits(writer)
        with MultimodalStore.open(path) as reader:
            assert _records_and_hits(reader) == current != saved


_CRASH = """
import os, sys
import numpy as np
from mm_rag import MultimodalStore, Record
from mm_rag.store import committed, segments

store = MultimodalStore.open(sys.argv[1])
store.upsert([Record(f"crash{i}", "text") for i in range(10)], {"s": np.ones((10, 8))})
store.delete(["r0", "r1"])
store.create_space("extra", 4)

def die(*args, **kwargs):
    os._exit(3)

if sys.argv[2] == "before-commit":  # the new space files are written, the catalog not yet committed
    write = segments.write_space
    segments.write_space = lambda *a, **k: (write(*a, **k), die())[0]
elif sys.argv[2] == "after-commit":  # committed, but mmrag.json and old files not yet updated
    committed.write_manifest_file = die
if sys.argv[2] != "no-save":
    store.save()
die()
"""


@pytest.mark.parametrize("moment", ["no-save", "before-commit", "after-commit"])
def test_a_crash_leaves_the_last_committed_state(tmp_path, moment):
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        store.create_space("s", 8)
        store.upsert(recs(20), {"s": vecs(20, 8)})
        store.save()
        saved = _records_and_hits(store)
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", _CRASH, str(path), moment],
        cwd=root,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stderr
    with MultimodalStore.open(path) as reopened:
        state = _records_and_hits(reopened)
        if moment == "after-commit":
            assert state[1] == 28 and len(state[0]) == 28 and set(reopened.spaces) == {"s", "extra"}
            assert {f"crash{i}" for i in range(10)} <= {r.id for r in state[0]}
            assert "r0" not in {r.id for r in state[0]}
        else:
            assert state == saved and set(reopened.spaces) == {"s"}
        # the store goes on working and saving after the crash
        reopened.upsert([Record("after", "text")], {"s": vecs(1, 8, 5)})
        reopened.save()
        expected = _records_and_hits(reopened)
    with MultimodalStore.open(path) as again:
        assert _records_and_hits(again) == expected


def test_drop_space_is_saved(tmp_path):
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        store.create_space("a", 4)
        store.create_space("b", 4, "l2")
        store.upsert(recs(5), {"a": vecs(5, 4), "b": vecs(5, 4, 1)})
        store.save()
        store.drop_space("a")
        store.create_space("b2", 6)
        store.save()
    assert not list((path / "spaces").glob("a.*"))
    with MultimodalStore.open(path) as store:
        assert set(store.spaces) == {"b", "b2"} and len(store) == 5 and store.count("b") == 5
        # the same configuration is accepted again after reopening, a different one is not
        assert store.create_space("b", 4, "l2") == store.spaces["b"]
        with pytest.raises(InvalidInputError):
            store.create_space("b", 4, "cosine")
        store.create_space("a", 8, "ip")  # the dropped name can be reused with a new configuration
        store.upsert([Record("r0", "text")], {"a": vecs(1, 8)})
        store.save()
    with MultimodalStore.open(path) as store:
        assert store.spaces["a"] == SpaceConfig("a", 8, "ip") and store.count("a") == 1


def test_clear_is_durable_only_at_save(tmp_path):
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        store.create_space("s", 8)
        store.upsert(recs(20), {"s": vecs(20, 8)})
        store.save()
        store.clear()
        with pytest.warns(UserWarning):
            store.close()
    with MultimodalStore.open(path) as store:
        assert len(store) == 20 and store.count("s") == 20
        store.clear()
        store.save()
    with MultimodalStore.open(path) as store:
        assert len(store) == 0 and store.count("s") == 0 and set(store.spaces) == {"s"}


def _records_and_hits(store):
    return list(store), store.count("s"), [hit_ids(h) for h in store.search_batch("s", vecs(3, 8, 2), k=30)]


def test_temporary_store_saves_to_a_path(tmp_path):
    store = MultimodalStore()
    temporary = store.path
    store.create_space("s", 8)
    store.upsert(recs(30), {"s": vecs(30, 8)})
    with pytest.raises(InvalidInputError, match="path"):
        store.save()
    target = tmp_path / "saved"
    store.save(target)
    expected = _records_and_hits(store)
    store.close()
    assert not temporary.exists()
    with MultimodalStore.open(target) as reopened:
        assert _records_and_hits(reopened) == expected


def test_save_copy_to_an_empty_dir_and_not_over_a_full_one(tmp_path):
    with MultimodalStore(tmp_path / "a") as store:
        store.create_space("s", 8)
        store.upsert(recs(5), {"s": vecs(5, 8)})
        (tmp_path / "empty").mkdir()
        store.save(tmp_path / "empty")
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "file.txt").write_text("keep me")
        with pytest.raises(InvalidInputError, match="not empty"):
            store.save(tmp_path / "full")
        assert (tmp_path / "full" / "file.txt").read_text() == "keep me"
        expected = _records_and_hits(store)
    with MultimodalStore.open(tmp_path / "empty") as copy:
        assert _records_and_hits(copy) == expected
    with MultimodalStore.open(tmp_path / "a") as original:  # save(path) also saved the original
        assert _records_and_hits(original) == expected


def test_store_directory_layout(tmp_path):
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        store.create_space("s", 8, "l2")
        store.upsert(recs(5), {"s": vecs(5, 8)})
        store.save()
    manifest = json.loads((path / "mmrag.json").read_text())
    assert manifest["format"] == "mm-rag-store"
    assert manifest["format_version"] == 2
    assert manifest["spaces"]["s"]["dim"] == 8 and manifest["spaces"]["s"]["metric"] == "l2"
    assert (path / "catalog.sqlite").is_file()
    files = manifest["spaces"]["s"]["files"]
    assert files == {
        "keys": "s.1.keys.npy",
        "vectors": "s.1.vectors.npy",
        "index": "s.1.faiss",
        "lists": None,
        "segments": [],
        "tombstones": None,
    }
    assert set(manifest["spaces"]["s"]["sizes"]) == {"s.1.keys.npy", "s.1.vectors.npy", "s.1.faiss"}
    for file in manifest["spaces"]["s"]["sizes"]:
        assert (path / "spaces" / file).is_file()
    assert not any(p.suffix == ".pkl" or p.suffix == ".pickle" for p in path.rglob("*"))


@pytest.mark.parametrize("version", [3, 99, 0, "1", None])
def test_unknown_format_version_raises(tmp_path, version):
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        store.upsert(recs(2))
        store.save()
    manifest = json.loads((path / "mmrag.json").read_text())
    manifest["format_version"] = version
    (path / "mmrag.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreFormatError, match=f"version {version!r}"):
        MultimodalStore.open(path)
    with pytest.raises(StoreFormatError):
        MultimodalStore(path)


def test_damaged_manifest_raises(tmp_path):
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        store.save()
    (path / "mmrag.json").write_text("{not json")
    with pytest.raises(StoreFormatError, match="mmrag.json"):
        MultimodalStore.open(path)
    (path / "mmrag.json").write_text(json.dumps({"format": "something-else", "format_version": 1}))
    with pytest.raises(StoreFormatError, match="not an mm-rag store"):
        MultimodalStore.open(path)


def test_missing_space_file_raises(tmp_path):
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        store.create_space("s", 8)
        store.upsert(recs(5), {"s": vecs(5, 8)})
        store.save()
    victim = next((path / "spaces").glob("*.vectors.npy"))
    victim.unlink()
    with pytest.raises(StoreFormatError, match="missing"):
        MultimodalStore.open(path)


@pytest.mark.parametrize(
    "file, damage",
    [
        ("catalog.sqlite", "garbage"),
        ("catalog.sqlite", "truncate"),
        ("catalog.sqlite", "delete"),
        ("*.faiss", "garbage"),
        ("*.faiss", "truncate"),
        ("*.keys.npy", "truncate"),
        ("*.vectors.npy", "pickle"),
        ("*.vectors.npy", "wrong shape"),
    ],
)
def test_damaged_files_raise_store_format_error(tmp_path, file, damage):
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        store.create_space("s", 8)
        store.upsert(recs(5), {"s": vecs(5, 8)})
        store.save()
    victim = path / file if "*" not in file else next((path / "spaces").glob(file))
    if damage == "garbage":
        victim.write_bytes(b"definitely not the right content " * 20)
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    elif damage == "delete":
        victim.unlink()
    elif damage == "pickle":
        np.save(victim, np.array([{"x": 1}] * 5, dtype=object), allow_pickle=True)
    else:
        np.save(victim, np.zeros((5, 7), dtype=np.float32))
    with pytest.raises(StoreFormatError):
        MultimodalStore.open(path)
    # nothing was overwritten by the failed open: the manifest still describes the space
    assert json.loads((path / "mmrag.json").read_text())["spaces"]["s"]["vectors"] == 5


def test_open_requires_an_existing_store(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreFormatError, match="mmrag.json"):
        MultimodalStore.open(tmp_path / "empty")
    with pytest.raises(StoreFormatError):
        MultimodalStore.open(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreFormatError):
        MultimodalStore.open(tmp_path / "file")
    assert list((tmp_path / "empty").iterdir()) == []


def test_constructor_creates_a_store_in_an_empty_dir(tmp_path):
    with MultimodalStore(tmp_path / "new") as store:
        assert len(store) == 0
    assert (tmp_path / "new" / "mmrag.json").is_file()
    with MultimodalStore.open(tmp_path / "new") as store:
        assert len(store) == 0 and store.spaces == {}


# --- threads -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", ["auto", "HNSW32"])
def test_concurrent_searches_while_writing(tmp_path, index):
    dim = 16
    store = MultimodalStore(tmp_path / "store")
    store.create_space("s", dim, "cosine", index)
    initial = 1000
    store.upsert(recs(initial), {"s": vecs(initial, dim)})
    epoch = [0]
    deleted_at: dict[str, int] = {}  # id -> epoch after which it is certainly deleted
    planned: set[str] = {f"r{i}" for i in range(initial)}
    done = threading.Event()
    errors: list[BaseException] = []
    searches = [0]

    def writer():
        try:
            live = [f"r{i}" for i in range(initial)]
            for step in range(25):
                new = recs(40, "w", start=step * 40)
                planned.update(r.id for r in new)
                store.upsert(new, {"s": vecs(40, dim, seed=100 + step)})
                live += [r.id for r in new]
                victims, live = live[:30], live[30:]
                store.delete(victims)
                for victim in victims:
                    deleted_at[victim] = epoch[0] + 1
                epoch[0] += 1
                # replace a few live records in place (same content, new vectors)
                again = [
                    Record(i, "text", text=f"item {i[1:]}", metadata={"n": int(i[1:]), "even": int(i[1:]) % 2 == 0})
                    for i in live[100:110]
                ]
                store.upsert(again, {"s": vecs(len(again), dim, seed=500 + step)})
                if step == 12:
                    store.save()
                time.sleep(0.001)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
        finally:
            done.set()

    def reader(seed):
        rng = np.random.default_rng(seed)
        try:
            while not done.is_set() or searches[0] < 20:
                started = epoch[0]
                f = None if rng.random() < 0.5 else {"even": True}
                hits = store.search("s", rng.normal(size=dim), k=10, filter=f)
                assert len(hits) == 10
                assert [h.rank for h in hits] == list(range(10))
                assert len({h.record.id for h in hits}) == 10
                assert all(a.score >= b.score - 1e-6 for a, b in itertools.pairwise(hits))
                for hit in hits:
                    assert hit.record.id in planned
                    assert deleted_at.get(hit.record.id, math.inf) > started, f"{hit.record.id} was deleted"
                    assert hit.record.text == f"item {hit.record.metadata['n']}"
                    if f:
                        assert hit.record.metadata["even"] is True
                searches[0] += 1
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert searches[0] >= 20
    assert len(store) == initial + 25 * 40 - 25 * 30 == store.count("s")
    store.save()
    store.close()
    with MultimodalStore.open(tmp_path / "store") as reopened:
        assert len(reopened) == initial + 250


@pytest.mark.parametrize(
    "spec",
    ["Flat", "HNSW32", "IVF4,Flat", "PQ4", "SQ8", "OPQ4,IVF4,PQ4", "NSG32", "LSH", "IVF4,Flat,RFlat", "PCA8,Flat"],
)
def test_can_remove_decided_by_type_agrees_with_trying(spec):
    """`can_remove` names the types that delete in place instead of trying (a pass over the whole index)."""
    import faiss

    from mm_rag.store import indexing

    index = indexing.new_index(spec, 16, "l2")
    try:
        index.remove_ids(faiss.IDSelectorBatch(np.empty(0, dtype=np.int64)))
        removes = True
    except RuntimeError:
        removes = False
    assert indexing.can_remove(index) == removes
