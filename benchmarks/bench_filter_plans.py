"""Filters of several shapes, planned by cost against compiled as written, beside the unfiltered search.

Run from the repository root::

    .venv/bin/python benchmarks/bench_filter_plans.py                    # 100k x 512, then 1M x 512
    .venv/bin/python benchmarks/bench_filter_plans.py --sizes 20000 --queries 5

Each record has ``a{n}`` = i % n for n in 2000, 1000, 200, 100, 20, 10 (``{"a1000": j}`` selects 0.1 %),
``tag`` (one of 7) and ``year`` (35 values). Shapes, each at a final selectivity of 0.1, 1 and 10 %:

- single: ``{"a1000": j}``;
- selective and broad: ``{"a1000": j, "tag": {"$in": every tag}}``;
- selective and range: ``{"a1000": j, "year": {"$gte": 1990}}`` (every year);
- or of two: ``{"$or": [{"a2000": j}, {"a2000": j + 1}]}``;
- nested: ``{"$and": [{"year": {"$gte": 1990}}, {"$or": [{"a1000": j}, {"tag": "none"}]}]}``.

Every query uses a value of its field not used before, and the store's filter cache is emptied before each, so
each pays for finding its keys (per-user or per-tenant filters). Three versions run on the same store,
interleaved query by query with the unfiltered search (each going first in turn), on a Flat index, k=10:
"unplanned" finds the keys with `compile_filter` as written (the code before planning), "keys first" with the
planner but always collecting the keys (the planner alone), "planned" as the store runs (broad filters rank
candidates first, `mm_rag.store.searching`). Recall@10 against brute force over the matching vectors.
Results go to ``benchmarks/results/filter_plans.json``.
"""

from __future__ import annotations

import argparse
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

from benchmarks.before_after import write_results
from mm_rag import MultimodalStore, Record
from mm_rag.filters import compile_filter
from mm_rag.store import searching

DIM = 512
MODULI = (2000, 1000, 200, 100, 20, 10)
TAGS = [f"t{i}" for i in range(7)]
SELECTIVITY = {"0.1%": 1000, "1%": 100, "10%": 10}  # the field that selects it (twice as fine for "or of two")


def shapes(modulus: int, value: int) -> dict[str, dict[str, Any]]:
    field, finer = f"a{modulus}", f"a{modulus * 2}"
    return {
        "single": {field: value},
        "selective and broad": {field: value, "tag": {"$in": TAGS}},
        "selective and range": {field: value, "year": {"$gte": 1990}},
        "or of two": {"$or": [{finer: 2 * value}, {finer: 2 * value + 1}]},
        "nested": {"$and": [{"year": {"$gte": 1990}}, {"$or": [{field: value}, {"tag": "none"}]}]},
    }


