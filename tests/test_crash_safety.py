"""Crash safety and safe loading of a store directory.

- A child process flips a store between two known states A and B and saves in a loop; the test SIGKILLs it at
  random moments (during a save, during the upserts before one, anywhere) and checks that the store reopens in
  exactly a saved state (never a mix of A and B), and that it can be changed and saved again afterwards.
- Opening and searching a store never unpickles anything, and no file of a store is a pickle.
- A damaged store (truncated or garbage index, vector or catalog file) raises `StoreFormatError` on open.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mm_rag import MultimodalStore, Record, StoreFormatError
from mm_rag.store.manifest import SpaceEntry

# State A: records r0..r2999; state B: r0..r2399 with other text, metadata, doc ids and vectors (r2400.. gone).
SIZES = {"A": 3000, "B": 2400}
CLIP_DIM = 64  # cosine, Flat: every record has a vector here
TEXT_DIM = 32  # l2, HNSW32: only the first TEXT_COUNT records have one
TEXT_COUNT = 300
SCORE_TOLERANCE = 1e-4


@cache
def state_records(state: str) -> tuple[Record, ...]:
    return tuple(
        Record(
            f"r{i}",
            "text" if i % 3 else "image",
            text=f"state {state} item {i}",
            metadata={"state": state, "i": i, "tags": [state, str(i % 7)]},
            doc_id=f"doc-{state}-{i % 10}",
        )
        for i in range(SIZES[state])
    )


@cache
def state_vectors(state: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1 if state == "A" else 2)
    clip = rng.normal(size=(SIZES[state], CLIP_DIM)).astype(np.float32)
    text = rng.normal(size=(TEXT_COUNT, TEXT_DIM)).astype(np.float32)
    return clip, text


def apply_state(store: MultimodalStore, state: str) -> None:
    """Turn a store holding the other state (or nothing) into `state`, in several writes."""
    records = list(state_records(state))
    clip, text = state_vectors(state)
    store.upsert(records[:TEXT_COUNT], {"clip": clip[:TEXT_COUNT], "text": text})
    store.upsert(records[TEXT_COUNT:], {"clip": clip[TEXT_COUNT:]})
    store.delete([f"r{i}" for i in range(SIZES[state], max(SIZES.values()))])


def create_store(path: Path) -> None:
    store = MultimodalStore(path)
    store.create_space("clip", CLIP_DIM, metric="cosine", index="Flat")
    store.create_space("text", TEXT_DIM, metric="l2", index="HNSW32")
    apply_state(store, "A")
    store.save()
    store.close()


def run_writer(path: str) -> None:
    """The crashing writer: alternate between the states, saving each, until killed."""

    def say(line: str) -> None:
        print(line, flush=True)

    say(f"pid {os.getpid()}")
    store = MultimodalStore.open(path)
    current = store.get(["r0"])[0].metadata["state"]
    say(f"ready {current}")
    while True:
        target = "B" if current == "A" else "A"
        say(f"applying {target}")
        apply_state(store, target)
        say(f"saving {target}")
        store.save()
        say(f"saved {target}")
        current = target


def zygote(path: str) -> None:
    """Fork one writer per ``fork`` line on stdin, reap it, report how it ended.

    Imports are paid once here, so a writer starts in milliseconds. Nothing here runs Faiss (and OpenMP is
    limited to one thread), so forking is safe.
    """
    for command in sys.stdin:
        if command.strip() != "fork":
            return
        pid = os.fork()
        if pid == 0:
            try:
                run_writer(path)
            except BaseException:  # noqa: BLE001 - report anything, then never return into the server loop
                traceback.print_exc()
                sys.stderr.flush()
            os._exit(1)  # only reached when the writer failed; never run the server's code in a writer
        _, status = os.waitpid(pid, 0)
        print(f"exit {status}", flush=True)


ZYGOTE_CODE = "import sys; sys.path.insert(0, sys.argv[1]); import test_crash_safety as t; t.zygote(sys.argv[2])"


# --- checking a state -------------------------------------------------------------------------------------
QUERIES = np.random.default_rng(99).normal(size=(3, CLIP_DIM)).astype(np.float32)


def expected_scores(state: str, space: str, query: np.ndarray) -> dict[str, float]:
    clip, text = state_vectors(state)
    if space == "clip":
        stored = clip.astype(np.float64) / np.linalg.norm(clip.astype(np.float64), axis=1, keepdims=True)
        scores = stored @ (query / np.linalg.norm(query))
    else:
        scores = -np.linalg.norm(text.astype(np.float64) - query, axis=1)
    return {f"r{i}": float(value) for i, value in enumerate(scores)}


def assert_top_k(hits: list, expected: dict[str, float], k: int, exact: bool) -> None:
    """Hits are distinct, live, correctly scored and ordered; with `exact`, the k best up to ties."""
    wanted = min(k, len(expected))
    assert len(hits) == wanted
    ids = [hit.record.id for hit in hits]
    assert len(set(ids)) == len(ids)
    for rank, hit in enumerate(hits):
        assert hit.rank == rank
        assert abs(hit.score - expected[hit.record.id]) <= SCORE_TOLERANCE
    assert all(a.score >= b.score - SCORE_TOLERANCE for a, b in itertools.pairwise(hits))
    if exact and wanted:
        kth_best = sorted(expected.values(), reverse=True)[wanted - 1]
        assert min(hit.score for hit in hits) >= kth_best - SCORE_TOLERANCE


def assert_state(store: MultimodalStore, state: str) -> None:
    """The store holds exactly `state`: records, vectors and search results, nothing of the other state."""
    records = state_records(state)
    ids = [record.id for record in records]
    assert store.count() == len(records)
    assert store.count("clip") == len(records)
    assert store.count("text") == TEXT_COUNT
    assert sorted(store, key=lambda r: int(r.id[1:])) == list(records)
    clip, text = state_vectors(state)
    stored = store.vectors("clip", ids)
    assert len(stored) == len(ids)
    np.testing.assert_allclose(
        np.stack([stored[i] for i in ids]), clip / np.linalg.norm(clip, axis=1, keepdims=True), atol=1e-6
    )
    stored = store.vectors("text", ids)
    np.testing.assert_array_equal(np.stack([stored[f"r{i}"] for i in range(TEXT_COUNT)]), text)
    other = "B" if state == "A" else "A"
    for query in QUERIES:
        assert_top_k(store.search("clip", query, k=10), expected_scores(state, "clip", query), 10, exact=True)
        assert store.search("clip", query, k=10, filter={"state": other}) == []
        text_query = query[:TEXT_DIM]
        text_expected = expected_scores(state, "text", text_query)
        assert_top_k(store.search("text", text_query, k=10), text_expected, 10, exact=False)  # HNSW: approximate
        hits = store.search("text", text_query, k=10, filter={"state": state})  # selective: scanned exactly
        assert_top_k(hits, text_expected, 10, exact=True)


def stored_state(store: MultimodalStore) -> str:
    return store.get(["r0"])[0].metadata["state"]


def assert_only_referenced_files(path: Path) -> None:
    manifest = json.loads((path / "mmrag.json").read_text())
    referenced = {
        file for name, entry in manifest["spaces"].items() for file in SpaceEntry.from_json(name, entry).files.names()
    }
    assert {file.name for file in (path / "spaces").iterdir()} == referenced


# --- the crashing child -----------------------------------------------------------------------------------
class Zygote:
    """The fork server and its output lines, each stamped with when it arrived."""

    def __init__(self, path: Path, log: Path) -> None:
        self.log = log
        self._stderr = open(log, "w")  # noqa: SIM115 - the writers' stderr, open until close()
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE_CODE, str(Path(__file__).parent), str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
        self.lines: list[str] = []  # of the current writer
        self.writer = 0
        self._queue: queue.Queue[tuple[float, str] | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stdout:
            self._queue.put((time.monotonic(), line.strip()))
        self._queue.put(None)

    def fork(self) -> None:
        self.process.stdin.write("fork\n")
        self.process.stdin.flush()
        self.lines = []
        self.writer = int(self.wait_for("pid").split()[1])

    def wait_for(self, prefix: str, timeout: float = 120.0) -> str:
        """Wait for the next line starting with `prefix` (returns it; its arrival time is `self.arrived`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {prefix!r} line in {timeout} s; stderr: {self.log.read_text()}")
            if item is None:
                pytest.fail(f"fork server exited before {prefix!r}: {self.log.read_text()}")
            self.arrived, line = item
            if line.startswith("exit ") and prefix != "exit":
                pytest.fail(f"writer ended by itself ({line}) before {prefix!r}: {self.log.read_text()}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def kill_writer(self) -> list[str]:
        """SIGKILL the writer; returns every line it printed."""
        os.kill(self.writer, signal.SIGKILL)
        status = int(self.wait_for("exit").split()[1])
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (status, self.log.read_text())
        self.writer = 0
        return self.lines[:-1]

    def close(self) -> None:
        if self.writer:
            os.kill(self.writer, signal.SIGKILL)
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self._stderr.close()


def acceptable_states(initial: str, lines: list[str]) -> set[str]:
    """States a reopen may show after the child printed `lines`: the last saved one, or the one being saved."""
    durable = initial
    for line in lines:
        if line.startswith("saved "):
            durable = line.split()[1]
    last = lines[-1] if lines else ""
    return {durable, last.split()[1]} if last.startswith("saving ") else {durable}


def test_sigkill_at_random_moments_leaves_a_saved_state(tmp_path: Path) -> None:
    path = tmp_path / "store"
    create_store(path)
    rng = random.Random(20240611)
    server = Zygote(path, tmp_path / "writer.log")
    try:
        # One uninterrupted writer first, to learn how long the upserts and a save take on this machine.
        server.fork()
        server.wait_for("applying")
        started = server.arrived
        server.wait_for("saving")
        saving = server.arrived
        server.wait_for("saved")
        apply_time, save_time = saving - started, server.arrived - saving
        server.wait_for("saving")
        saving = server.arrived
        server.wait_for("saved")
        save_time = max(min(save_time, server.arrived - saving), 0.002)  # the quicker: kills land inside saves
        allowed = acceptable_states("A", server.kill_writer())
        with MultimodalStore.open(path) as store:
            state = stored_state(store)
        assert state in allowed

        mid_save = {"old state kept": 0, "new state": 0}
        modes = ["save", "apply", "anytime"]
        for iteration in range(36):
            mode = modes[iteration % len(modes)]
            server.fork()
            server.wait_for("ready")
            if mode == "save":
                server.wait_for("saving")
                time.sleep(rng.uniform(0, 1.2 * save_time))
            elif mode == "apply":
                server.wait_for("applying")
                time.sleep(rng.uniform(0, apply_time))
            else:
                time.sleep(rng.uniform(0, 2.5 * (apply_time + save_time)))
            lines = server.kill_writer()
            allowed = acceptable_states(state, lines)

            with MultimodalStore.open(path) as store:
                found = stored_state(store)
                assert found in allowed, (mode, lines)
                assert_state(store, found)
                assert not store.unsaved
            if lines[-1].startswith("saving "):
                mid_save["new state" if found != state else "old state kept"] += 1
            state = found

            # The store takes changes and saves again (over whatever files the killed save left behind).
            with MultimodalStore.open(path) as store:
                vector = np.ones(CLIP_DIM, dtype=np.float32)
                store.upsert([Record("extra", "text", metadata={"state": "extra"})], {"clip": vector[None]})
                store.save()
            assert_only_referenced_files(path)
            with MultimodalStore.open(path) as store:
                assert store.get(["extra"])[0].metadata == {"state": "extra"}
                assert store.count() == SIZES[state] + 1
                assert store.search("clip", vector, k=1)[0].record.id == "extra"
                assert store.delete(["extra"]) == 1
                store.save()
            with MultimodalStore.open(path) as store:
                assert store.count() == store.count("clip") == SIZES[state]
                assert stored_state(store) == state and not store.get(["extra"])
    finally:
        server.close()
    with MultimodalStore.open(path) as store:
        assert_state(store, state)
    # The kills really landed inside saves (mostly before the commit point, some after it).
    assert sum(mid_save.values()) >= 5, mid_save


# --- no pickle --------------------------------------------------------------------------------------------
def refuse(name: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{name} called while opening or searching a store")

    return refused


def small_store(path: Path) -> None:
    """A store with every kind of space file: Flat, HNSW, and an IVF space still waiting for training."""
    store = MultimodalStore(path)
    store.create_space("flat", 8, index="Flat")
    store.create_space("hnsw", 8, metric="l2", index="HNSW32")
    store.create_space("ivf", 8, metric="ip", index="IVF4,Flat")
    rng = np.random.default_rng(5)
    records = [
        Record(f"r{i}", "image", uri=f"file:///{i}.png", metadata={"i": i, "nested": {"x": [1, 2]}}) for i in range(40)
    ]
    store.upsert(records, {name: rng.normal(size=(40, 8)) for name in ("flat", "hnsw", "ivf")})
    store.delete(["r3", "r7"])
    store.save()
    store.close()


def test_opening_and_searching_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "store"
    small_store(path)
    import _pickle

    for module, name in [
        (pickle, "loads"),
        (pickle, "load"),
        (pickle, "Unpickler"),
        (_pickle, "loads"),
        (_pickle, "load"),
    ]:
        monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}"))
    real_load = np.load
    calls: list[bool] = []

    def checked_load(*args: Any, allow_pickle: bool = False, **kwargs: Any) -> Any:
        calls.append(allow_pickle)
        if allow_pickle:
            raise AssertionError("numpy.load(allow_pickle=True) while opening a store")
        return real_load(*args, allow_pickle=False, **kwargs)

    monkeypatch.setattr(np, "load", checked_load)
    for mmap in (False, True):
        with MultimodalStore.open(path, mmap=mmap) as store:
            assert store.count() == 38
            for space in ("flat", "hnsw", "ivf"):
                hits = store.search(space, np.ones(8), k=5)
                assert len(hits) == 5
                assert store.search(space, np.ones(8), k=3, filter={"i": {"$lt": 10}})
            assert sorted(r.id for r in store) == sorted(f"r{i}" for i in range(40) if i not in (3, 7))
    assert calls and not any(calls)  # the vector files were read, and never with allow_pickle


def test_no_file_of_a_store_is_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "store"
    small_store(path)
    files = [file for file in path.rglob("*") if file.is_file()]
    assert {file.name for file in files} >= {"mmrag.json", "catalog.sqlite"}
    npy = [file for file in files if file.suffix == ".npy"]
    assert len(npy) == 6
    for file in files:
        head = file.read_bytes()[:16]
        assert not head.startswith(b"\x80"), f"{file} starts like a pickle"
        if file.suffix == ".npy":
            array = np.load(file, allow_pickle=False)
            assert array.dtype in (np.float32, np.int64)
    assert (path / "catalog.sqlite").read_bytes().startswith(b"SQLite format 3\x00")
    json.loads((path / "mmrag.json").read_text())


class _Trap:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def test_a_pickle_planted_in_a_store_is_refused_not_run(tmp_path: Path) -> None:
    path = tmp_path / "store"
    small_store(path)
    marker = tmp_path / "code-ran"
    target = next((path / "spaces").glob("flat.*.vectors.npy"))
    array = np.empty(1, dtype=object)
    array[0] = _Trap(str(marker))
    with open(target, "wb") as handle:
        np.save(handle, array, allow_pickle=True)
    with pytest.raises(StoreFormatError):
        MultimodalStore.open(path)
    assert not marker.exists()


# --- damaged stores ---------------------------------------------------------------------------------------
def _truncate_half(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _garbage(file: Path) -> None:
    file.write_bytes(random.Random(7).randbytes(max(4096, file.stat().st_size)))


def _empty(file: Path) -> None:
    file.write_bytes(b"")


def _other_index(file: Path) -> None:
    """A well-formed Faiss file that belongs to another space (wrong dimension and size)."""
    import faiss

    index = faiss.IndexIDMap2(faiss.IndexFlatIP(4))
    index.add_with_ids(np.ones((3, 4), dtype=np.float32), np.arange(3, dtype=np.int64))
    faiss.write_index(index, str(file))


def _flip_size_byte(file: Path) -> None:
    """One flipped byte inside a stored size field: Faiss itself would try a huge allocation or hang."""
    data = bytearray(file.read_bytes())
    data[77] ^= 0x40
    file.write_bytes(bytes(data) + b"\0")  # and one byte appended, as a partial overwrite might leave


DAMAGE = {
    "faiss-size-field-flipped": ("flat.*.faiss", _flip_size_byte),
    "faiss-truncated": ("flat.*.faiss", _truncate_half),
    "faiss-garbage": ("flat.*.faiss", _garbage),
    "faiss-empty": ("hnsw.*.faiss", _empty),
    "faiss-of-another-space": ("hnsw.*.faiss", _other_index),
    "vectors-truncated": ("flat.*.vectors.npy", _truncate_half),
    "keys-empty": ("ivf.*.keys.npy", _empty),
    "vectors-garbage": ("hnsw.*.vectors.npy", _garbage),
    "catalog-garbage": ("catalog.sqlite", _garbage),
    "catalog-truncated": ("catalog.sqlite", _truncate_half),
    "catalog-empty": ("catalog.sqlite", _empty),
    "catalog-missing": ("catalog.sqlite", Path.unlink),
    "manifest-garbage": ("mmrag.json", _garbage),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_store_raises_store_format_error(damage: str, tmp_path: Path) -> None:
    path = tmp_path / "store"
    small_store(path)
    pattern, spoil = DAMAGE[damage]
    (file,) = list(path.glob(pattern)) or list((path / "spaces").glob(pattern))
    spoil(file)
    for opener in (MultimodalStore.open, MultimodalStore):
        with pytest.raises(StoreFormatError), warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            opener(path)


def test_interrupted_creation_leaves_a_usable_empty_store(tmp_path: Path) -> None:
    """A kill between creating the catalog and writing mmrag.json must not block the path for good."""
    path = tmp_path / "store"
    MultimodalStore(path).close()
    (path / "mmrag.json").unlink()
    with MultimodalStore(path) as store:
        assert store.count() == 0
        store.create_space("s", 4)
        store.add([Record("a", "text")], {"s": np.ones((1, 4))})
        store.save()
    with MultimodalStore.open(path) as store:
        assert [record.id for record in store] == ["a"]
