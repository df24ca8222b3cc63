"""Building a store from embedding shards: on-disk IVF lists, exactness, filters, changes, sharding, export, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from mm_rag import InvalidInputError, MultimodalStore, Record
from mm_rag.export import iter_export
from mm_rag.indexbuild import BuildReport, build_store, exact_search
from mm_rag.shards import ShardSet, SpaceInfo
from mm_rag.store import ondisk
from mm_rag.store.space import REFINE_FACTOR

MM_RAG = Path(sys.executable).with_name("mm-rag")
CLIP = {"kind": "open_clip", "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}
SHARDS, PER_SHARD = 4, 6000
INDEX = {"clip": "IVF64,PQ8", "text": "IVF32,Flat", "small": "Flat"}


def clustered(rng: np.random.Generator, n: int, dim: int, centres: int = 200) -> np.ndarray:
    points = rng.normal(size=(centres, dim))[rng.integers(0, centres, n)] + 0.25 * rng.normal(size=(n, dim))
    return points.astype(np.float32)


def write_shards(root: Path) -> tuple[ShardSet, list[Record], dict[str, np.ndarray]]:
    """Four shards; every record has a clip vector, every other one a text vector, every fifth a small one."""
    rng = np.random.default_rng(7)
    shards = ShardSet(root)
    shards.declare_spaces(
        {"clip": SpaceInfo(32, "cosine", CLIP), "text": SpaceInfo(16, "l2"), "small": SpaceInfo(8, "ip")}
    )
    everything: list[Record] = []
    vectors: dict[str, list[np.ndarray]] = {"clip": [], "text": [], "small": []}
    for number in range(SHARDS):
        records = [
            Record(f"s{number}-{i}", "image" if i % 3 == 0 else "text", text=None if i % 3 == 0 else f"passage {i}",
                   uri=f"/m/{number}/{i}.jpg", metadata={"bucket": i % 10, "shard": number}, doc_id=f"d{number}-{i // 4}")
            for i in range(PER_SHARD)
        ]  # fmt: skip
        rows = {"clip": np.arange(PER_SHARD), "text": np.arange(0, PER_SHARD, 2), "small": np.arange(0, PER_SHARD, 5)}
        dims = {"clip": 32, "text": 16, "small": 8}
        batch = {space: (rows[space], clustered(rng, len(rows[space]), dims[space])) for space in rows}
        shards.write(f"shard-{number:03d}", records, batch)
        everything += records
        for space, (_, array) in batch.items():
            vectors[space].append(array)
    return shards, everything, {space: np.concatenate(parts) for space, parts in vectors.items()}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[ShardSet, list[Record], dict[str, np.ndarray]]:
    return write_shards(tmp_path_factory.mktemp("shards") / "out")


@pytest.fixture(scope="module")
def built(source, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildReport]:
    path = tmp_path_factory.mktemp("built") / "store"
    return path, build_store(source[0].root, path, index=INDEX)


def copy_of(built, tmp_path: Path) -> Path:
    shutil.copytree(built[0], tmp_path / "store")
    return tmp_path / "store"


def normalised(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_records_and_vectors_equal_the_shards(built, source) -> None:
    _, records, vectors = source
    with MultimodalStore.open(built[0]) as store:
        assert list(store) == records
        assert store.count("clip") == len(records) and store.count("text") == len(records) // 2
        stored = store.vectors("text", [records[2].id, records[3].id])
        assert set(stored) == {records[2].id}
        np.testing.assert_array_equal(stored[records[2].id], vectors["text"][1])
        assert store.spaces["clip"].model == CLIP and store.spaces["clip"].index == "IVF64,PQ8"


def test_report_numbers_are_sane(built) -> None:
    report = built[1]
    assert report.records == SHARDS * PER_SHARD and report.shards == SHARDS
    clip, text, small = (report.spaces[name] for name in ("clip", "text", "small"))
    assert (clip.vectors, text.vectors, small.vectors) == (24000, 12000, 4800)
    assert clip.on_disk and text.on_disk and not small.on_disk
    assert small.recall_at_10 == 1.0 and text.recall_at_10 > 0.8 and 0.1 < clip.recall_at_10 <= 1
    assert clip.train_points == 24000 and small.train_points == 0
    assert 24000 * 8 < clip.memory_bytes < 24000 * 32 * 4  # PQ codes + ids, far below the floats
    assert clip.disk_bytes > clip.memory_bytes + 24000 * 32 * 4
    assert all(space.seconds["total"] >= space.seconds["train"] >= 0 for space in report.spaces.values())
    assert "clip: IVF64,PQ8 (on-disk lists)" in report.summary() and f"{report.records} records" in report.summary()


def test_store_reopens_memory_mapped_with_on_disk_lists(built) -> None:
    files = sorted(path.name for path in (built[0] / "spaces").iterdir())
    assert "clip.1.ivfdata" in files and "text.1.ivfdata" in files and "small.1.ivfdata" not in files
    assert not (built[0] / ".build").exists()
    with MultimodalStore.open(built[0]) as store:
        info = store.info()["spaces"]
        assert info["clip"]["memory_mapped"] and info["clip"].get("on_disk_lists", False)
        assert isinstance(store._generations.spaces["clip"].table._vectors, np.memmap)
        mapped = store.search("clip", np.ones(32), k=10)
    with MultimodalStore.open(built[0], mmap=False) as store:  # lists copied into memory: same answers
        assert not store.info()["spaces"]["clip"].get("on_disk_lists", False)
        assert store.search("clip", np.ones(32), k=10) == mapped


@pytest.mark.parametrize("space", ["clip", "text"])
def test_on_disk_index_answers_like_an_in_memory_index_with_the_same_quantizer(built, source, space) -> None:
    vectors = source[2][space]
    queries = vectors[::997] + 0.01
    with MultimodalStore.open(built[0]) as store:
        index = store._generations.spaces[space].index
        keys = np.asarray(store._generations.spaces[space].table.keys)
        in_memory = ondisk._empty_clone(index)
        in_memory.add_with_ids(normalised(vectors) if space == "clip" else vectors, keys)
        prepared = normalised(queries) if space == "clip" else queries
        expected_d, expected_i = in_memory.search(prepared, 10)
        got_d, got_i = index.search(prepared, 10)
        np.testing.assert_array_equal(got_i, expected_i)
        np.testing.assert_allclose(got_d, expected_d, rtol=1e-5)
        # The store re-scores the index's top 10 x REFINE_FACTOR candidates with the exact vectors.
        hits = store.search(space, queries[0], k=10)
        id_of = {key: record.id for key, record in zip(range(len(source[1])), source[1])}
        _, candidates = in_memory.search(prepared[:1], 10 * REFINE_FACTOR)
        if space == "clip":  # cosine
            exact = normalised(vectors) @ prepared[0]
        else:  # l2
            exact = -np.linalg.norm(vectors - prepared[0], axis=1)
        by_key = dict(zip(keys.tolist(), range(len(keys))))
        rescored = sorted(candidates[0].tolist(), key=lambda key: -exact[by_key[key]])[:10]
        assert [hit.record.id for hit in hits] == [id_of[int(key)] for key in rescored]


def test_flat_space_is_exact(built, source) -> None:
    vectors = source[2]["small"]
    query = vectors[17] + 0.05
    with MultimodalStore.open(built[0]) as store:
        hits = store.search("small", query, k=10)
    order = np.argsort(-(vectors @ query), kind="stable")[:10]
    small_records = [record for i, record in enumerate(source[1]) if (i % PER_SHARD) % 5 == 0]
    assert [hit.record.id for hit in hits] == [small_records[i].id for i in order]


def test_filters_work_on_the_built_store(built, source) -> None:
    query = source[2]["clip"][5]
    with MultimodalStore.open(built[0]) as store:
        broad = store.search("clip", query, k=20, filter={"bucket": {"$ne": 3}})  # index path, IDSelector
        narrow = store.search("clip", query, k=20, filter={"shard": 2, "bucket": 3})  # exact scan
        assert len(broad) == 20 and all(hit.record.metadata["bucket"] != 3 for hit in broad)
        assert len(narrow) == 20 and all(h.record.metadata == {"bucket": 3, "shard": 2} for h in narrow)
        candidates = [record.id for record in store.find({"shard": 2, "bucket": 3})]
        stored = store.vectors("clip", candidates)
    q = normalised(query[None])[0]
    exact = sorted(candidates, key=lambda i: -float(stored[i] @ q))[:20]
    assert [hit.record.id for hit in narrow] == exact


def test_deletes_and_upserts_leave_the_lists_on_disk_and_save_as_a_segment_and_tombstones(
    built, source, tmp_path
) -> None:
    """A built index takes changes without rewriting (or copying into memory) its inverted lists: the deleted
    entry is a tombstone, the new vector a segment searched exactly beside the index."""
    path = copy_of(built, tmp_path)
    records, vectors = source[1], source[2]
    with MultimodalStore.open(path) as store:
        before = store.search("clip", vectors["clip"][40], k=10)
        in_text = store.vectors("text", [h.record.id for h in before])
        gone = next(h.record.id for h in before if h.record.id not in in_text)  # leaves the text space alone
        assert store.delete([gone]) == 1
        assert store.info()["spaces"]["clip"]["on_disk_lists"]
        after = store.search("clip", vectors["clip"][40], k=10)
        assert gone not in [h.record.id for h in after]
        kept = [h.record.id for h in before if h.record.id != gone]
        assert [h.record.id for h in after[:9]] == kept  # same quantizer, same codes
        store.upsert([Record("fresh", "text", text="new")], {"clip": vectors["clip"][40:41]})
        clip = store._generations.spaces["clip"]
        assert clip.index.ntotal == len(records) and len(clip.recent) == 1 and store.count("clip") == len(records)
        assert [h.record.id for h in store.search("clip", vectors["clip"][40], k=1)] == ["fresh"]  # exact beside
        latest = store.search("clip", vectors["clip"][40], k=10)
        store.save()
    files = sorted(p.name for p in (path / "spaces").iterdir())
    assert {"clip.1.ivfdata", "clip.1.faiss", "clip.2.s0.keys.npy", "clip.2.dead.npy"} <= set(files)
    assert "clip.2.faiss" not in files
    with MultimodalStore.open(path) as store:
        assert len(store) == len(records) and store.get([gone]) == []
        assert store.info()["spaces"]["text"]["on_disk_lists"] and store.info()["spaces"]["clip"]["on_disk_lists"]
        assert store.search("clip", vectors["clip"][40], k=10) == latest


def test_a_change_of_configuration_keeps_the_lists_on_disk_and_copies_move_with_them(built, tmp_path) -> None:
    path = copy_of(built, tmp_path)
    with MultimodalStore.open(path) as store:
        expected = store.search("text", np.ones(16), k=10)
        store.create_space("text", 16, "l2", "IVF32,Flat", model={"kind": "text", "model": "m"})  # adopts the model
        store.save()
        store.save(tmp_path / "copy")
    assert sorted(p.name for p in (path / "spaces").iterdir() if p.name.startswith("text")) == [
        "text.1.faiss",
        "text.1.ivfdata",
        "text.1.keys.npy",
        "text.1.vectors.npy",
    ]  # fmt: skip: a new configuration with the same vectors writes no space file
    shutil.rmtree(path)  # the copy's index must find its lists in its own folder
    with MultimodalStore.open(tmp_path / "copy") as store:
        assert store.info()["spaces"]["text"].get("on_disk_lists", False)
        assert store.spaces["text"].model == {"kind": "text", "model": "m"}
        assert store.search("text", np.ones(16), k=10) == expected


def test_sharded_serving_equals_unsharded(built, source) -> None:
    queries = source[2]["clip"][::1500]
    with MultimodalStore.open(built[0]) as store:
        for filter in (None, {"bucket": {"$ne": 3}}):
            plain = store.search_batch("clip", queries, k=10, filter=filter)
            assert store.shard("clip", 3) == 3 and store.info()["spaces"]["clip"].get("sharded", False)
            sharded = store.search_batch("clip", queries, k=10, filter=filter)
            for a, b in zip(plain, sharded):
                assert {h.record.id for h in a} == {h.record.id for h in b}
                np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5)
            store._generations.spaces["clip"].unshard()
        with pytest.raises(InvalidInputError, match="only IVF"):
            store.shard("small", 2)
        with pytest.raises(InvalidInputError, match="positive"):
            store.shard("clip", 0)


def test_sharding_ends_at_the_next_change(built, tmp_path) -> None:
    with MultimodalStore.open(copy_of(built, tmp_path)) as store:
        store.shard("text")
        store.delete(["s0-0"])
        assert not store.info()["spaces"]["text"].get("sharded", False)
        store.save()


def test_refusals_leave_nothing_behind(source, tmp_path) -> None:
    with MultimodalStore(tmp_path / "taken") as store:
        store.add([Record("x", "text", text="x")])
        store.save()
    with pytest.raises(InvalidInputError, match="already holds a store"):
        build_store(source[0].root, tmp_path / "taken")
    with pytest.raises(InvalidInputError, match="on-disk lists need an IVF"):
        build_store(source[0].root, tmp_path / "flat", index="Flat", on_disk=True)
    assert not (tmp_path / "flat").exists()
    with pytest.raises(InvalidInputError, match="needs about"):
        build_store(source[0].root, tmp_path / "big", index="IVF4096,Flat")
    twice = ShardSet(tmp_path / "twice")
    twice.declare_spaces({"a": SpaceInfo(2)})
    for name in ("one", "two"):
        twice.write(name, [Record("same", "text", text="t")], {"a": ([0], np.ones((1, 2)))})
    with pytest.raises(InvalidInputError, match="already in the store"):
        build_store(twice.root, tmp_path / "dup")
    assert not (tmp_path / "dup").exists()


def test_auto_picks_flat_in_memory_for_small_spaces(source, tmp_path) -> None:
    report = build_store(source[0].root, tmp_path / "auto", recall_queries=20)
    assert {space.index for space in report.spaces.values()} == {"Flat"}
    assert not any(space.on_disk for space in report.spaces.values())
    with MultimodalStore.open(tmp_path / "auto") as store:
        assert store.spaces["clip"].index == "auto" and store.info()["spaces"]["clip"]["built"] == "Flat"


def test_exact_search_over_mapped_vectors_matches_knn(built, source) -> None:
    spaces = built[0] / "spaces"
    queries = normalised(source[2]["clip"][:3] + 0.1)
    distances, keys = exact_search(
        queries, spaces / "clip.1.keys.npy", spaces / "clip.1.vectors.npy", "cosine", 5, chunk=1000
    )
    expected_d, expected_i = faiss.knn(queries, normalised(source[2]["clip"]), 5, metric=faiss.METRIC_INNER_PRODUCT)
    np.testing.assert_array_equal(keys, expected_i)  # clip keys are the record rows
    np.testing.assert_allclose(distances, expected_d, rtol=1e-5)


def test_iter_export_streams_every_vector_in_batches(built, source) -> None:
    with MultimodalStore.open(built[0]) as store:
        batches = list(iter_export(store, "text", batch_size=1000))
    assert all(len(records) == len(vectors) <= 1000 for records, vectors in batches)
    records = [record for batch, _ in batches for record in batch]
    assert records == source[1][::2]
    np.testing.assert_array_equal(np.concatenate([v for _, v in batches]), source[2]["text"])
    with pytest.raises(InvalidInputError, match="batch_size"):
        next(iter_export(store, "text", batch_size=0))


def test_cli_build_index(source, tmp_path) -> None:
    result = subprocess.run(
        [str(MM_RAG), "build-index", str(source[0].root), "--store", str(tmp_path / "cli"), "--index", "Flat",
         "--memory-budget", "1GB", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["records"] == SHARDS * PER_SHARD and report["spaces"]["clip"]["index"] == "Flat"
    with MultimodalStore.open(tmp_path / "cli") as store:
        assert store.count("small") == 4800
    again = subprocess.run(
        [str(MM_RAG), "build-index", str(source[0].root), "--store", str(tmp_path / "cli")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 2 and again.stderr.startswith("error:") and "already holds" in again.stderr
    bad = subprocess.run(
        [str(MM_RAG), "build-index", str(source[0].root), "--store", str(tmp_path / "x"), "--memory-budget", "lots"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "memory-budget" in bad.stderr
