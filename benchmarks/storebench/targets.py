"""The targets the store was built against, checked on a run's results."""

from __future__ import annotations

from typing import Any

from .common import fmt_s

ADD_RIVALS = (
    "LangChain FAISS.add_embeddings (list[float])",
    "LangChain FAISS.add_embeddings (numpy rows)",
    "LlamaIndex FaissVectorStore.add",
    "LlamaIndex FaissVectorStore.add + SimpleDocumentStore",
)


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry ({"target", "measured", "met"}) per target whose section ran."""
    targets = []
    add = results.get("add")
    if add:
        for name in ADD_RIVALS:
            r = add[name]
            targets.append(
                {
                    "target": f"add >= 10x {name}",
                    "measured": f"{r['mm_rag_speedup']:.2f}x add only; {r['mm_rag_speedup_with_build']:.2f}x "
                    "incl. object build",
                    "met": r["mm_rag_speedup"] >= 10,
                }
            )
    query = results.get("query")
    if query:
        for name in ("Flat", "Flat, same mapped file"):
            flat = query[name]
            targets.append(
                {
                    "target": f"query overhead <= 15 % over raw faiss ({name}, median)",
                    "measured": f"{flat['overhead_median_pct']:+.1f} % (p99 {flat['overhead_p99_pct']:+.1f} %); "
                    f"over its own index {flat['layer_overhead_pct']:+.1f} %",
                    "met": flat["overhead_median_pct"] <= 15,
                }
            )
    flt = results.get("filter")
    if flt:
        worst = min(min(e["mm_recall"], e["mm_first_recall"]) for e in flt.values())
        targets.append(
            {
                "target": "filtered recall@k = 1.0 at every selectivity",
                "measured": f"min {worst:.3f}",
                "met": worst >= 1.0,
            }
        )
    mm1 = results.get("mmap_1m")
    if mm1 and not mm1.get("skipped"):
        r = mm1["rows"]["mm-rag MultimodalStore.open(mmap=True)"]
        cold = mm1["rows"]["mm-rag MultimodalStore.open(mmap=True) [cold]"]
        targets.append(
            {
                "target": f"open {mm1['n']:,} x {mm1['dim']} memory-mapped well under 1 s",
                "measured": f"{fmt_s(r['open_s'])} warm, {fmt_s(cold['open_s'])} cold",
                "met": r["open_s"] < 0.5 and cold["open_s"] < 0.5,
            }
        )
    return targets
