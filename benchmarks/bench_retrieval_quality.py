"""Benchmark retrieval quality: recall@1, recall@5 and MRR of dense, lexical and hybrid retrieval per subset.

Run from the repository root (needs espeak-ng and the ``dev`` extra's packaged models)::

    .venv/bin/python benchmarks/bench_retrieval_quality.py
    .venv/bin/python benchmarks/bench_retrieval_quality.py --fusion rrf --json results.json
    .venv/bin/python benchmarks/bench_retrieval_quality.py --stemming none      # words as written
    .venv/bin/python benchmarks/bench_retrieval_quality.py --setting rrf_k=20   # any retriever field

The set is `tests/fixtures/qualityset.py`: natural questions with stop words over mixed records (passages,
picture captions, Whisper tiny.en transcripts of espeak-ng speech, look-alike invoices), in the subsets
``natural``, ``pictures``, ``spoken`` and ``codes``. The text embedder is the packaged all-MiniLM-L6-v2 on the
CPU. Every modality competes in the fused ranking (5 results each), as in `mm_rag.eval`.

Retriever settings (``--fusion``, ``--rrf-k``, ``--setting name=value``) are passed to `MultimodalRetriever`
only when given, so the script runs against checkouts whose retriever does not have them. To measure another
checkout, put it first on ``PYTHONPATH`` (``import mm_rag`` must resolve there; the script prints where it did).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))  # appended: a checkout on PYTHONPATH still provides `mm_rag`


def parse_setting(text: str) -> tuple[str, Any]:
    """``name=value``, the value read as JSON when it parses (numbers, booleans, lists) and as text otherwise."""
    name, separator, value = text.partition("=")
    if not separator or not name.strip():
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


def format_table(table: dict[tuple[str, str], dict[str, float]], subsets: list[str], modes: list[str]) -> str:
    """One row per subset and mode: R@1, R@5, MRR (and the number of questions)."""
    from fixtures.qualityset import QUESTIONS

    lines = [f"{'subset':<9} {'n':>3} {'mode':<8} {'R@1':>6} {'R@5':>6} {'MRR':>6}"]
    for subset in subsets:
        for mode in modes:
            row = table[subset, mode]
            lines.append(
                f"{subset:<9} {len(QUESTIONS[subset]):>3} {mode:<8} "
                f"{row['recall@1']:>6.3f} {row['recall@5']:>6.3f} {row['mrr']:>6.3f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from fixtures.qualityset import MODES, SUBSETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default=",".join(MODES), help="Comma-separated retrieval modes.")
    parser.add_argument("--subsets", default=",".join(SUBSETS), help="Comma-separated subsets.")
    parser.add_argument("--fusion", help="MultimodalRetriever(fusion=...), passed only when given.")
    parser.add_argument("--rrf-k", type=float, help="MultimodalRetriever(rrf_k=...), passed only when given.")
    parser.add_argument(
        "--setting", action="append", type=parse_setting, default=[], help="Any other retriever field, name=value."
    )
    parser.add_argument(
        "--stemming", help="store.configure_keywords(stemming=...) before measuring ('porter' or 'none')."
    )
    parser.add_argument("--per-question", action="store_true", help="Also print each question's first-hit rank.")
    parser.add_argument("--json", type=Path, help="Also write the table here as JSON.")
    args = parser.parse_args(argv)

    from fixtures.qualityset import (
        build_quality_set,
        build_store,
        first_hit_ranks,
        measure,
        packaged_minilm_dir,
    )

    import mm_rag
    from mm_rag import TextEmbedder

    settings: dict[str, Any] = dict(args.setting)
    if args.fusion is not None:
        settings["fusion"] = args.fusion
    if args.rrf_k is not None:
        settings["rrf_k"] = int(args.rrf_k) if args.rrf_k.is_integer() else args.rrf_k
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    subsets = [s.strip() for s in args.subsets.split(",") if s.strip()]
    unknown = sorted(set(subsets) - set(SUBSETS))
    if unknown:
        parser.error(f"unknown subsets {unknown}; expected some of {list(SUBSETS)}")

    print(f"mm_rag from {Path(mm_rag.__file__).parent}; retriever settings {settings or 'default'}")
    started = time.perf_counter()
    quality = build_quality_set()
    text = TextEmbedder(packaged_minilm_dir(), device="cpu")
    store = build_store(quality, text)
    if args.stemming is not None:
        store.configure_keywords(stemming=args.stemming)
    print(f"keyword index: {getattr(store, 'keyword_settings', 'unicode61, no stemming (an older mm-rag)')}")
    built = time.perf_counter() - started
    table = measure(quality, store, text, modes, subsets, **settings)
    print(format_table(table, subsets, modes))
    print(f"set built in {built:.1f} s, measured in {time.perf_counter() - started - built:.1f} s")
    if args.per_question:
        for subset in subsets:
            for mode in modes:
                ranks = first_hit_ranks(quality, store, text, mode, subset, **settings)
                misses = {question: rank for question, rank in ranks.items() if rank != 1}
                print(f"{subset}/{mode}: not first: {misses or 'none'}")
    if args.json:
        rows = [{"subset": s, "mode": m, **table[s, m]} for s in subsets for m in modes]
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
