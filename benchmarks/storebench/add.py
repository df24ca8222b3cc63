"""Section 1: add throughput. Builds the stores that sections 2-4 reuse (see `Bench`)."""

# The timed lambdas close over loop variables and over names deleted afterwards to free memory; each is called
# at once, inside its iteration, before any `del`.
# ruff: noqa: B023, F821

from __future__ import annotations

import gc
import shutil
from typing import Any

import faiss

from mm_rag import MultimodalStore

from .common import (
    Bench,
    fmt_rate,
    fmt_ratio,
    fmt_s,
    langchain_store,
    make_records,
    median,
    print_table,
    record_id,
    record_meta,
    record_text,
    timed,
)

NAME = "add"  # the section's key in the results


def run(b: Bench) -> None:
    n, dim, x, reps = b.n, b.dim, b.x, b.repeats
    texts = [record_text(i) for i in range(n)]
    metas = [record_meta(i) for i in range(n)]
    ids = [record_id(i) for i in range(n)]
    rows: dict[str, dict[str, Any]] = {}

    def row(name: str, includes: str, add: list[float], build: list[float] | None = None, **extra: Any):
        rows[name] = {
            "includes": includes,
            "add_s": median(add),
            "add_runs_s": add,
            "build_s": median(build) if build else None,
            **extra,
        }

    from llama_index.core.schema import TextNode
    from llama_index.core.storage.docstore import SimpleDocumentStore
    from llama_index.vector_stores.faiss import FaissVectorStore

    t: dict[str, list[float]] = {
        name: [] for name in ("raw", "mm", "mm_build", "mm_save", "lc_np", "lc_list", "conv", "li_build", "li", "li_ds")
    }
    # Round robin: every repeat runs every system once, so load from other processes hits all of them alike.
    # The list[float] inputs exist only while the systems that take them run (they slow the garbage
    # collector down for everything else).
    for r in range(reps):
        index = faiss.IndexFlatIP(dim)
        t["raw"].append(timed(lambda: index.add(x))[0])
        b.raw_flat = index

        build, records = timed(lambda: make_records(0, n))
        path = b.work / f"mm-add-{r}"
        store = MultimodalStore(path)
        store.create_space("clip", dim, metric="cosine", index="Flat")
        t["mm"].append(timed(lambda: store.add(records, {"clip": x}))[0])
        t["mm_save"].append(timed(store.save)[0])
        t["mm_build"].append(build)
        del records
        if r < reps - 1:
            store.close()
            shutil.rmtree(path)
        else:
            b.mm_store, b.mm_path = store, path

        lc = langchain_store(dim)
        pairs = list(zip(texts, x))
        t["lc_np"].append(timed(lambda: lc.add_embeddings(pairs, metadatas=metas, ids=ids))[0])
        b.lc_store = lc
        del pairs, lc

        conv, as_lists = timed(lambda: x.tolist())
        t["conv"].append(conv)
        lc2 = langchain_store(dim)
        pairs = list(zip(texts, as_lists))
        t["lc_list"].append(timed(lambda: lc2.add_embeddings(pairs, metadatas=metas, ids=ids))[0])
        del pairs, lc2

        build, nodes = timed(
            lambda: [TextNode(id_=ids[i], text=texts[i], metadata=metas[i], embedding=as_lists[i]) for i in range(n)]
        )
        t["li_build"].append(build)
        vs = FaissVectorStore(faiss_index=faiss.IndexFlatIP(dim))
        t["li"].append(timed(lambda: vs.add(nodes))[0])
        vs = FaissVectorStore(faiss_index=faiss.IndexFlatIP(dim))
        ds = SimpleDocumentStore()

        def both():
            vs.add(nodes)
            ds.add_documents(nodes)  # what VectorStoreIndex does for a store with stores_text=False

        t["li_ds"].append(timed(both)[0])
        del vs, ds, both, nodes, as_lists
        gc.collect()

    b.mm_save_times = t["mm_save"]
    conv = median(t["conv"])
    b.results["list_conversion_s"] = conv
    row("raw faiss IndexFlatIP.add", "memcpy of the (n, d) float32 array into the index; no ids, no text", t["raw"])
    row(
        "mm-rag store.add",
        "validation, L2-normalisation, ids, SQLite catalog insert (text+metadata), "
        "exact-vector table, Faiss IndexIDMap2(Flat).add_with_ids; commit is at save()",
        t["mm"],
        t["mm_build"],
        build_includes="Record objects",
    )
    row(
        "LangChain FAISS.add_embeddings (numpy rows)",
        "Document construction, np.array stacking, IndexFlatIP.add, in-memory docstore dict",
        t["lc_np"],
    )
    row(
        "LangChain FAISS.add_embeddings (list[float])",
        "as above plus list[float] -> float32 conversion (documented input type)",
        t["lc_list"],
        input_conversion_s=conv,
    )
    row(
        "LlamaIndex FaissVectorStore.add",
        "one np.array + index.add per node; stores NO text/metadata (stores_text=False)",
        t["li"],
        t["li_build"],
        build_includes="TextNode objects with embedding lists",
    )
    row(
        "LlamaIndex FaissVectorStore.add + SimpleDocumentStore",
        "as above plus the docstore that keeps text+metadata (what VectorStoreIndex adds)",
        t["li_ds"],
        t["li_build"],
        build_includes="TextNode objects with embedding lists",
    )

    base = rows["raw faiss IndexFlatIP.add"]["add_s"]
    mm = rows["mm-rag store.add"]["add_s"]
    mm_total = mm + rows["mm-rag store.add"]["build_s"]
    table = []
    for name, r in rows.items():
        r["vectors_per_s"] = n / r["add_s"]
        r["ratio_vs_raw_faiss"] = r["vectors_per_s"] / (n / base)
        r["mm_rag_speedup"] = r["add_s"] / mm
        total = r["add_s"] + (r["build_s"] or 0.0)
        r["with_build_s"] = total
        r["mm_rag_speedup_with_build"] = total / mm_total
        table.append(
            [
                name,
                fmt_s(r["add_s"]),
                fmt_rate(r["vectors_per_s"]),
                fmt_ratio(r["ratio_vs_raw_faiss"]),
                fmt_ratio(r["mm_rag_speedup"]),
                fmt_s(r["build_s"]),
                fmt_ratio(r["mm_rag_speedup_with_build"]) if r["build_s"] or name.startswith("mm") else "-",
            ]
        )
    b.results[NAME] = rows
    notes = [f"{name}: {r['includes']}" for name, r in rows.items()]
    notes.append(f"x.tolist() to make the list[float] inputs took {fmt_s(conv)} (not included anywhere)")
    notes.append(
        "object build = constructing Record / TextNode objects (timed separately, median); "
        "speed-up incl. build compares (build + add) totals"
    )
    print_table(
        f"1. Add throughput, n={n:,} x {dim} (median of {reps})",
        ["system", "add", "vectors/s", "vs raw faiss", "mm-rag speed-up", "object build", "speed-up incl. build"],
        table,
        notes,
    )
