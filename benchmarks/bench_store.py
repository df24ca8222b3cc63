"""Benchmark the mm-rag store against raw Faiss, LangChain community FAISS and LlamaIndex FaissVectorStore.

Run from the repository root (needs the ``bench`` extra: langchain-community, langchain-core, llama-index-core,
llama-index-vector-stores-faiss)::

    .venv/bin/python benchmarks/bench_store.py                 # 100k x 512, then the 1M x 512 mmap section
    .venv/bin/python benchmarks/bench_store.py --quick         # 20k vectors, fewer queries, no 1M section
    .venv/bin/python benchmarks/bench_store.py --n 50000 --no-mmap-1m

Every figure is printed as an absolute value and as a ratio against a baseline measured in the same run
(raw Faiss unless a table says otherwise). Results also go to ``benchmarks/results/store.json``.
See ``benchmarks/README.md`` for what each figure measures and the measured numbers. The sections live in
``benchmarks/storebench/``, one module each.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=".*langchain-community.*")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import faiss
from storebench import add, filtered, mmap_1m, persist, query
from storebench.common import Bench, fmt_bytes, json_default, print_table
from storebench.targets import check_targets


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="vectors (default 100000; 20000 with --quick)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--quick", action="store_true", help="small and fast: 20k vectors, 50 queries, 1 repeat, no 1M section"
    )
    parser.add_argument("--queries", type=int, default=None, help="queries for latency/recall (default 200)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per timing, median taken (default 3)")
    parser.add_argument("--uncached", type=int, default=None, help="never-seen filters timed per selectivity (7)")
    parser.add_argument(
        "--mmap-1m",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the 1M x dim memory-mapped open section (default: on unless --quick)",
    )
    parser.add_argument("--mmap-n", type=int, default=1_000_000, help="size of the mmap section's store")
    parser.add_argument("--only-mmap-1m", action="store_true", help="run only the 1M section")
    parser.add_argument("--only-add", action="store_true", help="run only section 1 (add throughput)")
    parser.add_argument("--skip-hnsw", action="store_true", help="no HNSW32 latency rows (saves the HNSW builds)")
    parser.add_argument(
        "--threads", type=int, default=None, help="Faiss OpenMP threads (default: Faiss's own choice, one per core)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the stores are written (default: system temp)")
    parser.add_argument(
        "--out",
        default=None,
        help="JSON results file (default benchmarks/results/store.json, store-quick.json with --quick)",
    )
    args = parser.parse_args(argv)
    args.n = args.n or (20_000 if args.quick else 100_000)
    args.queries = args.queries or (50 if args.quick else 200)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.uncached = args.uncached or (3 if args.quick else 7)
    if args.mmap_1m is None:
        args.mmap_1m = not args.quick
    default_out = ROOT / "benchmarks" / "results" / ("store-quick.json" if args.quick else "store.json")
    args.out = Path(args.out) if args.out else default_out
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    bench = Bench(args)
    info = bench.results["machine"]
    print(
        f"mm-rag store benchmark  {info['date']}  {info['cpu']}, {info['cores']} cores, "
        f"{fmt_bytes(info['memory_bytes'] or 0)} RAM, faiss {info['versions']['faiss']} "
        f"({info['faiss_omp_threads']} OpenMP threads)"
    )
    print(f"n={args.n:,} dim={args.dim} k={args.k} queries={args.queries} repeats={args.repeats}")
    load = bench.results["load_average"] = {"start": os.getloadavg()}
    sections = [] if args.only_mmap_1m else [add] if args.only_add else [add, query, filtered, persist]
    if args.only_add:
        args.mmap_1m = False
    try:
        for section in sections:
            section.run(bench)
            load[section.NAME] = os.getloadavg()
        bench.raw_flat = bench.x = None  # free the 100k section's memory before the 1M store is built
        gc.collect()
        if args.mmap_1m or args.only_mmap_1m:
            mmap_1m.run(bench)
            load[mmap_1m.NAME] = os.getloadavg()
    finally:
        bench.close()
    targets = bench.results["targets"] = check_targets(bench.results)
    if targets:
        print_table(
            "Targets",
            ["target", "measured", "met"],
            [[t["target"], t["measured"], "met" if t["met"] else "NOT met"] for t in targets],
        )
    print(
        "\nload average (1 min) after each section: "
        + ", ".join(f"{name} {value[0]:.2f}" for name, value in load.items())
        + f"  ({os.cpu_count()} cores; other processes on the machine inflate the timings)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(bench.results, indent=2, default=json_default))
    print(f"\nresults written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
