"""Section 4: save and load (files in the OS page cache), against raw Faiss and LangChain's pickle format.
Closes section 1's mm-rag store and drops its LangChain store."""

# The timed lambdas close over loop variables and over names deleted afterwards to free memory; each is called
# at once, inside its iteration, before any `del`. Notes are lists of implicitly concatenated long strings.
# ruff: noqa: B023, F821, ISC004

from __future__ import annotations

import gc
import shutil
from typing import Any

import faiss

from mm_rag import MultimodalStore

from .common import Bench, dir_size, fmt_bytes, fmt_ratio, fmt_s, median, print_table, timed

NAME = "persist"  # the section's key in the results


def run(b: Bench) -> None:
    k, reps, dim = b.k, b.repeats, b.dim
    path, q = b.mm_path, b.queries[0]
    b.mm_store.close()
    b.mm_store = None
    gc.collect()
    rows: dict[str, dict[str, Any]] = {}

    # raw faiss baseline
    raw_file = b.work / "raw.faiss"
    w = [timed(lambda: faiss.write_index(b.raw_flat, str(raw_file)))[0] for _ in range(reps)]
    r_load, r_first = [], []
    for _ in range(reps):
        t, idx = timed(lambda: faiss.read_index(str(raw_file)))
        f, _ = timed(lambda: idx.search(q[None, :], k))
        r_load.append(t), r_first.append(f)
        del idx
    rows["raw faiss write_index / read_index"] = {
        "save_s": median(w),
        "load_s": median(r_load),
        "first_search_s": median(r_first),
        "size": raw_file.stat().st_size,
    }

    # mm-rag
    sizes = {
        "catalog": sum(f.stat().st_size for f in path.glob("catalog.sqlite*")),
        "vectors.npy": sum(f.stat().st_size for f in (path / "spaces").glob("*.vectors.npy")),
        "keys.npy": sum(f.stat().st_size for f in (path / "spaces").glob("*.keys.npy")),
        "faiss": sum(f.stat().st_size for f in (path / "spaces").glob("*.faiss")),
    }
    for label, mmap in (("default", None), ("mmap=True", True), ("mmap=False", False)):
        loads, firsts, mapped = [], [], None
        for _ in range(reps):
            t, st = timed(lambda: MultimodalStore.open(path, mmap=mmap))
            f, _ = timed(lambda: st.search("clip", q, k))
            mapped = st.info()["spaces"]["clip"]["memory_mapped"]
            st.close()
            loads.append(t), firsts.append(f)
            del st
        rows[f"mm-rag save() / open({label})"] = {
            "save_s": median(b.mm_save_times),
            "load_s": median(loads),
            "first_search_s": median(firsts),
            "size": dir_size(path),
            "memory_mapped": mapped,
            "files": sizes,
        }

    # LangChain
    from langchain_community.vectorstores import FAISS
    from langchain_core.embeddings import FakeEmbeddings

    lc_dir = b.work / "langchain"
    saves = []
    for _ in range(reps):
        shutil.rmtree(lc_dir, ignore_errors=True)
        saves.append(timed(lambda: b.lc_store.save_local(str(lc_dir)))[0])
    lc_sizes = {f.name: f.stat().st_size for f in lc_dir.iterdir()}
    b.lc_store = None
    gc.collect()
    for label, flags in (("", 0), (" (io_flags=MMAP)", faiss.IO_FLAG_MMAP_IFC)):
        loads, firsts = [], []
        for _ in range(reps):
            t, st = timed(
                lambda: FAISS.load_local(
                    str(lc_dir), FakeEmbeddings(size=dim), allow_dangerous_deserialization=True, io_flags=flags
                )
            )
            f, _ = timed(lambda: st.similarity_search_with_score_by_vector(q.tolist(), k=k))
            loads.append(t), firsts.append(f)
            del st
            gc.collect()
        rows[f"LangChain save_local / load_local{label}"] = {
            "save_s": median(saves),
            "load_s": median(loads),
            "first_search_s": median(firsts),
            "size": dir_size(lc_dir),
            "files": lc_sizes,
        }

    base = rows["raw faiss write_index / read_index"]
    table = []
    for name, r in rows.items():
        r["save_ratio"] = r["save_s"] / base["save_s"]
        r["load_ratio"] = r["load_s"] / base["load_s"]
        r["size_ratio"] = r["size"] / base["size"]
        table.append(
            [
                name,
                fmt_s(r["save_s"]),
                fmt_ratio(r["save_ratio"]),
                fmt_s(r["load_s"]),
                fmt_ratio(r["load_ratio"]),
                fmt_s(r["first_search_s"]),
                fmt_s(r["load_s"] + r["first_search_s"]),
                fmt_bytes(r["size"]),
                fmt_ratio(r["size_ratio"]),
            ]
        )
    b.results[NAME] = rows
    mm_default = rows["mm-rag save() / open(default)"]
    print_table(
        f"4. Save and load, n={b.n:,} x {dim} (median of {reps}; files in the OS page cache)",
        ["system", "save", "vs raw", "load/open", "vs raw", "first search", "open+search", "size", "vs raw"],
        table,
        [
            "mm-rag save(): SQLite COMMIT of the added rows (synchronous=FULL) + keys/vectors .npy + .faiss, "
            "each fsynced, manifest, WAL checkpoint; the other systems do not fsync",
            f"mm-rag open(default) picks mmap for files >= 256 MiB: here memory_mapped="
            f"{mm_default['memory_mapped']}; files: "
            + ", ".join(f"{key} {fmt_bytes(v)}" for key, v in mm_default["files"].items()),
            "LangChain load_local needs allow_dangerous_deserialization=True: its docstore is a pickle, and "
            "loading a pickle can run arbitrary code. mm-rag stores JSON in SQLite + .npy "
            "(allow_pickle=False) + .faiss: opening a store never executes code",
            "LangChain files: " + ", ".join(f"{key} {fmt_bytes(v)}" for key, v in lc_sizes.items()),
        ],
    )
