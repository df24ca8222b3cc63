"""Benchmark `mm_rag.indexbuild.build_store` against building the same Faiss index fully in memory.

Run from the repository root::

    .venv/bin/python benchmarks/bench_build.py              # 2M x 512, OPQ64,IVF4096,PQ64 (~15-20 min, ~20 GB disk)
    .venv/bin/python benchmarks/bench_build.py --quick      # 200k x 512, OPQ64,IVF1024,PQ64 (< 2 min)

Phases, each in a fresh child process so that its peak RSS (``ru_maxrss``) is its own:

1. ``shards``: synthetic clustered, normalised vectors written as embedding shards, one shard at a time;
   held-out queries drawn around the same centres (never stored).
2. ``build``: `build_store` from the shards (catalog, exact vectors, training, on-disk IVF lists, recall).
3. ``query``: the store opened memory-mapped in a new process: the first query (cold-ish: nothing of the
   index touched yet in this process), then single-query latency p50/p99, and recall@10 against exact search
   chunked over the memory-mapped vectors (the ground truth is saved for phase 4).
4. ``baseline``: the usual way: every vector loaded into RAM, the same factory string trained on as many
   points, ``index.add`` of everything; its time, RSS and recall in the same run.

Figures go to stdout and to ``benchmarks/results/build.json`` (``build-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np

K = 10
NOISE = 0.03


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200k vectors, IVF1024, 80k training points")
    parser.add_argument("--n", type=int, default=None, help="vectors (default 2,000,000; 200,000 with --quick)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--shard-size", type=int, default=None, help="vectors per shard (default n/8)")
    parser.add_argument("--index", default=None, help="factory string (default OPQ64,IVF4096,PQ64; IVF1024 quick)")
    parser.add_argument("--train-size", type=int, default=None, help="training points (default build_store's)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--workdir", default=None, help="where shards and stores go (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the shards and store afterwards")
    parser.add_argument("--out", default=None)
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.n = args.n or (200_000 if args.quick else 2_000_000)
    args.shard_size = args.shard_size or max(1, args.n // 8)
    args.index = args.index or ("OPQ64,IVF1024,PQ64" if args.quick else "OPQ64,IVF4096,PQ64")
    if args.quick and args.train_size is None:
        args.train_size = 80_000
    args.out = (
        Path(args.out)
        if args.out
        else ROOT / "benchmarks" / "results" / ("build-quick.json" if args.quick else "build.json")
    )
    return args


def peak_rss() -> dict[str, int]:
    """Peak resident set size of this process and of its waited-for children, in bytes (Linux: KiB units)."""
    return {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


# --- phases (children) -----------------------------------------------------------------------------------
def phase_shards(args: argparse.Namespace, work: Path) -> dict:
    from mm_rag import Record
    from mm_rag.shards import ShardSet, SpaceInfo

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(max(100, args.n // 200), args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)  # unit centres, noise 0.03 a coordinate: cosine ~0.83
    shards = ShardSet(work / "shards")
    shards.declare_spaces({"clip": SpaceInfo(args.dim, "cosine", {"kind": "synthetic"})})
    for number, start in enumerate(range(0, args.n, args.shard_size)):
        count = min(args.shard_size, args.n - start)
        vectors = centres[rng.integers(0, len(centres), count)] + NOISE * rng.standard_normal(
            (count, args.dim), dtype=np.float32
        )
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = [Record(f"v{start + i}", "image", uri=f"/img/{start + i}.jpg", metadata={"bucket": (start + i) % 100})
                   for i in range(count)]  # fmt: skip
        shards.write(f"shard-{number:05d}", records, {"clip": (np.arange(count), vectors)})
        del vectors, records
    queries = centres[rng.integers(0, len(centres), args.queries)] + NOISE * rng.standard_normal(
        (args.queries, args.dim), dtype=np.float32
    )
    np.save(work / "queries.npy", (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32))
    return {
        "shards": len(shards.finished()),
        "bytes": sum(f.stat().st_size for f in (work / "shards").rglob("*") if f.is_file()),
    }


def phase_build(args: argparse.Namespace, work: Path) -> dict:
    import dataclasses

    from mm_rag.indexbuild import build_store

    report = build_store(
        work / "shards", work / "store", index=args.index, train_size=args.train_size, recall_queries=args.queries
    )
    space = report.spaces["clip"]
    return {"report": dataclasses.asdict(space), "records_seconds": report.seconds["records"], "total_seconds": report.seconds["total"],
            "store_bytes": sum(f.stat().st_size for f in (work / "store").rglob("*") if f.is_file())}  # fmt: skip


def phase_query(args: argparse.Namespace, work: Path) -> dict:
    from mm_rag import MultimodalStore
    from mm_rag.indexbuild import exact_search

    queries = np.load(work / "queries.npy")
    started = time.perf_counter()
    store = MultimodalStore.open(work / "store")
    opened = time.perf_counter() - started
    started = time.perf_counter()
    store.search("clip", queries[0], k=K)
    first = time.perf_counter() - started
    latencies, found = [], []
    for query in queries:
        started = time.perf_counter()
        hits = store.search("clip", query, k=K)
        latencies.append(time.perf_counter() - started)
        found.append([int(hit.record.id[1:]) for hit in hits])
    spaces = work / "store" / "spaces"
    started = time.perf_counter()
    truth = exact_search(queries, spaces / "clip.1.keys.npy", spaces / "clip.1.vectors.npy", "cosine", K)[1]
    exact_seconds = time.perf_counter() - started
    np.save(work / "truth.npy", truth)
    store.close()
    return {"open_s": opened, "first_query_s": first, "p50_ms": float(np.percentile(latencies, 50) * 1e3),
            "p99_ms": float(np.percentile(latencies, 99) * 1e3), "recall_at_10": recall(found, truth),
            "exact_search_s": exact_seconds}  # fmt: skip


def phase_baseline(args: argparse.Namespace, work: Path) -> dict:

    from mm_rag.store import indexing

    seconds = {}
    started = time.perf_counter()
    vectors = np.load(work / "store" / "spaces" / "clip.1.vectors.npy")  # all of them, in RAM
    seconds["load"] = time.perf_counter() - started
    index = indexing.new_index(args.index, args.dim, "ip")  # IVF indices: Faiss's own, with mm-rag's nprobe
    points = indexing.training_size(index, len(vectors), args.train_size)
    started = time.perf_counter()
    indexing.train(index, indexing.train_sample(vectors, points))  # the training the store does, on raw Faiss
    seconds["train"] = time.perf_counter() - started
    started = time.perf_counter()
    index.add(vectors)
    seconds["add"] = time.perf_counter() - started
    queries = np.load(work / "queries.npy")
    found = index.search(queries, K)[1]
    return {"seconds": seconds, "recall_at_10": recall(found.tolist(), np.load(work / "truth.npy")), "rss": peak_rss()}


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / K for f, t in zip(found, truth)]))


PHASES = {"shards": phase_shards, "build": phase_build, "query": phase_query, "baseline": phase_baseline}


# --- driver ----------------------------------------------------------------------------------------------
def run_phase(name: str, argv: list[str], work: Path) -> dict:
    started = time.perf_counter()
    command = [sys.executable, __file__, *argv, "--phase", name, "--dir", str(work)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"phase {name} failed:\n{result.stderr[-4000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["wall_s"] = time.perf_counter() - started
    print(f"  {name}: {figures['wall_s']:.1f} s, peak RSS {figures['peak_rss']['self'] / 2**30:.2f} GiB", flush=True)
    return figures


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.phase:
        figures = PHASES[args.phase](args, Path(args.dir))
        print(json.dumps({**figures, "peak_rss": peak_rss()}))
        return
    argv = [a for a in (argv if argv is not None else sys.argv[1:])]
    work = Path(tempfile.mkdtemp(prefix="mm-rag-bench-build-", dir=args.workdir))
    print(
        f"{args.n} x {args.dim}, {args.index}, shards of {args.shard_size}, in {work}; load average {os.getloadavg()}",
        flush=True,
    )
    try:
        results = {name: run_phase(name, argv, work) for name in ("shards", "build", "query", "baseline")}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["load_average_end"] = os.getloadavg()
    results["peak_rss_children"] = peak_rss()["children"]
    results["config"] = {k: str(v) for k, v in vars(args).items()}
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


def report(results: dict) -> None:
    build, query, base = results["build"], results["query"], results["baseline"]
    space = build["report"]
    gib = 2**30
    built_s = build["total_seconds"]
    base_s = sum(base["seconds"].values())
    print(
        f"\nbuild_store: {space['index']} over {space['vectors']} vectors in {built_s:.1f} s"
        f" (records {build['records_seconds']:.1f} s, "
        + ", ".join(f"{k} {v:.1f} s" for k, v in space["seconds"].items())
        + ")"
    )
    print(
        f"  peak RSS {build['peak_rss']['self'] / gib:.2f} GiB; index {space['memory_bytes'] / gib:.3f} GiB;"
        f" store on disk {build['store_bytes'] / gib:.2f} GiB; recall@10 (held-out stored vectors) {space['recall_at_10']:.3f}"
    )
    print(
        f"in-memory baseline: {base_s:.1f} s ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in base["seconds"].items())
        + f"), peak RSS {base['peak_rss']['self'] / gib:.2f} GiB, recall@10 {base['recall_at_10']:.3f}"
    )
    print(
        f"  ratios build_store / baseline: time {built_s / base_s:.2f}x, peak RSS"
        f" {build['peak_rss']['self'] / base['peak_rss']['self']:.2f}x"
    )
    print(
        f"memory-mapped store: open {query['open_s'] * 1e3:.0f} ms, first query {query['first_query_s'] * 1e3:.1f} ms,"
        f" p50 {query['p50_ms']:.2f} ms, p99 {query['p99_ms']:.2f} ms, recall@10 vs exact {query['recall_at_10']:.3f}"
        f" (exact search over mapped vectors {query['exact_search_s']:.1f} s); peak RSS {query['peak_rss']['self'] / gib:.2f} GiB"
    )
    print(
        f"shards: {results['shards']['shards']} ({results['shards']['bytes'] / gib:.2f} GiB) written in"
        f" {results['shards']['wall_s']:.1f} s, peak RSS {results['shards']['peak_rss']['self'] / gib:.2f} GiB;"
        f" peak RSS of any child {results['peak_rss_children'] / gib:.2f} GiB; load average at end {results['load_average_end']}"
    )


if __name__ == "__main__":
    main()