def build(path: Path, count: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((count, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with MultimodalStore(path) as store:
        store.create_space("v", DIM, index="Flat")
        for start in range(0, count, 100_000):
            stop = min(count, start + 100_000)
            records = [
                Record(
                    f"r{i}",
                    "text",
                    metadata={**{f"a{n}": i % n for n in MODULI}, "tag": TAGS[i % 7], "year": 1990 + i % 35},
                )
                for i in range(start, stop)
            ]
            store.add(records, {"v": vectors[start:stop]})
        store.save()
    return vectors


def recall(hits: list, vectors: np.ndarray, query: np.ndarray, matching: np.ndarray, k: int) -> float:
    if not len(matching):
        return 1.0
    scores = vectors[matching] @ query
    truth = set(matching[np.argsort(-scores, kind="stable")[:k]].tolist())
    return len(truth & {int(hit.record.id[1:]) for hit in hits}) / len(truth)


def measure(count: int, queries: int, work: Path) -> dict[str, Any]:
    path = work / f"store-{count}"
    vectors = build(path, count)
    probes = np.random.default_rng(1).standard_normal((queries, DIM)).astype(np.float32)
    planned = searching.plan_filter

    def unplanned(filter: Any, count: Any) -> tuple[str, list[Any]]:  # the code before planning
        condition, params = compile_filter(filter)
        return f"SELECT r.key FROM records AS r WHERE {condition}", params

    versions = {  # (how the keys are found, the shares from which candidates are ranked first)
        "unplanned": (unplanned, (math.inf, math.inf)),
        "keys first": (planned, (math.inf, math.inf)),
        "planned": (planned, (searching.CANDIDATES_FIRST_SHARE, searching.CANDIDATES_FIRST_SHARE_FROM_INDEX)),
    }
    rows: dict[str, Any] = {}
    with MultimodalStore.open(path, mmap=False) as store:
        store.search("v", probes[0], k=10)
        unfiltered = []
        for label, modulus in SELECTIVITY.items():
            for shape in shapes(modulus, 0):
                times: dict[str, list[float]] = {version: [] for version in versions}
                recalls, found = [], []
                for number, probe in enumerate(probes):
                    started = time.perf_counter()
                    store.search("v", probe, k=10)
                    unfiltered.append(time.perf_counter() - started)
                    order = list(versions)
                    order = order[number % len(order) :] + order[: number % len(order)]  # each goes first in turn
                    for version in order:
                        value = (number * len(order) + list(versions).index(version)) % modulus  # not used before
                        filter = shapes(modulus, value)[shape]
                        plan, shares = versions[version]
                        searching.plan_filter = plan
                        searching.CANDIDATES_FIRST_SHARE, searching.CANDIDATES_FIRST_SHARE_FROM_INDEX = shares
                        store._matching.clear()
                        started = time.perf_counter()
                        hits = store.search("v", probe, k=10, filter=filter)
                        times[version].append(time.perf_counter() - started)
                        found.append((probe, filter, hits))
                for probe, filter, hits in found:  # outside the timed loop: its garbage is not theirs
                    matching = np.array([int(r.id[1:]) for r in store.find(filter)], dtype=np.int64)
                    recalls.append(recall(hits, vectors, probe, matching, 10))
                searching.plan_filter = planned
                searching.CANDIDATES_FIRST_SHARE, searching.CANDIDATES_FIRST_SHARE_FROM_INDEX = versions["planned"][1]
                rows[f"{shape} @ {label}"] = {
                    **{f"{version}_ms": statistics.median(times[version]) * 1e3 for version in versions},
                    "recall": min(recalls),
                }
                print(
                    f"{count:>8} {shape:20s} {label:5s} "
                    + "  ".join(f"{version} {statistics.median(times[version]) * 1e3:7.2f} ms" for version in versions),
                    flush=True,
                )
    shutil.rmtree(path)
    unfiltered_ms = statistics.median(unfiltered) * 1e3
    for row in rows.values():
        for version in versions:
            row[f"{version}_vs_unfiltered"] = row[f"{version}_ms"] / unfiltered_ms
    return {"unfiltered_ms": unfiltered_ms, "shapes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-filter-plans-"))
    results = {}
    try:
        for count in map(int, args.sizes.split(",")):
            results[str(count)] = measure(count, args.queries, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_results(ROOT / "benchmarks" / "results" / "filter_plans.json", {"queries": args.queries, "sizes": results})
    print(
        "\n| n | shape @ selectivity | unfiltered | unplanned | keys first | planned | planned / unfiltered | recall@10 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for count, result in results.items():
        for name, row in result["shapes"].items():
            print(
                f"| {int(count):,} | {name} | {result['unfiltered_ms']:.1f} ms | {row['unplanned_ms']:.2f} ms"
                f" | {row['keys first_ms']:.2f} ms | {row['planned_ms']:.2f} ms | {row['planned_vs_unfiltered']:.3f}x"
                f" | {row['recall']:.3f} |"
            )


if __name__ == "__main__":
    main()
