"""Benchmark the cold start of `mm-rag search`: one process per query, against the code before issue 11.

Run from the repository root (needs the ``dev`` extra's packaged models, as the demo does)::

    .venv/bin/python benchmarks/bench_cold_start.py                   # 7 alternating runs per side (~3 min)
    .venv/bin/python benchmarks/bench_cold_start.py --repeats 3 --before-rev HEAD~3
    .venv/bin/python benchmarks/bench_cold_start.py --before /tmp/cold/before --store /tmp/cold/ex-store

"Before" is a checkout of `--before-rev` (a detached ``git worktree`` made and removed by the script, unless
`--before` names an existing checkout), run by the same interpreter with its folder first on ``sys.path``.
"After" is this working tree. The store is the example media (``examples/media``) ingested once by the
*before* code with the packaged offline models (all-MiniLM-L6-v2, Whisper tiny.en; CLIP only when its weights
are cached), then copied, so each side opens its own copy of one store.

Each run is a fresh ``python -m mm_rag.cli search QUERY --store S --json`` (what a user or a shell script
pays per query); the sides alternate (before, after, before, …) so that load from other processes on this
shared machine falls on both alike. Printed per side: min and median wall time, and the ratio after/before;
then whether both printed the same results, and the import time of the package and of the libraries a query
may need, each in a fresh interpreter. Everything goes to ``benchmarks/results/cold_start.json``.
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

from before_after import checkout, remove_checkout, write_results

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
# The landed code of issue 11's measurement: the last commit before the light query encoder.
DEFAULT_BEFORE = "ea47b57"
QUERY = "When do the fireworks start?"
IMPORTS = {
    "import mm_rag": "import mm_rag",
    "import mm_rag.cli": "import mm_rag.cli",
    "import torch": "import torch",
    "import sentence_transformers": "import sentence_transformers",
    "import open_clip": "import open_clip",
}


def run_code(code_root: Path, args: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall seconds and result of ``python ARGS`` with `code_root`'s mm_rag first on the path."""
    env = {**ENV, "PYTHONPATH": str(code_root)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=code_root, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed in {code_root}: python {' '.join(args)}\n{done.stderr[-3000:]}")
    return seconds, done


def packaged_models() -> list[str]:
    """The ``ingest`` options naming the offline models the ``dev`` extra installs (as the demo finds them)."""
    sys.path.insert(0, str(ROOT))
    from mm_rag.embed.loading import packaged_models as found

    models = found()
    options = ["--text-model", models["text"]] if "text" in models else []
    return options + (["--whisper-model", models["whisper"]] if "whisper" in models else [])


def code_file(code_root: Path) -> str:
    """Where `code_root`'s interpreter finds mm_rag: proves each side runs its own code."""
    return run_code(code_root, ["-c", "import mm_rag; print(mm_rag.__file__)"])[1].stdout.strip()


def time_searches(sides: dict[str, tuple[Path, Path]], query: str, repeats: int) -> dict[str, dict[str, object]]:
    """Alternating fresh-process searches: side → samples, min, median and the last JSON output."""
    samples: dict[str, list[float]] = {name: [] for name in sides}
    outputs: dict[str, str] = {}
    for round_number in range(repeats):
        for name, (code_root, store) in sides.items():
            args = ["-m", "mm_rag.cli", "search", query, "--store", str(store), "--json", "--device", "cpu"]
            seconds, done = run_code(code_root, args)
            samples[name].append(seconds)
            outputs[name] = done.stdout
            print(f"  round {round_number + 1}/{repeats} {name:<6} {seconds:6.2f} s", flush=True)
    return {
        name: {"samples_s": values, "min_s": min(values), "median_s": statistics.median(values), "json": outputs[name]}
        for name, values in samples.items()
    }


def time_imports(code_root: Path, repeats: int) -> dict[str, float]:
    """Min wall seconds of each import in a fresh interpreter, minus that of an empty one."""
    empty = min(run_code(code_root, ["-c", "pass"])[0] for _ in range(repeats))
    return {
        label: min(run_code(code_root, ["-c", code])[0] for _ in range(repeats)) - empty
        for label, code in IMPORTS.items()
    } | {"empty interpreter": empty}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="An existing checkout of the previous code.")
    parser.add_argument("--before-rev", default=DEFAULT_BEFORE, help="Commit to check out as the previous code.")
    parser.add_argument("--store", type=Path, help="Store to search (default: the example media, ingested now).")
    parser.add_argument("--query", default=QUERY)
    parser.add_argument("--repeats", type=int, default=7, help="Searches per side (alternating).")
    parser.add_argument("--import-repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cold_start.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mm-rag-cold-"))
    made = args.before is None
    before = checkout(args.before_rev, work / "before") if made else args.before.resolve()
    try:
        source = args.store
        if source is None:
            source = work / "store"
            print(f"ingesting {ROOT / 'examples' / 'media'} with the previous code (once)", flush=True)
            ingest = ["-m", "mm_rag.cli", "ingest", str(ROOT / "examples" / "media"), "--store", str(source)]
            run_code(before, [*ingest, *packaged_models(), "--device", "cpu", "--quiet"])
        stores = {name: work / f"store-{name}" for name in ("before", "after")}
        for copy in stores.values():
            shutil.copytree(source, copy)
        sides = {"before": (before, stores["before"]), "after": (ROOT, stores["after"])}
        where = {name: code_file(code_root) for name, (code_root, _) in sides.items()}
        print(
            f"before: {where['before']}\nafter:  {where['after']}\nsearching {args.query!r}, {args.repeats}× per side"
        )
        searches = time_searches(sides, args.query, args.repeats)
        same = json.loads(str(searches["before"]["json"])) == json.loads(str(searches["after"]["json"]))
        print("timing imports (fresh interpreter each, min of runs, empty interpreter subtracted)", flush=True)
        imports = {name: time_imports(code_root, args.import_repeats) for name, (code_root, _) in sides.items()}
    finally:
        if made:
            remove_checkout(before)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'mm-rag search, one process per query':<40} {'min':>8} {'median':>8}")
    for name in sides:
        print(f"{name:<40} {searches[name]['min_s']:>7.2f}s {searches[name]['median_s']:>7.2f}s")
    ratio = {key: searches["after"][key] / searches["before"][key] for key in ("min_s", "median_s")}  # type: ignore[operator]
    print(f"{'after / before':<40} {ratio['min_s']:>8.3f} {ratio['median_s']:>8.3f}")
    print(f"same results (JSON): {same}\n\n{'import, in a fresh interpreter':<40} {'before':>8} {'after':>8}")
    for label in imports["after"]:
        print(f"{label:<40} {imports['before'][label]:>7.2f}s {imports['after'][label]:>7.2f}s")
    write_results(
        args.out,
        {
            "before_rev": args.before_rev if made else str(args.before),
            "query": args.query,
            "search": {name: {k: v for k, v in values.items() if k != "json"} for name, values in searches.items()},
            "ratio_after_before": ratio,
            "same_results": same,
            "imports_s": imports,
        },
    )

if __name__ == "__main__":
    main()
