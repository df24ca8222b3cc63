"""Section 3: filtered search at 0.1 / 1 / 10 / 50 % selectivity on the Flat store, against raw Faiss with a
bitmap selector and LangChain's post-filter."""

# The timed lambdas close over loop variables; each is called at once, inside its iteration. Notes are lists
# of implicitly concatenated long strings.
# ruff: noqa: B023, ISC004

from __future__ import annotations

import gc
import time
from typing import Any

import faiss
import numpy as np

from .common import BUCKETS, SELECTIVITIES, Bench, exact_topk, fmt_ratio, fmt_s, median, p99, print_table

NAME = "filter"  # the section's key in the results


def bitmap_selector(rows: np.ndarray, n: int) -> tuple[Any, np.ndarray]:
    """A Faiss selector for `rows`, and the bitmap it points into (keep it alive while the selector is used)."""
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    bitmap = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)), bitmap


def selectivity(b: Bench, sel: float) -> dict[str, Any]:
    """Every system at one selectivity: filters {"bucket": {"$gte": j, "$lt": j + width}}."""
    k, x, queries = b.k, b.x, b.queries
    store, lc, raw = b.mm_store, b.lc_store, b.raw_flat
    width = max(1, round(sel * BUCKETS))

    def window(j: int) -> dict[str, Any]:
        return {"bucket": {"$gte": j, "$lt": j + width}}

    def rows_of(j: int) -> np.ndarray:
        return np.nonzero((b.buckets >= j) & (b.buckets < j + width))[0]

    matching = rows_of(0)
    truth = exact_topk(x, matching, queries, k)

    def recall(found: list[set[int]], truth_sets: list[set[int]]) -> float:
        return float(np.mean([len(f & t) / min(k, len(matching)) for f, t in zip(found, truth_sets)]))

    # mm-rag, first query of a filter (nothing cached for it): windows [j, j+width) with j = 1..U
    first_t, first_found, first_truth = [], [], []
    for j in range(1, b.args.uncached + 1):
        q = queries[j % len(queries)]
        gc.collect()
        start = time.perf_counter()
        hits = store.search("clip", q, k, filter=window(j))
        first_t.append(time.perf_counter() - start)
        first_found.append({b.row_of_id[h.record.id] for h in hits})
        first_truth.append(exact_topk(x, rows_of(j), q[None, :], k)[0])
    # the same filter again and again (mm-rag: matching key set cached); the four systems interleaved
    store.search("clip", queries[0], k, filter=window(0))
    selector, bitmap = bitmap_selector(matching, b.n)
    params = faiss.SearchParameters(sel=selector)
    flt = window(0)
    timings: dict[str, list[float]] = {"raw": [], "mm": [], 20: [], 100: []}
    mm_found: list[set[int]] = []
    lc_found: dict[int, list[set[int]]] = {20: [], 100: []}
    lc_counts: dict[int, list[int]] = {20: [], 100: []}
    gc.collect()
    for i, q in enumerate(queries):
        qv = q.tolist()
        calls = [
            ("raw", lambda: raw.search(q[None, :], k, params=params)),
            ("mm", lambda: store.search("clip", q, k, filter=flt)),
            (20, lambda: lc.similarity_search_with_score_by_vector(qv, k=k, filter=flt, fetch_k=20)),
            (100, lambda: lc.similarity_search_with_score_by_vector(qv, k=k, filter=flt, fetch_k=100)),
        ]
        shift = i % len(calls)
        for name, call in calls[shift:] + calls[:shift]:
            start = time.perf_counter()
            result = call()
            timings[name].append(time.perf_counter() - start)
            if name == "mm":
                mm_found.append({b.row_of_id[h.record.id] for h in result})
            elif name != "raw":
                lc_found[name].append({b.row_of_id[d.id] for d, _ in result})
                lc_counts[name].append(len(result))
    del bitmap
    raw_t, mm_t = timings["raw"], timings["mm"]
    lc_rows = {
        fk: {
            "median_s": median(timings[fk]),
            "p99_s": p99(timings[fk]),
            "recall": recall(lc_found[fk], truth),
            "avg_hits": float(np.mean(lc_counts[fk])),
        }
        for fk in (20, 100)
    }
    return {
        "selectivity": sel,
        "matching": len(matching),
        "filter": window(0),
        "raw_bitmap_median_s": median(raw_t),
        "mm_first_median_s": median(first_t),
        "mm_first_runs_s": first_t,
        "mm_first_recall": recall(first_found, first_truth),
        "mm_cached_median_s": median(mm_t),
        "mm_cached_p99_s": p99(mm_t),
        "mm_recall": recall(mm_found, truth),
        "mm_avg_hits": float(np.mean([len(f) for f in mm_found])),
        "langchain": {str(fk): v for fk, v in lc_rows.items()},
    }


def run(b: Bench) -> None:
    k = b.k
    out = {}
    table = []
    for sel in SELECTIVITIES:
        entry = out[f"{sel:.3%}"] = selectivity(b, sel)
        base = entry["raw_bitmap_median_s"]
        label = f"{sel * 100:g} % ({entry['matching']:,})"
        table.append([label, "raw faiss + IDSelectorBitmap", fmt_s(base), "1.00x", "1.000", f"{k:.1f}"])
        table.append(
            [
                label,
                "mm-rag, first query (uncached)",
                fmt_s(entry["mm_first_median_s"]),
                fmt_ratio(entry["mm_first_median_s"] / base),
                f"{entry['mm_first_recall']:.3f}",
                "-",
            ]
        )
        table.append(
            [
                label,
                "mm-rag, repeated filter (cached)",
                fmt_s(entry["mm_cached_median_s"]),
                fmt_ratio(entry["mm_cached_median_s"] / base),
                f"{entry['mm_recall']:.3f}",
                f"{entry['mm_avg_hits']:.1f}",
            ]
        )
        for fk, v in entry["langchain"].items():
            table.append(
                [
                    label,
                    f"LangChain post-filter fetch_k={fk}",
                    fmt_s(v["median_s"]),
                    fmt_ratio(v["median_s"] / base),
                    f"{v['recall']:.3f}",
                    f"{v['avg_hits']:.1f}",
                ]
            )
    b.results[NAME] = out
    print_table(
        f"3. Filtered search, n={b.n:,}, k={k}, filter {{'bucket': {{'$gte': j, '$lt': j + w}}}}",
        ["selectivity (matches)", "system", "median latency", "vs raw+bitmap", f"recall@{k}", "avg hits"],
        table,
        [
            f"recall@{k}: share of the exact top-{k} among the matching vectors (brute force) that came back",
            "baseline: raw faiss IndexFlatIP with a precomputed IDSelectorBitmap of the matching rows "
            "(the floor for an exact pre-filter; computing the bitmap is not timed)",
            f"mm-rag first query: median over {b.args.uncached} filters never seen before (SQL over the "
            "catalog + search); cached: the same filter repeated, matching keys reused",
            "LangChain: similarity_search_with_score_by_vector(filter=..., fetch_k=...) fetches fetch_k "
            "nearest then drops non-matching ones, so it returns fewer than k hits",
        ],
    )
