"""What sharing a store between processes costs: the per-search commit check, catching up, taking turns.

Run from the repository root::

    .venv/bin/python benchmarks/bench_sharing.py            # 100k x 512 for catching up, ~1 min
    .venv/bin/python benchmarks/bench_sharing.py --quick    # 20k x 512

Each figure is set against a baseline measured in the same run:

(a) ``search``: one-vector searches (k=10) of a Flat space of 20k x 512, with the check for other processes'
    commits (``PRAGMA data_version``, the code since issue 10) against the same handle with the check left out
    (what a search did before), alternated over ``--repeats`` rounds; the median of each round's mean.
(b) ``catch-up``: a reader's first search after another process committed 1,000 new vectors to a store of
    ``--n`` x 512, memory-mapped and in memory, against its next (ordinary) search: the cost of loading the
    changed space, paid once per commit by each open handle.
(c) ``save``: a save after adding 64 records to the ``--n`` store, which rewrites the changed space: why a long
    ingestion commits every 10 s rather than after every batch.
(d) ``turns``: two processes each running add-100-then-save rounds on one store against one process alone:
    commits per second, and the longest a writer waited for the lock.

Results go to ``benchmarks/results/sharing.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mm_rag import MultimodalStore, Record

DIM = 512


def vectors(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)


def fill(path: Path, count: int) -> None:
    with MultimodalStore(path) as store:
        store.create_space("v", DIM, index="Flat")
        for start in range(0, count, 50_000):
            size = min(50_000, count - start)
            records = [Record(f"r{start + i}", "text", metadata={"tenant": (start + i) % 100}) for i in range(size)]
            store.add(records, {"v": vectors(size, start)})
        store.save()


def search_overhead(workdir: Path, repeats: int, queries: int) -> dict:
    path = workdir / "search"
    fill(path, 20_000)
    probes = vectors(queries, 99)
    checked, unchecked = [], []
    with MultimodalStore.open(path) as store:
        plain = store._generations.sync
        for _ in range(repeats):
            for sink, sync in ((unchecked, lambda: None), (checked, plain)):
                store._generations.sync = sync
                started = time.perf_counter()
                for probe in probes:
                    store.search("v", probe, k=10)
                sink.append((time.perf_counter() - started) / queries * 1e6)
        started = time.perf_counter()
        for _ in range(10_000):
            store._generations.catalog.data_version()
        pragma = (time.perf_counter() - started) / 10_000 * 1e6
    before, after = statistics.median(unchecked), statistics.median(checked)
    return {"before_us": before, "after_us": after, "ratio": after / before, "pragma_us": pragma}


def _commit_more(path: str, start: int, count: int) -> None:
    with MultimodalStore.open(path) as store:
        store.add([Record(f"late{start + i}", "text") for i in range(count)], {"v": vectors(count, start + 7)})
        store.save()


def catch_up(workdir: Path, count: int) -> dict:
    path = workdir / "catch-up"
    fill(path, count)
    probe = vectors(1, 5)[0]
    context = multiprocessing.get_context("spawn")
    result = {}
    for mmap in (True, False):
        with MultimodalStore.open(path, mmap=mmap) as reader:
            reader.search("v", probe, k=10)
            writer = context.Process(target=_commit_more, args=(str(path), 1_000_000 * mmap + len(reader), 1000))
            writer.start()
            writer.join()
            started = time.perf_counter()
            first = reader.search("v", probe, k=10)
            first_ms = (time.perf_counter() - started) * 1e3
            started = time.perf_counter()
            reader.search("v", probe, k=10)
            next_ms = (time.perf_counter() - started) * 1e3
            assert reader.count("v") == len(reader) and first
        result["mmap" if mmap else "memory"] = {"first_ms": first_ms, "next_ms": next_ms, "ratio": first_ms / next_ms}
    return result


def save_cost(workdir: Path, count: int) -> dict:
    path = workdir / "catch-up"
    with MultimodalStore.open(path) as store:
        store.add([Record(f"batch{i}", "text") for i in range(64)], {"v": vectors(64, 3)})
        started = time.perf_counter()
        store.save()
        seconds = time.perf_counter() - started
        total = store.count("v")
    return {"vectors": total, "save_s": seconds, "bytes_written": total * DIM * 4 * 2}


def _rounds(path: str, prefix: str, rounds: int) -> tuple[float, float]:
    longest = 0.0
    with MultimodalStore.open(path, lock_timeout=120) as store:
        started = time.perf_counter()
        for number in range(rounds):
            records = [Record(f"{prefix}{number}-{i}", "text") for i in range(100)]
            before = time.perf_counter()
            store.add(records, {"v": vectors(100, number)})
            longest = max(longest, time.perf_counter() - before)
            store.save()
        return time.perf_counter() - started, longest


def _rounds_in_process(path: str, prefix: str, rounds: int, queue) -> None:
    queue.put(_rounds(path, prefix, rounds))


def turns(workdir: Path, rounds: int) -> dict:
    context = multiprocessing.get_context("spawn")
    result = {}
    for writers in (1, 2):
        path = workdir / f"turns-{writers}"
        fill(path, 20_000)
        queue = context.Queue()
        processes = [
            context.Process(target=_rounds_in_process, args=(str(path), f"w{n}-", rounds, queue))
            for n in range(writers)
        ]
        started = time.perf_counter()
        for process in processes:
            process.start()
        outcomes = [queue.get() for _ in processes]
        for process in processes:
            process.join()
        wall = time.perf_counter() - started
        with MultimodalStore.open(path) as store:
            assert len(store) == 20_000 + writers * rounds * 100
        result[f"{writers}_writers"] = {
            "commits_per_s": writers * rounds / wall,
            "longest_wait_s": max(longest for _, longest in outcomes),
        }
    result["ratio"] = result["2_writers"]["commits_per_s"] / result["1_writers"]["commits_per_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sharing.json"))
    options = parser.parse_args()
    if options.quick:
        options.n, options.repeats, options.queries, options.rounds = 20_000, 3, 200, 8
    with tempfile.TemporaryDirectory(prefix="mm-rag-sharing-") as folder:
        workdir = Path(folder)
        figures = {"search": search_overhead(workdir, options.repeats, options.queries)}
        print(f"(a) search: {figures['search']}", flush=True)
        figures["catch_up"] = catch_up(workdir, options.n)
        print(f"(b) catch-up: {figures['catch_up']}", flush=True)
        figures["save"] = save_cost(workdir, options.n)
        print(f"(c) save: {figures['save']}", flush=True)
        figures["turns"] = turns(workdir, options.rounds)
        print(f"(d) turns: {figures['turns']}", flush=True)
    figures["machine"] = {"python": platform.python_version(), "cpus": multiprocessing.cpu_count(), "n": options.n}
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
