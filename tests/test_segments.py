"""A save writes what changed: segments, tombstones, merges and main rewrites, and handles that follow them.

`mm_rag.store.segments` decides what a save writes. These tests read the manifest a save commits and the
files it names, and check every handle (the writer, followers memory-mapped or not, fresh opens) against a
plain model after each commit, through random sequences of adds, upserts, deletes, rollbacks and saves.
"""

from __future__ import annotations

import errno
import itertools
import json
import re
import sqlite3
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from mm_rag import MultimodalStore, Record, StoreFormatError
from mm_rag.store import segments
from mm_rag.store import space as space_module
from mm_rag.store.manifest import SpaceEntry, SpaceFiles

DIM = 16


def vectors_for(ids: list[str], version: int = 0) -> np.ndarray:
    """A fixed random vector per (id, version)."""
    return np.stack(
        [
            np.random.default_rng([int.from_bytes(i.encode(), "little") % 2**63, version]).standard_normal(DIM)
            for i in ids
        ]
    ).astype(np.float32)


def records(ids: list[str]) -> list[Record]:
    return [Record(i, "text", text=f"record {i}") for i in ids]


def entry(path: Path, space: str = "s") -> SpaceEntry:
    manifest = json.loads((path / "mmrag.json").read_text())
    return SpaceEntry.from_json(space, manifest["spaces"][space])


def files_on_disk(path: Path) -> set[str]:
    return {file.name for file in (path / "spaces").iterdir()}


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A store of 2,000 vectors in one Flat space, saved once."""
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        store.create_space("s", DIM, index="Flat")
        ids = [f"base-{i}" for i in range(2000)]
        store.add(records(ids), {"s": vectors_for(ids)})
        store.save()
    return path


def test_a_small_save_writes_a_segment_and_tombstones_not_the_space(store_path: Path) -> None:
    main = entry(store_path).files
    with MultimodalStore.open(store_path) as store:
        new = [f"new-{i}" for i in range(10)]
        store.add(records(new), {"s": vectors_for(new)})
        store.delete(["base-5", "base-6"])
        store.save()
    after = entry(store_path)
    assert after.files.same_main(main)  # the 2,000 vectors were not written again
    (segment,) = after.files.segments
    assert segment.rows == 10 and segment.keys.startswith("s.2.s0")
    assert after.sizes[segment.vectors] < 10 * DIM * 4 + 256  # the ten new vectors and an .npy header
    assert np.load(store_path / "spaces" / after.files.tombstones).tolist() == [5, 6]  # the keys of base-5, base-6
    assert files_on_disk(store_path) == set(after.files.names())
    for mmap in (True, False):
        with MultimodalStore.open(store_path, mmap=mmap) as store:
            assert store.count("s") == 2008
            assert store.get(["base-5"]) == [] and len(store.get(["new-3"])) == 1
            assert store.search("s", vectors_for(["new-3"])[0], k=1)[0].record.id == "new-3"
            assert "base-6" not in {hit.record.id for hit in store.search("s", vectors_for(["base-6"])[0], k=20)}


def test_dead_rows_past_the_share_rewrite_the_main_part_without_them(store_path: Path) -> None:
    with MultimodalStore.open(store_path) as store:
        store.delete([f"base-{i}" for i in range(int(segments.DEAD_SHARE * 2000) + 1)])
        store.save()
    after = entry(store_path)
    assert after.files.keys == "s.2.keys.npy" and after.files.tombstones is None and after.files.segments == ()
    assert after.vectors == len(np.load(store_path / "spaces" / after.files.keys)) == 2000 - 101
    assert files_on_disk(store_path) == set(after.files.names())


def test_large_segments_open_memory_mapped_and_small_ones_in_memory(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment file past `SEGMENT_MMAP_THRESHOLD` is scanned where it lies (processes share its pages); deleted
    rows of a mapped segment are left out of searches without copying it; the writer merges from the mapping."""
    with MultimodalStore.open(store_path) as store:
        for number, count in enumerate([300, 5]):
            ids = [f"seg{number}-{i}" for i in range(count)]
            store.add(records(ids), {"s": vectors_for(ids)})
            store.save()
    big = next(segment for segment in entry(store_path).files.segments if segment.rows == 300)
    monkeypatch.setattr(segments, "SEGMENT_MMAP_THRESHOLD", entry(store_path).sizes[big.vectors])
    with MultimodalStore.open(store_path) as store:
        space = store._generations.spaces["s"]
        assert store.info()["spaces"]["s"]["mapped_segments"] == 1 and space.mapped is False
        (mapped,) = space.recent.mapped
        assert isinstance(mapped.all_rows()[1], np.memmap) and len(space.recent.memory) == 5
        assert store.search("s", vectors_for(["seg0-7"])[0], k=1)[0].record.id == "seg0-7"
        store.delete(["seg0-7"])
        hits = store.search("s", vectors_for(["seg0-7"])[0], k=2305)
        assert "seg0-7" not in {hit.record.id for hit in hits} and len(hits) == 2000 + 300 + 5 - 1
        monkeypatch.setattr(segments, "MAX_SEGMENTS", 1)  # the next save merges the mapped segment
        store.add(records(["last"]), {"s": vectors_for(["last"])})
        store.save()
    (merged,) = entry(store_path).files.segments
    assert merged.rows == 300 + 5 + 1 - 1
    with MultimodalStore.open(store_path, mmap=False) as store:
        assert store.info()["spaces"]["s"]["mapped_segments"] == 0
        assert (
            store.get(["seg0-7"]) == [] and store.search("s", vectors_for(["seg0-8"])[0], k=1)[0].record.id == "seg0-8"
        )


