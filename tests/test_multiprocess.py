"""Several processes sharing one store: nothing is lost, writers take turns, readers see every commit.

Each `StoreProcess` is a separate interpreter with its own handle of the store; vectors derive from record
ids, so any process can check every record (its vectors, in every space it belongs to, found first).
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from fixtures.store_process import DIM, RemoteError, StoreProcess, add, check, vector

from mm_rag import MultimodalStore, Record, StoreLockedError, StoreWriteError
from mm_rag.store.manifest import SpaceEntry

pytestmark = pytest.mark.slow


def ids(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"{prefix}-{i}" for i in range(start, start + count)]


@pytest.fixture
def seeded(tmp_path):
    """A saved store of 100 records in spaces "s" (all) and "t" (even numbers)."""
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        add(store, ids("seed", 100))
        store.save()
    return path


def assert_consistent(path, count: int) -> dict:
    with MultimodalStore.open(path) as store:
        result = check(store)
    assert result["problems"] == [] and result["count"] == count
    return result


def test_a_stale_handle_that_writes_rebases_instead_of_dropping_anothers_commit(seeded) -> None:
    """The scenario that lost 50 records' vectors: S opens, C adds 50 and saves, S deletes one and saves."""
    with StoreProcess(seeded) as server, StoreProcess(seeded) as other:
        assert server.call("count") == 100
        other.call("add", ids("cli", 50))
        other.call("save")
        assert server.call("delete", ["seed-3"]) == 1
        server.call("save")
        assert server.call("check")["problems"] == []
        assert other.call("check")["count"] == 149  # the other handle sees the server's delete too
    assert_consistent(seeded, 149)
    with MultimodalStore.open(seeded) as store:
        assert store.get(["seed-3"]) == [] and len(store.get(ids("cli", 50))) == 50
        # new keys continue after every committed one: no key is handed out twice
        store.upsert([Record("cli-1000", "text")], {"s": vector("cli-1000")[None]})
        store.save()


def test_two_writers_at_once_both_land(seeded) -> None:
    with StoreProcess(seeded) as first, StoreProcess(seeded) as second:
        first.send("add", ids("a", 40))
        second.send("add", ids("b", 40))
        connections = {first: first._connection, second: second._connection}
        deadline = time.monotonic() + 60
        while not any(connection.poll(0.05) for connection in connections.values()):
            assert time.monotonic() < deadline
        winner, waiter = (first, second) if first._connection.poll() else (second, first)
        winner.receive()
        assert not waiter._connection.poll(0.5)  # it waits for the write lock, which the winner holds unsaved
        winner.call("save")
        waiter.receive()
        waiter.call("save")
    assert_consistent(seeded, 180)


def test_a_writer_that_waits_too_long_is_told_who_holds_the_lock(seeded) -> None:
    with StoreProcess(seeded) as holder, StoreProcess(seeded, lock_timeout=0.3) as impatient:
        holder.call("add", ids("h", 5))
        with pytest.raises(RemoteError) as raised:
            impatient.call("add", ids("i", 5))
        assert raised.value.kind == "StoreLockedError"
        assert f"process {holder.pid}" in raised.value.message and str(seeded) in raised.value.message
        assert impatient.call("count") == 100  # nothing changed, nothing lost
        holder.call("save")
        impatient.call("add", ids("i", 5))  # the lock is free once the holder saved
        impatient.call("save")
    assert_consistent(seeded, 110)


def test_a_writer_killed_while_holding_the_lock_frees_it_at_once(seeded) -> None:
    holder = StoreProcess(seeded)
    holder.call("add", ids("lost", 20))  # unsaved: the lock is held
    os.kill(holder.pid, signal.SIGKILL)
    holder.process.join(30)
    with StoreProcess(seeded, lock_timeout=0) as next_writer:  # no waiting at all
        next_writer.call("add", ids("next", 10))
        next_writer.call("save")
    result = assert_consistent(seeded, 110)
    assert not any(record_id.startswith("lost") for record_id in result["versions"])


@pytest.mark.parametrize("mmap", [False, True])
def test_a_reader_sees_each_commit_in_its_next_search(seeded, mmap: bool) -> None:
    with StoreProcess(seeded, mmap=mmap) as reader, StoreProcess(seeded) as writer:
        assert reader.call("nearest", "s", "new-0", 0) != "new-0"
        writer.call("add", ids("new", 3))
        assert reader.call("nearest", "s", "new-0", 0) != "new-0"  # not before the commit
        writer.call("save")
        assert reader.call("nearest", "s", "new-0", 0) == "new-0"
        writer.call("add", ["seed-4"], 7)  # a new version replaces the record's vectors
        writer.call("delete", ["new-0"])
        writer.call("save")
        assert reader.call("nearest", "t", "seed-4", 7) == "seed-4"
        assert reader.call("nearest", "s", "new-0", 0) != "new-0"
        assert reader.call("info")["generation"] == writer.call("info")["generation"]
        assert reader.call("check")["problems"] == []


