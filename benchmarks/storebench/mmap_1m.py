"""Section 5: open a 1M x dim Flat store memory-mapped (warm and cold), against faiss.read_index on its file."""

# The timed lambdas close over loop variables and over names deleted afterwards to free memory; each is called
# at once, inside its iteration, before any `del`. Notes are lists of implicitly concatenated long strings.
# ruff: noqa: B023, F821, ISC004

from __future__ import annotations

import gc
import shutil
import time
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from mm_rag import MultimodalStore

from .common import (
    Bench,
    clustered,
    dir_size,
    evict,
    fmt_bytes,
    fmt_ratio,
    fmt_s,
    make_records,
    median,
    meminfo,
    normalised,
    print_table,
    timed,
)

NAME = "mmap_1m"  # the section's key in the results

CHUNK = 100_000  # records per store.add while building


def run(b: Bench) -> None:
    n, dim, k, reps = b.args.mmap_n, b.dim, b.k, b.repeats
    need = n * dim * 4 * 2.6
    avail = meminfo("MemAvailable")
    if avail is not None and avail < need:
        print(f"\n== 5. skipped: {n:,} x {dim} needs ~{fmt_bytes(int(need))} of memory, {fmt_bytes(avail)} available")
        b.results[NAME] = {"skipped": True}
        return
    path = b.work / "mm-1m"
    rng = np.random.default_rng(b.args.seed + 1)
    store = MultimodalStore(path)
    store.create_space("clip", dim, metric="cosine", index="Flat")
    start = time.perf_counter()
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        store.add(make_records(lo, hi), {"clip": clustered(rng, hi - lo, dim)})
    build_s = time.perf_counter() - start
    save_s, _ = timed(store.save)
    store.close()
    del store
    gc.collect()
    queries = normalised(rng, reps * 2 + 2, dim)
    index_file = next((path / "spaces").glob("*.faiss"))
    rows: dict[str, dict[str, Any]] = {}

    def measure(
        name: str,
        opener: Callable[[], Any],
        search: Callable[[Any, np.ndarray], Any],
        cold: bool,
        closer: Callable[[Any], None] = lambda o: None,
        runs: int = reps,
    ) -> None:
        opens, firsts, seconds = [], [], []
        for r in range(runs):
            if cold:
                evict(path)
            t, obj = timed(opener)
            f, _ = timed(lambda: search(obj, queries[2 * r]))
            s, _ = timed(lambda: search(obj, queries[2 * r + 1]))
            closer(obj)
            del obj
            gc.collect()
            opens.append(t), firsts.append(f), seconds.append(s)
        rows[name + (" [cold]" if cold else "")] = {
            "open_s": median(opens),
            "first_search_s": median(firsts),
            "second_search_s": median(seconds),
            "open_runs_s": opens,
            "cold": cold,
        }

    def mm_search(st, q):
        return st.search("clip", q, k)

    def raw_search(idx, q):
        return idx.search(q[None, :], k)

    def mm_close(st):
        st.close()

    mmap_flags = faiss.IO_FLAG_MMAP_IFC
    for cold in (False, True):
        runs = reps if not cold else max(1, min(reps, 2))
        measure(
            "faiss.read_index(IO_FLAG_MMAP_IFC)",
            lambda: faiss.read_index(str(index_file), mmap_flags),
            raw_search,
            cold,
            runs=runs,
        )
        measure(
            "mm-rag MultimodalStore.open(mmap=True)",
            lambda: MultimodalStore.open(path, mmap=True),
            mm_search,
            cold,
            mm_close,
            runs=runs,
        )
        measure("faiss.read_index (full read)", lambda: faiss.read_index(str(index_file)), raw_search, cold, runs=runs)
        if not cold:
            measure(
                "mm-rag MultimodalStore.open(mmap=False)",
                lambda: MultimodalStore.open(path, mmap=False),
                mm_search,
                cold,
                mm_close,
                runs=1,
            )
    table = []
    for name, r in rows.items():
        base = rows["faiss.read_index(IO_FLAG_MMAP_IFC)" + (" [cold]" if r["cold"] else "")]
        r["open_ratio"] = r["open_s"] / base["open_s"]
        r["open_plus_first_s"] = r["open_s"] + r["first_search_s"]
        r["open_plus_first_ratio"] = r["open_plus_first_s"] / (base["open_s"] + base["first_search_s"])
        table.append(
            [
                name,
                fmt_s(r["open_s"]),
                fmt_ratio(r["open_ratio"]),
                fmt_s(r["first_search_s"]),
                fmt_s(r["second_search_s"]),
                fmt_s(r["open_plus_first_s"]),
                fmt_ratio(r["open_plus_first_ratio"]),
            ]
        )
    size, index_size = dir_size(path), index_file.stat().st_size
    b.results[NAME] = {
        "n": n,
        "dim": dim,
        "build_s": build_s,
        "save_s": save_s,
        "size": size,
        "index_file_size": index_size,
        "rows": rows,
    }
    print_table(
        f"5. Open a {n:,} x {dim} Flat store (median of runs; [cold] = files evicted from the page cache)",
        ["how", "open", "vs faiss mmap", "first search", "second search", "open+first", "vs faiss mmap"],
        table,
        [
            f"store built with store.add in chunks of {CHUNK:,} in {fmt_s(build_s)}, saved in {fmt_s(save_s)}, "
            f"{fmt_bytes(size)} on disk (index file {fmt_bytes(index_size)})",
            "raw faiss rows read the store's own .faiss file (IndexIDMap2 over IndexFlatIP)",
            "mm-rag open: manifest, SQLite catalog, keys/vectors .npy (np.load mmap_mode='r') and the index "
            "(IO_FLAG_MMAP_IFC | IO_FLAG_READ_ONLY)",
            "[cold]: posix_fadvise(DONTNEED) on every file of the store before each run, so the first search "
            "reads the index from disk",
        ],
    )
    shutil.rmtree(path, ignore_errors=True)
