"""Benchmark `store.add` against the code before this change, raw Faiss, LangChain FAISS and LlamaIndex, in one run.

Run from the repository root (needs the ``bench`` extra)::

    .venv/bin/python benchmarks/bench_add.py                      # 100k x 512, 5 rounds (~4 min)
    .venv/bin/python benchmarks/bench_add.py --n 20000 --repeats 3 --before-rev HEAD~1

Every measurement runs in a fresh process, so no system inherits another's heap, and the systems take turns
round by round (before, after, LangChain, LlamaIndex, before, …) so that load from other processes falls on
all alike. Each process first times raw ``IndexFlatIP.add`` of the same array, then its system:

- *mm-rag before / after*: ``store.add(records, {"clip": x})`` into a new on-disk store with a Flat space
  (validation, normalisation, the SQLite catalog with its metadata and keyword indexes, the exact-vector table,
  ``IndexIDMap2.add_with_ids``), then ``store.save()`` (durable: files written and fsynced, SQLite committed).
  "Before" is a detached ``git worktree`` of `--before-rev` on ``sys.path`` first; "after" this working tree.
- *LangChain*: ``FAISS.add_embeddings`` with numpy rows, texts, metadata and ids (in memory, nothing durable).
- *LlamaIndex*: ``FaissVectorStore.add(nodes)`` plus ``SimpleDocumentStore.add_documents(nodes)``, which is what
  a ``VectorStoreIndex`` on a FaissVectorStore does to keep text and metadata; building the ``TextNode``s is
  timed apart.

Records: ``doc-00000042``, a 90-character text, metadata ``{"bucket": i % 1000, "tag": one of 5}``; vectors
clustered, float32. Printed: median (min-max) per system, ratios against raw Faiss (measured in the same
processes) and against each other; all samples go to ``benchmarks/results/add.json``.
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
import warnings
from pathlib import Path

from before_after import checkout, remove_checkout, write_results

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
DEFAULT_BEFORE = "455ab7e"  # the landed code before the batch checks of the add path
SYSTEMS = ("before", "after", "langchain", "llamaindex")


# --------------------------------------------------------------------------------------------------------------
# one measurement, in a child process
# --------------------------------------------------------------------------------------------------------------
def measure(system: str, n: int, dim: int, seed: int) -> dict[str, float]:
    """Seconds of raw Faiss's add and of `system`'s, in this (fresh) process."""
    warnings.filterwarnings("ignore")
    import faiss
    import numpy as np
    from storebench.common import clustered, record_id, record_meta, record_text, timed

    x = clustered(np.random.default_rng(seed), n, dim)
    out = {"raw_faiss_s": timed(lambda: faiss.IndexFlatIP(dim).add(x))[0]}
    if system in ("before", "after"):
        from mm_rag import MultimodalStore, Record

        records = [Record(record_id(i), "text", text=record_text(i), metadata=record_meta(i)) for i in range(n)]
        work = Path(tempfile.mkdtemp(prefix="mm-rag-add-"))
        try:
            store = MultimodalStore(work / "store")
            store.create_space("clip", dim, metric="cosine", index="Flat")
            out["add_s"] = timed(lambda: store.add(records, {"clip": x}))[0]
            out["save_s"] = timed(store.save)[0]
            store.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    elif system == "langchain":
        from storebench.common import langchain_store

        store = langchain_store(dim)
        texts = [record_text(i) for i in range(n)]
        metas = [record_meta(i) for i in range(n)]
        ids = [record_id(i) for i in range(n)]
        out["add_s"] = timed(lambda: store.add_embeddings(list(zip(texts, x)), metadatas=metas, ids=ids))[0]
    else:
        from llama_index.core.schema import TextNode
        from llama_index.core.storage.docstore import SimpleDocumentStore
        from llama_index.vector_stores.faiss import FaissVectorStore

        rows = x.tolist()
        out["build_s"], nodes = timed(
            lambda: [
                TextNode(id_=record_id(i), text=record_text(i), metadata=record_meta(i), embedding=rows[i])
                for i in range(n)
            ]
        )
        vector_store, docstore = FaissVectorStore(faiss_index=faiss.IndexFlatIP(dim)), SimpleDocumentStore()
        out["add_s"] = timed(lambda: (vector_store.add(nodes), docstore.add_documents(nodes)))[0]
    return out


def run_child(system: str, code_root: Path, args: argparse.Namespace) -> dict[str, float]:
    """`measure` in a fresh interpreter whose `mm_rag` is `code_root`'s."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code_root), str(BENCH)])}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", system, "--n", str(args.n)]
    command += ["--dim", str(args.dim), "--seed", str(args.seed)]
    done = subprocess.run(command, env=env, cwd=code_root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{system} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5, help="Rounds; every system runs once per round.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--before-rev", default=DEFAULT_BEFORE, help="Commit to check out as the previous code.")
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "add.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.n, args.dim, args.seed)))
        return

    work = Path(tempfile.mkdtemp(prefix="mm-rag-bench-add-"))
    before = checkout(args.before_rev, work / "before")
    roots = {"before": before, "after": ROOT, "langchain": ROOT, "llamaindex": ROOT}
    samples: dict[str, list[dict[str, float]]] = {system: [] for system in SYSTEMS}
    try:
        for round_number in range(args.repeats):
            for system in SYSTEMS:
                result = run_child(system, roots[system], args)
                samples[system].append(result)
                shown = "  ".join(f"{key} {value:.3f}" for key, value in result.items())
                print(f"  round {round_number + 1}/{args.repeats} {system:<10} {shown}", flush=True)
    finally:
        remove_checkout(before)
        shutil.rmtree(work, ignore_errors=True)

    def median(system: str, key: str) -> float:
        return statistics.median(sample[key] for sample in samples[system])

    raw = statistics.median(sample["raw_faiss_s"] for values in samples.values() for sample in values)
    print(f"\nadd of {args.n:,} x {args.dim}, median (min-max) of {args.repeats} fresh processes per system")
    print(f"{'system':<46} {'add':>22} {'vs raw faiss':>13} {'time / after':>13}")
    after = median("after", "add_s")
    rows = {"raw faiss IndexFlatIP.add": [s["raw_faiss_s"] for v in samples.values() for s in v]}
    rows |= {
        "mm-rag store.add (before)": [s["add_s"] for s in samples["before"]],
        "mm-rag store.add (after)": [s["add_s"] for s in samples["after"]],
        "LangChain FAISS.add_embeddings (numpy rows)": [s["add_s"] for s in samples["langchain"]],
        "LlamaIndex FaissVectorStore + docstore": [s["add_s"] for s in samples["llamaindex"]],
    }
    for name, values in rows.items():
        middle = statistics.median(values)
        spread = f"{middle:.3f} s ({min(values):.2f}-{max(values):.2f})"
        print(f"{name:<46} {spread:>22} {raw / middle:>12.2f}x {middle / after:>12.2f}x")
    saves = {side: median(side, "save_s") for side in ("before", "after")}
    print(f"{'mm-rag save() after the add (before / after)':<46} {saves['before']:.3f} s / {saves['after']:.3f} s")
    print(f"{'LlamaIndex TextNode construction (apart)':<46} {median('llamaindex', 'build_s'):.3f} s")
    write_results(
        args.out,
        {
            "config": {"n": args.n, "dim": args.dim, "repeats": args.repeats, "before_rev": args.before_rev},
            "samples": samples,
            "medians_s": {name: statistics.median(values) for name, values in rows.items()},
            "save_medians_s": saves,
        },
    )

if __name__ == "__main__":
    main()
