"""Uncached filtered search with and without the catalog's metadata index, beside unfiltered search.

Run from the repository root::

    .venv/bin/python benchmarks/bench_filters.py                       # 100k x 512, then 1M x 512
    .venv/bin/python benchmarks/bench_filters.py --sizes 20000 --queries 5

Each record has fields ``s1000`` (= i % 1000), ``s100``, ``s10`` and ``s2``: ``{"s1000": j}`` selects 0.1 % of
the records, ``{"s2": j}`` 50 %. Every filtered query uses a value of its field not used before where the
field has enough values, and the store's filter cache is emptied before each one, so every query pays for
finding its matching keys: the case of per-user or per-tenant filters. "before" runs the same store with
filters compiled to the JSON scan (`compile_filter(indexed=False)`, the code path the index replaced), "after"
with the index; both are timed in the same run, interleaved query by query, beside the unfiltered search.
Recall@k is against brute force over the matching vectors. Results go to ``benchmarks/results/filters.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mm_rag import MultimodalStore, Record
from mm_rag.filters import compile_filter
from mm_rag.store import searching
from mm_rag.store.planner import plan_filter

FIELDS = {0.001: "s1000", 0.01: "s100", 0.1: "s10", 0.5: "s2"}


def records(lo: int, hi: int) -> list[Record]:
    def metadata(i: int) -> dict[str, Any]:
        return {"s1000": i % 1000, "s100": i % 100, "s10": i % 10, "s2": i % 2, "tag": ("news", "blog", "paper")[i % 3]}

    return [Record(f"doc-{i:08d}", "text", text=f"Record {i}", metadata=metadata(i)) for i in range(lo, hi)]


def build(path: Path, n: int, dim: int, rng: np.random.Generator) -> tuple[MultimodalStore, np.ndarray, float]:
    store = MultimodalStore(path)
    store.create_space("v", dim, index="Flat")
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    add = 0.0
    for lo in range(0, n, 100_000):
        batch = records(lo, min(n, lo + 100_000))
        start = time.perf_counter()
        store.add(batch, {"v": x[lo : lo + len(batch)]})
        add += time.perf_counter() - start
    store.save()
    return store, x, add


def keys_as_compiled(indexed: bool) -> Any:
    """A planner that looks up the keys with the filter compiled as written (to the index or the JSON scan)."""

    def plan(filter: Any, count: Any) -> tuple[str, list[Any]]:
        condition, params = compile_filter(filter, indexed=indexed)
        return f"SELECT r.key FROM records AS r WHERE {condition}", params

    return plan


def search(store: MultimodalStore, q: np.ndarray, k: int, f: dict | None, indexed: bool) -> tuple[float, list]:
    # This benchmark compares finding the keys through the index with the JSON scan: always keys first.
    searching.plan_filter = keys_as_compiled(indexed)
    searching.CANDIDATES_FIRST_SHARE = searching.CANDIDATES_FIRST_SHARE_FROM_INDEX = math.inf
    store._matching.clear()
    gc.collect()
    start = time.perf_counter()
    hits = store.search("v", q, k, filter=f)
    return time.perf_counter() - start, hits


def run_size(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    shares = searching.CANDIDATES_FIRST_SHARE, searching.CANDIDATES_FIRST_SHARE_FROM_INDEX
    rng = np.random.default_rng(args.seed)
    store, x, add_s = build(work / f"store-{n}", n, args.dim, rng)
    queries = x[rng.choice(n, args.queries, replace=False)]
    out: dict[str, Any] = {"n": n, "dim": args.dim, "add_s": add_s, "selectivities": {}}
    print(f"\n== n={n:,} x {args.dim} (add {add_s:.2f} s), k={args.k}, {args.queries} queries, median")
    print(f"{'selectivity':>12} {'unfiltered':>11} {'before':>9} {'after':>9} {'after/unf':>9} {'before/unf':>10}"
          f" {'speed-up':>8} {'recall':>6}")  # fmt: skip
    for sel, field in FIELDS.items():
        values = round(1 / sel)
        times: dict[str, list[float]] = {"unfiltered": [], "before": [], "after": []}
        recalls = []
        for i, q in enumerate(queries):
            value = (i * 7 + 1) % values  # a different value per query where the field has enough of them
            f = {field: value}
            times["unfiltered"].append(search(store, q, args.k, None, True)[0])
            order = ("before", "after") if i % 2 else ("after", "before")  # neither always runs warm second
            for name in order:
                elapsed, hits = search(store, q, args.k, f, name == "after")
                times[name].append(elapsed)
                if name == "after":
                    rows = np.nonzero(np.arange(n) % values == value)[0]
                    truth = set(rows[np.argsort(-(x[rows] @ q))[: args.k]].tolist())
                    recalls.append(len(truth & {int(h.record.id[4:]) for h in hits}) / len(truth))
        med = {name: statistics.median(t) for name, t in times.items()}
        entry = {**{f"{name}_median_s": v for name, v in med.items()}, "recall": float(np.mean(recalls))}
        entry["after_vs_unfiltered"] = med["after"] / med["unfiltered"]
        entry["before_vs_unfiltered"] = med["before"] / med["unfiltered"]
        out["selectivities"][f"{sel:.1%}"] = entry
        print(f"{sel:>12.1%} {med['unfiltered'] * 1e3:>8.1f} ms {med['before'] * 1e3:>6.1f} ms"
              f" {med['after'] * 1e3:>6.1f} ms {entry['after_vs_unfiltered']:>8.2f}x"
              f" {entry['before_vs_unfiltered']:>9.2f}x {med['before'] / med['after']:>7.1f}x"
              f" {entry['recall']:>6.3f}")  # fmt: skip
        sys.stdout.flush()
    searching.plan_filter = plan_filter
    searching.CANDIDATES_FIRST_SHARE, searching.CANDIDATES_FIRST_SHARE_FROM_INDEX = shares
    store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "filters.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mm-rag-bench-filters-"))
    try:
        results = [run_size(n, args, work) for n in args.sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": results}, indent=2))
    print(f"\nresults written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