def test_a_handle_in_this_process_sees_another_processes_commit(seeded) -> None:
    with MultimodalStore.open(seeded) as reader, StoreProcess(seeded) as writer:
        query = vector("fresh-0")
        assert reader.search("s", query, k=1)[0].record.id != "fresh-0"
        writer.call("add", ids("fresh", 2))
        writer.call("save")
        assert reader.search("s", query, k=1)[0].record.id == "fresh-0"
        assert {record.id for record in reader.find({"version": 0})[-2:]} == {"fresh-0", "fresh-1"}
        # and it writes on top of that commit, not over it
        add(reader, ["mine-0"])
        reader.save()
    assert_consistent(seeded, 103)


def test_two_handles_in_one_process_take_turns_too(seeded) -> None:
    with (
        MultimodalStore.open(seeded, lock_timeout=0.2) as first,
        MultimodalStore.open(seeded, lock_timeout=0.2) as second,
    ):
        add(first, ids("first", 3))
        with pytest.raises(StoreLockedError, match="this process"):
            add(second, ids("second", 3))
        first.save()
        add(second, ids("second", 3))
        second.save()
        assert first.count() == 106 and check(first)["problems"] == []


def test_a_commit_made_without_the_lock_is_never_overwritten(seeded) -> None:
    """A writer that ignores write.lock (an older mm-rag, a file system without locks) is caught at save."""
    with MultimodalStore.open(seeded) as honest, MultimodalStore.open(seeded) as rogue:
        rogue._generations.write_lock = _NoLock()
        rogue.create_space("extra", 4)  # in memory only until its save
        add(honest, ids("honest", 5))
        honest.save()
        with pytest.raises(StoreWriteError, match="did not hold the store's lock"):
            rogue.save()
        assert "extra" not in rogue.spaces and rogue.count() == 105  # it shows the latest commit now
    assert_consistent(seeded, 105)


class _NoLock:
    held = True

    def acquire(self, *args: object) -> None:
        pass

    def release(self) -> None:
        pass


def test_rollback_returns_to_the_latest_commit_and_frees_the_lock(seeded) -> None:
    with MultimodalStore.open(seeded, lock_timeout=0) as store, StoreProcess(seeded, lock_timeout=0) as other:
        add(store, ids("dropped", 4))
        store.delete(["seed-0"])
        store.rollback()
        assert not store.unsaved and store.count() == 100 and store.get(["seed-0"])
        other.call("add", ids("other", 2))  # would raise StoreLockedError if the lock were still held
        other.call("save")
        assert store.count() == 102 and check(store)["problems"] == []


# Few segments and many tombstones before a rewrite: the writers' saves merge segments round after round.
MERGING = [("mm_rag.store.segments", "MAX_SEGMENTS", 2), ("mm_rag.store.segments", "DEAD_SHARE", 0.9)]


@pytest.mark.parametrize("merging", [False, True], ids=["default", "merging"])
def test_four_processes_of_add_upsert_delete_rounds_leave_a_consistent_store(tmp_path, merging) -> None:
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        add(store, ids("base", 10))
        store.save()
    writers = [StoreProcess(path) for _ in range(4)]
    try:
        for number, writer in enumerate(writers):
            if merging:
                writer.call("tune", *MERGING)
            writer.send("stress", f"w{number}", 60, number)
        tallies = [writer.receive(timeout=600) for writer in writers]
        final = writers[0].call("check")  # a handle that lived through all of it catches up too
    finally:
        for writer in writers:
            writer.stop()
    expected = {f"base-{i}": 0 for i in range(10)}
    for tally in tallies:
        expected.update(tally)
    result = assert_consistent(path, len(expected))
    assert result["versions"] == expected
    assert final["problems"] == [] and final["versions"] == expected
    with MultimodalStore.open(path) as store:
        assert store.info()["generation"] > 50  # the writers really took turns, round after round
        assert store.count("s") == len(expected)
        # exactly the files of the last commit remain: no writer left another's space files behind
        listed = {
            file
            for name, entry in store._generations.manifest["spaces"].items()
            for file in SpaceEntry.from_json(name, entry).files.names()
        }
        assert {file.name for file in (path / "spaces").iterdir()} == listed
        if merging:
            segments = SpaceEntry.from_json("s", store._generations.manifest["spaces"]["s"]).files.segments
            assert any(".s0." not in segment.keys for segment in segments)  # a merged segment is part of it


def test_vectors_of_the_other_writer_are_exact_after_rebasing(seeded) -> None:
    """Numbers, not just presence: each space's vectors equal what their writer stored."""
    with StoreProcess(seeded) as other, MultimodalStore.open(seeded) as store:
        other.call("add", ids("x", 6))
        other.call("save")
        add(store, ids("y", 6))
        store.save()
        stored = store.vectors("t", ["x-0", "x-2", "y-4"])
        for record_id, value in stored.items():
            assert np.allclose(value, vector(record_id), atol=1e-6)
        assert len(stored) == 3 and store.count("s") == 112 and DIM == len(stored["x-0"])