@pytest.mark.parametrize("kind", ["segment", "main part"])
def test_searches_go_on_while_a_save_writes_its_files(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A save writes its files holding the store's write lock and this handle's writer, not the thread lock:
    searches of this process answer meanwhile (on the state before the save, which they see unchanged),
    while another thread's change waits for the save to finish."""
    writing, release = threading.Event(), threading.Event()
    write_array = segments.write_array

    def held_back(path: Path, array: np.ndarray) -> None:
        writing.set()
        assert release.wait(30)
        write_array(path, array)

    with MultimodalStore.open(store_path) as store:
        new = [f"new-{i}" for i in range(5)]
        store.add(records(new), {"s": vectors_for(new)})
        if kind == "main part":
            store.delete([f"base-{i}" for i in range(int(segments.DEAD_SHARE * 2000) + 1)])
        before = entry(store_path).files
        monkeypatch.setattr(segments, "write_array", held_back)
        saving = threading.Thread(target=store.save)
        saving.start()
        assert writing.wait(30)
        started = time.monotonic()
        assert store.search("s", vectors_for(["new-2"])[0], k=1)[0].record.id == "new-2"
        assert store.search("s", vectors_for(["base-700"])[0], k=1, filter={"modality": "text"})
        assert store.count("s") == 2000 + len(new) - (101 if kind == "main part" else 0)
        assert time.monotonic() - started < 5 and saving.is_alive() and store.unsaved
        adding = threading.Thread(target=store.add, args=(records(["late"]), {"s": vectors_for(["late"])}))
        adding.start()
        adding.join(0.3)
        assert adding.is_alive()  # another writer of this handle waits for the save
        release.set()
        saving.join(30)
        adding.join(30)
        assert not saving.is_alive() and not adding.is_alive() and store.unsaved  # "late" came after the save
        assert _kind(before, entry(store_path).files) == ("segment" if kind == "segment" else "main")
        store.save()
    with MultimodalStore.open(store_path) as store:
        assert len(store.get(["new-4", "late"])) == 2


def test_segments_past_the_limit_merge_the_smallest_adjacent_pair_purging_dead_rows(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "MAX_SEGMENTS", 3)
    sizes = [40, 3, 4, 30, 5]
    with MultimodalStore.open(store_path) as store:
        for number, size in enumerate(sizes):
            ids = [f"batch{number}-{i}" for i in range(size)]
            store.add(records(ids), {"s": vectors_for(ids)})
            if number == 3:
                store.delete(["batch1-0", "batch3-0"])  # rows of segments: tombstones until merged
            store.save()
            listed = entry(store_path).files.segments
            assert len(listed) <= 3
            assert all(a.last < b.first for a, b in itertools.pairwise(listed))  # key ranges in order
    listed = entry(store_path).files.segments
    # 40 | 3 | 4 | 30 -> 40 | 7 | 30 (batch1-0 purged: 6 rows), then + 5 -> 40 | 6 | 35 (batch3-0 purged: 34)
    assert [segment.rows for segment in listed] == [40, 6, 34]
    merged = np.load(store_path / "spaces" / listed[1].keys)
    tombstones = entry(store_path).files.tombstones
    assert tombstones is None  # both dead rows lived in segments that were merged since
    assert len(merged) == 6 and listed[1].first < merged.min()  # the range still starts at the purged key
    with MultimodalStore.open(store_path, mmap=False) as store:
        assert store.count("s") == 2000 + sum(sizes) - 2
        assert store.get(["batch1-0", "batch3-0"]) == []
        assert store.search("s", vectors_for(["batch4-2"])[0], k=1)[0].record.id == "batch4-2"


def write_format_1(path: Path) -> str:
    """A store as mm-rag wrote it before segments: 38 records in a Flat and an HNSW space, its manifest listing
    each space's files by position (keys, vectors, index) with their sizes as a list. Returns the flat keys file.

    Built with today's code and its manifest rewritten in the old form, in the catalog (the commit point) and
    in ``mmrag.json``: the space files themselves were named and written the same way in both formats.
    """
    ids = [f"r{i}" for i in range(40) if i not in (3, 4)]
    vectors = np.random.default_rng(7).standard_normal((len(ids), 8)).astype(np.float32)
    with MultimodalStore(path) as store:
        store.create_space("flat", 8, index="Flat")
        store.create_space("hnsw", 8, metric="l2", index="HNSW32")
        store.add(records(ids), {"flat": vectors, "hnsw": vectors})
        store.save()
    manifest = json.loads((path / "mmrag.json").read_text())
    manifest.pop("files")  # what the readable copy adds to the catalog's manifest
    for entry in manifest["spaces"].values():
        files = SpaceFiles(**{**entry["files"], "segments": ()})
        assert files.segments == () and files.tombstones is None and files.lists is None
        entry["files"] = [files.keys, files.vectors, files.index]
        entry["sizes"] = [entry["sizes"][name] for name in entry["files"]]
    manifest["format_version"] = 1
    with sqlite3.connect(path / "catalog.sqlite") as db:
        db.execute("UPDATE settings SET value = ? WHERE name = 'manifest'", (json.dumps(manifest),))
    (path / "mmrag.json").write_text(json.dumps(manifest, indent=2))
    return manifest["spaces"]["flat"]["files"][0]


def test_a_store_written_in_format_1_opens_and_its_next_save_appends_a_segment(tmp_path: Path) -> None:
    """A store saved by mm-rag before segments (files listed by position, sizes as a list)."""
    path = tmp_path / "v1"
    keys_file = write_format_1(path)
    assert json.loads((path / "mmrag.json").read_text())["format_version"] == 1
    with MultimodalStore.open(path) as store:
        assert store.count("flat") == store.count("hnsw") == 38 and store.get(["r3", "r4"]) == []
        query = store.vectors("flat", ["r10"])["r10"]
        assert store.search("flat", query, k=1)[0].record.id == "r10"
        assert store.search("hnsw", store.vectors("hnsw", ["r11"])["r11"], k=1)[0].record.id == "r11"
        rng = np.random.default_rng(0)
        store.add(records(["late"]), {"flat": rng.standard_normal((1, 8)), "hnsw": rng.standard_normal((1, 8))})
        store.save()
    manifest = json.loads((path / "mmrag.json").read_text())
    assert manifest["format_version"] == 2
    flat = SpaceEntry.from_json("flat", manifest["spaces"]["flat"])
    assert flat.files.keys == keys_file and [s.rows for s in flat.files.segments] == [1]
    with MultimodalStore.open(path) as store:
        assert store.count("flat") == 39 and store.get(["late"])[0].id == "late"


# --- random sequences, several handles ---------------------------------------------------------------------


class Model:
    """What the store should hold: the live vector of each id per space, and the last saved state."""

    def __init__(self) -> None:
        self.live: dict[str, dict[str, np.ndarray]] = {"s": {}, "t": {}}
        self.saved = {name: dict(by_id) for name, by_id in self.live.items()}


def check_handle(store: MultimodalStore, state: dict[str, dict[str, np.ndarray]], exact: dict[str, bool]) -> None:
    ids = sorted({i for by_id in state.values() for i in by_id})
    assert [record.id for record in store.get(ids)] == ids
    for name, by_id in state.items():
        assert store.count(name) == len(by_id)
        found = store.vectors(name, ids)
        assert set(found) == set(by_id)
        if not by_id:
            continue
        rng = np.random.default_rng(len(by_id))
        probe = list(by_id)[int(rng.integers(len(by_id)))]
        query = found[probe]
        hits = store.search(name, query, k=10)
        assert len(hits) == min(10, len(by_id)) and len({hit.record.id for hit in hits}) == len(hits)
        assert all(hit.record.id in by_id for hit in hits)
        if exact[name]:  # the 10 nearest, up to ties
            stored = np.stack([found[i] for i in by_id])
            cost = ((stored - query) ** 2).sum(axis=1) if name == "t" else -(stored @ query)
            costs = dict(zip(by_id, cost))
            assert max(costs[hit.record.id] for hit in hits) <= np.sort(cost)[len(hits) - 1] + 1e-5


@pytest.mark.parametrize(
    ("seed", "index"),
    [(0, "Flat"), (1, "Flat"), (2, "HNSW32"), (6, "IVF4,Flat"), (4, "auto")],
)
def test_handles_follow_random_writes(seed: int, index: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer (at times reopened memory-mapped) and two followers (one memory-mapped) through 150 random steps;
    every handle is checked against
    the model after each save, and a fresh open too, with few segments, a small fold limit and a high dead share
    so that every path of `write_space` runs."""
    monkeypatch.setattr(segments, "MAX_SEGMENTS", 3)
    monkeypatch.setattr(segments, "DEAD_SHARE", 0.5)
    monkeypatch.setattr(space_module, "FOLD_MIN", 60)
    rng = np.random.default_rng(seed)
    path = tmp_path / "store"
    exact = {"s": index in ("Flat", "auto"), "t": True}
    writer = MultimodalStore(path)
    writer.create_space("s", DIM, index=index)
    writer.create_space("t", DIM, metric="l2", index="Flat")
    model, version, kinds = Model(), 0, set()
    writer.save()
    followers = [MultimodalStore.open(path, mmap=True), MultimodalStore.open(path, mmap=False)]
    try:
        for _step in range(150):
            action = rng.choice(["upsert", "delete", "save", "rollback", "reopen"], p=[0.42, 0.15, 0.33, 0.05, 0.05])
            if action == "upsert":
                count = int(rng.choice([1, 3, 12, 60], p=[0.35, 0.35, 0.2, 0.1]))
                ids = [f"r{int(i)}" for i in rng.choice(1000, size=count, replace=False)]
                version += 1
                spaces = ("s", "t") if rng.random() < 0.5 else ("s",)
                writer.upsert(records(ids), {name: vectors_for(ids, version) for name in spaces})
                for i in ids:
                    for name in ("s", "t"):
                        model.live[name].pop(i, None)
                    for name in spaces:
                        model.live[name][i] = vectors_for([i], version)[0]
            elif action == "delete":
                present = sorted({i for by_id in model.live.values() for i in by_id})
                if present:
                    doomed = [present[int(i)] for i in rng.choice(len(present), size=min(len(present), 8))]
                    writer.delete(doomed)
                    for by_id in model.live.values():
                        for i in doomed:
                            by_id.pop(i, None)
            elif action == "rollback":
                writer.rollback()
                model.live = {name: dict(by_id) for name, by_id in model.saved.items()}
            elif action == "reopen":  # the writer goes on with every segment memory-mapped, deletes included
                writer.save()
                model.saved = {name: dict(by_id) for name, by_id in model.live.items()}
                writer.close()
                writer = MultimodalStore.open(path, mmap=True)
            else:
                before = entry(path, "s").files if version else None
                writer.save()
                model.saved = {name: dict(by_id) for name, by_id in model.live.items()}
                after = entry(path, "s").files
                kinds.add(_kind(before, after))
                assert files_on_disk(path) == {
                    name for space in ("s", "t") for name in entry(path, space).files.names()
                }
                for handle in followers:
                    check_handle(handle, model.saved, exact)
            check_handle(writer, model.live, exact)
        writer.save()
        model.saved = model.live
        for handle in [*followers, MultimodalStore.open(path, mmap=False)]:
            check_handle(handle, model.saved, exact)
    finally:
        for handle in [writer, *followers]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                handle.close()
    assert {"main", "segment", "merge", "tombstones"} <= kinds, kinds


def _kind(before: SpaceFiles | None, after: SpaceFiles) -> str:
    if before is None or not after.same_main(before):
        return "main"
    if any(".s0." not in segment.keys for segment in after.segments if segment not in before.segments):
        return "merge"
    return "segment" if after.segments != before.segments else "tombstones"


def test_a_merge_runs_outside_the_write_lock_and_gives_way_to_changes_made_meanwhile(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a merge writes its segment (after the save's commit, the write lock let go), this handle searches
    and changes the store and another handle commits; the merge then finds its space changed and is dropped,
    and the next save merges."""
    monkeypatch.setattr(segments, "MAX_SEGMENTS", 1)
    merging_, release = threading.Event(), threading.Event()
    write_array = segments.write_array

    def held_back(path: Path, array: np.ndarray) -> None:
        if ".m." in path.name and not merging_.is_set():  # the first merge only
            merging_.set()
            assert release.wait(30)
        write_array(path, array)

    monkeypatch.setattr(segments, "write_array", held_back)
    with MultimodalStore.open(store_path) as store, MultimodalStore.open(store_path) as other:
        for batch in ("a", "b"):
            ids = [f"{batch}-{i}" for i in range(5)]
            store.add(records(ids), {"s": vectors_for(ids)})
            if batch == "b":
                saving = threading.Thread(target=store.save)
                saving.start()
            else:
                store.save()
        assert merging_.wait(30)
        assert entry(store_path).files.segments[-1].rows == 5 and len(entry(store_path).files.segments) == 2
        assert store.search("s", vectors_for(["b-3"])[0], k=1)[0].record.id == "b-3"
        other.add(records(["c-0"]), {"s": vectors_for(["c-0"])})  # the write lock is free: no wait
        other.save()  # commits a third segment, then merges all three (its own merges are not held back)
        (merged,) = entry(store_path).files.segments
        release.set()
        saving.join(30)
        assert not saving.is_alive()
        assert entry(store_path).files.segments == (merged,)  # the held merge found its space changed: dropped
        assert merged.rows == 11 and set(files_on_disk(store_path)) == set(entry(store_path).files.names())
        store.add(records(["d-0"]), {"s": vectors_for(["d-0"])})
        store.save()  # appends, then merges down to one segment
        (merged,) = entry(store_path).files.segments
        assert merged.rows == 12 and ".m." in merged.keys
    with MultimodalStore.open(store_path, mmap=False) as reopened:
        assert reopened.count("s") == 2012
        assert reopened.search("s", vectors_for(["c-0"])[0], k=1)[0].record.id == "c-0"


def test_a_full_disk_during_a_merge_keeps_the_last_commit_and_says_so(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "MAX_SEGMENTS", 1)
    real_write = segments.write_array

    def full_when_merging(path: Path, array: np.ndarray) -> None:
        if ".m." in path.name:  # the merged segment; the save's own segment was written
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, array)

    store = MultimodalStore.open(store_path)
    first, second = [f"a-{i}" for i in range(5)], [f"b-{i}" for i in range(5)]
    store.add(records(first), {"s": vectors_for(first)})
    store.save()
    store.add(records(second), {"s": vectors_for(second)})
    store.delete(["a-0"])
    monkeypatch.setattr(segments, "write_array", full_when_merging)
    with pytest.warns(UserWarning, match=r"merging segments .*No space left on device.*generation 3\) is intact"):
        store.save()  # the save's commit stands; the merge after it failed
    assert not [f for f in files_on_disk(store_path) if ".m." in f]  # nothing of the merge is left
    assert len(entry(store_path).files.segments) == 2 and entry(store_path).files.tombstones
    with MultimodalStore.open(store_path) as other:
        assert other.count("s") == 2009 and other.info()["generation"] == 3
    assert not store.unsaved and store.count("s") == 2009
    monkeypatch.setattr(segments, "write_array", real_write)
    store.add(records(["c-0"]), {"s": vectors_for(["c-0"])})
    store.save()
    store.close()
    (segment,) = entry(store_path).files.segments
    assert segment.rows == 10 and entry(store_path).files.tombstones is None  # a-0 purged by the merge
    with MultimodalStore.open(store_path, mmap=False) as reopened:
        assert reopened.count("s") == 2010 and reopened.get(["a-0"]) == []
        assert reopened.search("s", vectors_for(["b-4"])[0], k=1)[0].record.id == "b-4"


# --- SIGKILL while saves append, merge and fold -----------------------------------------------------------
GROWING_WRITER = """
import sys
import numpy as np
from mm_rag import MultimodalStore
from mm_rag.store import segments, space
sys.path.insert(0, sys.argv[2])
from test_segments import round_ids, records, vectors_for

# a merge or a fold every round or two: few segments, a small recent part, many tombstones before a rewrite
segments.MAX_SEGMENTS, segments.DEAD_SHARE, space.FOLD_MIN, space.FOLD_SHARE_FLAT = 2, 0.5, 200, 0.05
store = MultimodalStore.open(sys.argv[1])
number = int(sys.argv[3])
while True:
    number += 1
    new = [i for i in round_ids(number) if i.startswith(f"g{number}-")]
    store.upsert(records(new), {"s": vectors_for(new)})
    store.delete(sorted(set(round_ids(number - 1)) - set(round_ids(number))))
    print(f"saving {number}", flush=True)
    store.save()
    files = store._generations.spaces["s"].files
    merged = sum(".s0." not in segment.keys for segment in files.segments)
    print(f"saved {number} {merged} {files.keys}", flush=True)
"""


def round_ids(number: int) -> list[str]:
    """The ids a store holds after round `number` of the growing writer: the base and the last four rounds'."""
    grown = [f"g{r}-{i}" for r in range(max(1, number - 3), number + 1) for i in range(40 + 7 * (r % 5))]
    return [f"base-{i}" for i in range(2000)] + (grown if number > 0 else [])


def test_sigkill_while_saves_append_merge_and_fold_leaves_the_last_commit(store_path: Path) -> None:
    import random
    import signal
    import subprocess
    import sys
    import time

    rng = random.Random(7)
    number, merged, mains = 0, 0, set()
    for _ in range(12):
        writer = subprocess.Popen(
            [sys.executable, "-c", GROWING_WRITER, str(store_path), str(Path(__file__).parent), str(number)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = [writer.stdout.readline().strip()]  # the first "saving": imports done, writing begun
        time.sleep(rng.uniform(0, 1.0))
        writer.send_signal(signal.SIGKILL)
        output, errors = writer.communicate(timeout=60)
        lines += output.splitlines()
        assert writer.returncode == -signal.SIGKILL, errors
        saved = [int(line.split()[1]) for line in lines if line.startswith("saved")]
        saving = [int(line.split()[1]) for line in lines if line.startswith("saving")]
        allowed = {max(saved, default=number)} | ({saving[-1]} if saving else set())
        with MultimodalStore.open(store_path, mmap=rng.random() < 0.5) as store:
            held = sorted(record.id for record in store)
            number = next(n for n in allowed if held == sorted(round_ids(n)))  # exactly one round's state
            check_handle(store, {"s": {i: vectors_for([i])[0] for i in round_ids(number)}}, {"s": True})
        assert files_on_disk(store_path) >= set(entry(store_path).files.names())
        merged += sum(int(line.split()[2]) for line in lines if line.startswith("saved"))
        mains |= {line.split()[3] for line in lines if line.startswith("saved")}
    assert number >= 12 and merged and len(mains) > 3, (
        number,
        merged,
        mains,
    )  # the writers merged segments and folded, and died doing so


@pytest.mark.parametrize("damage", ["truncated segment", "missing segment", "missing tombstones", "wrong dtype"])
def test_a_damaged_segment_or_tombstone_file_is_named_and_refused(store_path: Path, damage: str) -> None:
    with MultimodalStore.open(store_path) as store:
        new = [f"new-{i}" for i in range(10)]
        store.add(records(new), {"s": vectors_for(new)})
        store.delete(["base-5"])
        store.save()
    files = entry(store_path).files
    segment = store_path / "spaces" / files.segments[0].vectors
    if damage == "truncated segment":
        segment.write_bytes(segment.read_bytes()[:-64])
        named = segment.name
    elif damage == "missing segment":
        segment.unlink()
        named = segment.name
    elif damage == "missing tombstones":
        (store_path / "spaces" / files.tombstones).unlink()
        named = files.tombstones
    else:  # same size, another dtype: a file written by something else
        np.save(segment, np.zeros((10, DIM), dtype=np.int32))
        named = "space 's'"
    with pytest.raises(StoreFormatError, match=re.escape(named)):
        MultimodalStore.open(store_path)
