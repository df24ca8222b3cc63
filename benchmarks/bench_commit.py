"""What a small commit costs as a store grows: add 1,000 records, delete one, save; before and after, one run.

Run from the repository root, naming the code to compare against (a git revision)::

    .venv/bin/python benchmarks/bench_commit.py --before REV                     # 100k, 1M, 3M; Flat and IVF
    .venv/bin/python benchmarks/bench_commit.py --before REV --sizes 100000 --kinds flat   # a quick look

Each store is built once, by the `--before` code (so in the store format both versions read), and cloned for
each version with hard links: committed space files are never modified, so both versions start from the same
bytes on disk (and in the page cache). Then, in a fresh process per version and store:

- ``commit``: ``--repeats`` rounds of add 1,000 new 512-d records + delete one + ``save()``; the median round,
  and the median ``save()`` alone. A reader handle opened before the rounds (in memory-mapped default mode)
  then times its first search after the writer's commits (it catches up), and a fresh ``open`` + first search;
- ``recent`` (after only): one-vector search latency (k=10) of the 100k store with 0, 1k, 10k and 25k vectors
  in its recent part (the segments, searched exactly) against the same store with them folded into its index;
- ``segments`` (after only; alone with ``--segments-only N``): the same latency with 25k vectors saved as 1, 10
  or 50 segments (merging held off), and as 50 saves under the default policy, against them folded.

Flat stores are made by ``add`` + ``save``; IVF stores by ``build_store`` (``build-index``) from shards, with
``IVF1024,Flat`` trained on 50k vectors and its inverted lists on disk, as a large store is served.

Results go to ``benchmarks/results/commit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if "--phase" not in sys.argv:  # a phase runs the code its PYTHONPATH names, not this checkout's
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 512
BATCH = 50_000


def vectors(count: int, seed: int) -> np.ndarray:
    array = np.random.default_rng(seed).standard_normal((count, DIM), dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


# --- phases, each run in a fresh process with the version under test first on sys.path ---------------------


def phase_build(path: Path, count: int, kind: str) -> dict[str, Any]:
    from mm_rag import MultimodalStore, Record

    started = time.perf_counter()
    if kind == "flat":
        with MultimodalStore(path) as store:
            store.create_space("v", DIM, index="Flat")
            for start in range(0, count, BATCH):
                size = min(BATCH, count - start)
                store.add([Record(f"r{start + i}", "text") for i in range(size)], {"v": vectors(size, start)})
            store.save()
    else:
        from mm_rag.indexbuild import build_store
        from mm_rag.shards import ShardSet, SpaceInfo

        shards = ShardSet(path.parent / f"shards-{path.name}")
        shards.declare_spaces({"v": SpaceInfo(DIM, "cosine", {"kind": "synthetic"})})
        for number, start in enumerate(range(0, count, BATCH)):
            size = min(BATCH, count - start)
            records = [Record(f"r{start + i}", "text") for i in range(size)]
            shards.write(f"shard-{number:05d}", records, {"v": (np.arange(size), vectors(size, start))})
        build_store(shards.root, path, index="IVF1024,Flat", train_size=50_000, recall_queries=0)
        shutil.rmtree(shards.root)
    return {"build_s": time.perf_counter() - started}


def phase_commit(path: Path, repeats: int) -> dict[str, Any]:
    from mm_rag import MultimodalStore, Record

    probe = vectors(1, 10**9)[0]
    reader = MultimodalStore.open(path)
    reader.search("v", probe, k=10)
    rounds, saves = [], []
    with MultimodalStore.open(path) as store:
        total = store.count("v")
        for number in range(repeats):
            new = vectors(1000, 10**8 + number)
            started = time.perf_counter()
            store.add([Record(f"new{number}-{i}", "text") for i in range(1000)], {"v": new})
            store.delete([f"r{number}"])
            before_save = time.perf_counter()
            store.save()
            done = time.perf_counter()
            rounds.append(done - started)
            saves.append(done - before_save)
    started = time.perf_counter()
    hits = reader.search("v", probe, k=10)
    catch_up = time.perf_counter() - started
    started = time.perf_counter()
    reader.search("v", probe, k=10)
    next_search = time.perf_counter() - started
    assert len(hits) == 10 and reader.count("v") == total + repeats * 999
    reader.close()
    started = time.perf_counter()
    with MultimodalStore.open(path) as fresh:
        opened = time.perf_counter() - started
        fresh.search("v", probe, k=10)
        first = time.perf_counter() - started
    return {
        "vectors": total,
        "round_s": statistics.median(rounds),
        "save_s": statistics.median(saves),
        "rounds_s": rounds,
        "reader_first_search_s": catch_up,
        "reader_next_search_s": next_search,
        "open_s": opened,
        "open_and_first_search_s": first,
    }


def latency(store: Any, probes: np.ndarray) -> float:
    """Seconds per one-vector search (k=10) over `probes`, after one search to warm up."""
    store.search("v", probes[0], k=10)
    started = time.perf_counter()
    for probe in probes:
        store.search("v", probe, k=10)
    return (time.perf_counter() - started) / len(probes)


def phase_recent(path: Path, queries: int) -> dict[str, Any]:
    """Search latency with growing recent parts, against the same vectors folded into the index."""
    from mm_rag import MultimodalStore, Record
    from mm_rag.store import space as space_module

    space_module.FOLD_MIN = 10**9  # keep every addition in the recent part, whatever its size
    probes = vectors(queries, 7 * 10**8)

    result, added = {}, 0
    for recent in (0, 1000, 10_000, 25_000):
        with MultimodalStore.open(path, mmap=False) as store:
            if recent > added:  # saved as segments; opened again below, they form the recent part
                size = recent - added
                late = [Record(f"late{added + i}", "text") for i in range(size)]
                store.add(late, {"v": vectors(size, 5 * 10**8 + added)})
                store.save()
                added = recent
        with MultimodalStore.open(path, mmap=False) as store:
            space = store._generations.spaces["v"]
            segments = len(space.files.segments)
            with_recent = latency(store, probes)
            space.fold()  # the same vectors in the index (not saved: the next round opens the segments again)
            folded = latency(store, probes)
        result[str(recent)] = {
            "segments": segments,
            "recent_us": with_recent * 1e6,
            "folded_us": folded * 1e6,
            "ratio": with_recent / folded,
        }
    return result


def phase_segments(path: Path, queries: int) -> dict[str, Any]:
    """Search latency with 25,000 vectors saved as 1, 10 or 50 segments (merging held off), and as the default
    policy leaves 50 saves, each against the same vectors folded into the index."""
    from mm_rag import MultimodalStore, Record
    from mm_rag.store import segments as segments_module
    from mm_rag.store import space as space_module

    space_module.FOLD_MIN = 10**9  # every addition stays in segments
    default_limit = segments_module.MAX_SEGMENTS
    probes = vectors(queries, 7 * 10**8)

    result = {}
    for label, saves, limit in (
        ("1", 1, 64),
        ("10", 10, 64),
        ("50", 50, 64),
        ("50, default policy", 50, default_limit),
    ):
        copy = path.parent / f"{path.name}-segments"
        clone(path, copy)
        segments_module.MAX_SEGMENTS = limit
        with MultimodalStore.open(copy, mmap=False) as store:
            per_save = 25_000 // saves
            for number in range(saves):
                late = [Record(f"late{number}-{i}", "text") for i in range(per_save)]
                store.add(late, {"v": vectors(per_save, 6 * 10**8 + number)})
                store.save()
        with MultimodalStore.open(copy, mmap=False) as store:
            space = store._generations.spaces["v"]
            count = len(space.files.segments)
            with_segments = latency(store, probes)
            space.fold()
            folded = latency(store, probes)
        shutil.rmtree(copy)
        result[label] = {
            "segments": count,
            "segments_us": with_segments * 1e6,
            "folded_us": folded * 1e6,
            "ratio": with_segments / folded,
        }
    return result


def run_phase(code: Path, name: str, *arguments: str) -> dict[str, Any]:
    """Run phase `name` in a fresh process importing mm_rag from `code`."""
    environment = dict(os.environ, PYTHONPATH=str(code), HF_HUB_OFFLINE="1")
    command = [sys.executable, __file__, "--phase", name, *arguments]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if finished.returncode:
        raise RuntimeError(f"phase {name} {arguments} failed:\n{finished.stderr[-4000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def clone(source: Path, target: Path) -> None:
    """Hard links for the immutable space files, a copy of the catalog (the one file a save modifies)."""
    shutil.rmtree(target, ignore_errors=True)
    (target / "spaces").mkdir(parents=True)
    for file in (source / "spaces").iterdir():
        os.link(file, target / "spaces" / file.name)
    for file in source.iterdir():
        if file.is_file():
            shutil.copy2(file, target / file.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="git revision of the code to compare against")
    parser.add_argument("--sizes", default="100000,1000000,3000000")
    parser.add_argument("--kinds", default="flat,ivf")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--work", type=Path, help="folder for the stores (default: a temporary one)")
    parser.add_argument("--segments-only", type=int, metavar="N", help="only the segment-count search latencies")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("arguments", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # a child process: run one phase, print its JSON
        phases = {
            "build": lambda: phase_build(Path(args.arguments[0]), int(args.arguments[1]), args.arguments[2]),
            "commit": lambda: phase_commit(Path(args.arguments[0]), args.repeats),
            "recent": lambda: phase_recent(Path(args.arguments[0]), args.queries),
            "segments": lambda: phase_segments(Path(args.arguments[0]), args.queries),
        }
        print(json.dumps(phases[args.phase]()))
        return
    from benchmarks.before_after import ROOT, checkout, remove_checkout, write_results

    if args.segments_only:
        work = args.work or Path(tempfile.mkdtemp(prefix="bench-commit-"))
        phase_build(work / "base", args.segments_only, "flat")
        print(json.dumps(run_phase(ROOT, "segments", str(work / "base"), "--queries", str(args.queries)), indent=2))
        shutil.rmtree(work)
        return
    if not args.before:
        parser.error("--before REV is required (the code to compare against)")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-commit-"))
    work.mkdir(parents=True, exist_ok=True)
    before = checkout(args.before, work / "before-code")
    results: dict[str, Any] = {"before": args.before, "repeats": args.repeats, "stores": {}}
    try:
        for kind in args.kinds.split(","):
            for count in map(int, args.sizes.split(",")):
                label = f"{kind}-{count}"
                base = work / f"{label}-base"
                shutil.rmtree(base, ignore_errors=True)
                row: dict[str, Any] = run_phase(before, "build", str(base), str(count), kind)
                for version, code in (("before", before), ("after", ROOT)):
                    clone(base, work / f"{label}-{version}")
                    row[version] = run_phase(
                        code, "commit", str(work / f"{label}-{version}"), "--repeats", str(args.repeats)
                    )
                    shutil.rmtree(work / f"{label}-{version}")
                row["save_ratio"] = row["after"]["save_s"] / row["before"]["save_s"]
                if kind == "flat" and count == min(map(int, args.sizes.split(","))):
                    clone(base, work / f"{label}-recent")
                    row["recent"] = run_phase(
                        ROOT, "recent", str(work / f"{label}-recent"), "--queries", str(args.queries)
                    )
                    row["segments"] = run_phase(
                        ROOT, "segments", str(work / f"{label}-recent"), "--queries", str(args.queries)
                    )
                    shutil.rmtree(work / f"{label}-recent")
                shutil.rmtree(base)
                results["stores"][label] = row
                print(label, json.dumps({v: row[v]["round_s"] for v in ("before", "after")}), flush=True)
                write_results(ROOT / "benchmarks" / "results" / "commit.json", results)  # each store as it ends
    finally:
        remove_checkout(before)
    report(results)


def report(results: dict[str, Any]) -> None:
    print(
        "\n| store | before: round / save | after: round / save | save after/before | reader catch-up before → after |"
    )
    print("|---|---|---|---|---|")
    for label, row in results["stores"].items():
        b, a = row["before"], row["after"]
        print(
            f"| {label} | {b['round_s']:.2f} / {b['save_s']:.2f} s | {a['round_s']:.3f} / {a['save_s']:.3f} s"
            f" | {row['save_ratio']:.3f} | {b['reader_first_search_s'] * 1e3:.0f} → {a['reader_first_search_s'] * 1e3:.0f} ms |"
        )
    for label, row in results["stores"].items():
        for recent, figures in row.get("recent", {}).items():
            print(f"{label} recent {recent}: {figures}")


if __name__ == "__main__":
    main()