def test_searches_go_on_while_a_write_of_this_process_waits_for_anothers_lock(seeded) -> None:
    import threading

    with StoreProcess(seeded) as holder, MultimodalStore.open(seeded, lock_timeout=60) as store:
        holder.call("add", ids("held", 2))  # holds the lock, unsaved
        waiting = threading.Thread(target=add, args=(store, ids("waits", 2)))
        waiting.start()
        answered = [store.search("s", vector(f"seed-{i}"), k=1)[0].record.id for i in range(30)]
        assert waiting.is_alive()  # all 30 searches came back while the write was still waiting
        assert answered == [f"seed-{i}" for i in range(30)]
        holder.call("save")
        waiting.join(60)
        assert not waiting.is_alive() and store.unsaved
        store.save()
    assert_consistent(seeded, 104)


def test_info_names_the_writer_and_a_waiting_writer_says_whom_it_waits_for(seeded, caplog) -> None:
    with StoreProcess(seeded) as holder, MultimodalStore.open(seeded, lock_timeout=1.5) as store:
        assert store.info()["writer"] is None
        holder.call("add", ids("h", 1))
        writer = store.info()["writer"]
        assert writer["pid"] == holder.pid and writer["command"]
        with caplog.at_level("WARNING", logger="mm_rag.store"), pytest.raises(StoreLockedError):
            add(store, ids("w", 1))
        said = [record.getMessage() for record in caplog.records if "waiting up to" in record.getMessage()]
        assert len(said) == 1 and f"store {seeded} is being written by process {holder.pid}" in said[0]
        holder.call("save")
        assert store.info()["writer"] is None and store.count() == 101


def test_a_search_racing_a_commit_is_not_short_of_k(seeded) -> None:
    """A commit landing between a search's check and its catalog read: that search catches up and runs again."""
    with MultimodalStore.open(seeded) as reader, StoreProcess(seeded) as writer:
        nearest = [hit.record.id for hit in reader.search("s", vector("seed-5"), k=5)]
        writer.call("delete", nearest[:3])
        writer.call("save")
        real_sync, calls = reader._generations.sync, []
        reader._generations.sync = lambda: (
            calls.append(1) if len(calls) == 0 else real_sync()
        )  # the first check misses it
        hits = reader.search("s", vector("seed-5"), k=5)
        assert len(calls) == 1 and len(hits) == 5 and not {hit.record.id for hit in hits} & set(nearest[:3])


def test_a_commit_that_appends_is_applied_in_memory_one_that_rewrites_the_space_reopens_it(seeded) -> None:
    with MultimodalStore.open(seeded, mmap=False) as reader, StoreProcess(seeded) as writer:
        held = dict(reader._generations.spaces)
        writer.call("add", ids("small", 6))
        writer.call("add", ["seed-8"], 3)  # an upsert: a new key for an old record
        writer.call("delete", ["seed-1", "seed-2"])
        writer.call("save")  # a segment and a tombstone file
        assert check(reader)["problems"] == []  # caught up by reading only them...
        assert (
            reader._generations.spaces["s"] is held["s"] and reader._generations.spaces["t"] is held["t"]
        )  # ...into the same spaces
        assert check(reader) == check(MultimodalStore.open(seeded))
        writer.call("add", ids("bulk", 60))  # a larger segment: still applied in memory
        writer.call("save")
        assert check(reader)["problems"] == [] and reader._generations.spaces["s"] is held["s"]
        writer.call("delete", [f"seed-{i}" for i in range(10, 30)])  # dead rows past DEAD_SHARE: rewritten whole
        writer.call("save")
        assert check(reader)["problems"] == [] and reader._generations.spaces["s"] is not held["s"]
        assert reader.count() == 100 + 6 - 2 + 60 - 20
        assert check(reader) == check(MultimodalStore.open(seeded))


def test_hnsw_spaces_are_patched_with_tombstones(tmp_path) -> None:
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        store.create_space("s", DIM, index="HNSW32")
        seeds = ids("seed", 50)
        store.add(
            [Record(i, "text", metadata={"version": 0}) for i in seeds], {"s": np.stack([vector(i) for i in seeds])}
        )
        store.save()
    with MultimodalStore.open(path, mmap=False) as reader, StoreProcess(path) as writer:
        held = reader._generations.spaces["s"]
        writer.call("delete", ["seed-3"])
        late = ids("late", 2)
        writer.call("upsert", [Record(i, "text") for i in late], {"s": np.stack([vector(i) for i in late])})
        writer.call("save")
        assert reader.count("s") == 51 and reader.get(["seed-3"]) == [] and reader._generations.spaces["s"] is held
        assert reader.search("s", vector("seed-7"), k=1)[0].record.id == "seed-7"
        assert reader.search("s", vector("late-1"), k=1)[0].record.id == "late-1"
        assert "seed-3" not in {hit.record.id for hit in reader.search("s", vector("seed-3"), k=50)}
