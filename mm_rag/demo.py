"""The store demo behind `mm-rag demo`: synthetic aligned records, filtered search, delete, save, reopen."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mm_rag.records import Record

_TOPICS = ["beach", "forest", "city", "mountain", "kitchen", "concert", "harbour", "desert"]
_MODALITIES = ["image", "text", "audio", "video"]


def run_store_demo(path: Path | None, count: int, say: Callable[[str], None] = print) -> None:
    """Fill a store with `count` synthetic records in two spaces and show what it can do."""
    from mm_rag.store import MultimodalStore

    rng = np.random.default_rng(7)
    centres = rng.standard_normal((len(_TOPICS), 64)).astype(np.float32)
    topic_of = rng.integers(0, len(_TOPICS), size=count)
    clip = centres[topic_of] + 0.6 * rng.standard_normal((count, 64)).astype(np.float32)
    records = [
        Record(
            id=f"item-{i}",
            modality=_MODALITIES[i % 4],
            text=f"a {_MODALITIES[i % 4]} about the {_TOPICS[t]} (#{i})",
            uri=f"synthetic://{_TOPICS[t]}/{i}",
            metadata={"topic": _TOPICS[t], "year": 2000 + i % 25, "tags": [_TOPICS[t], "even" if i % 2 == 0 else "odd"]}
            | ({"start": float(i % 60), "end": float(i % 60 + 5)} if i % 4 in (2, 3) else {}),
            doc_id=f"doc-{i // 10}",
        )
        for i, t in enumerate(topic_of)
    ]
    store = MultimodalStore(path)
    store.create_space("clip", 64)
    started = time.perf_counter()
    store.add(records, {"clip": clip})
    say(f"added {count} records in {time.perf_counter() - started:.2f}s -> {store.path}")

    query = centres[_TOPICS.index("beach")]
    _show(say, "nearest to the 'beach' centre", store.search("clip", query, k=3))
    only = {"modality": {"$in": ["audio", "video"]}, "year": {"$gte": 2020}}
    _show(say, f"same query, filter {only}", store.search("clip", query, k=3, filter=only))
    rare = {"tags": {"$contains": "forest"}, "year": 2003, "modality": "image"}
    hits = store.search("clip", query, k=5, filter=rare)
    matching = sum(1 for r in records if r.modality == "image" and r.metadata["year"] == 2003 and "forest" in r.metadata["tags"])
    _show(say, f"a rare filter ({matching} records match; exact, never short of k)", hits)

    removed = store.delete_doc("doc-0")
    say(f"deleted document doc-0: {removed} records; {store.count()} left")
    if path is None:
        store.close()
        return
    store.save()
    store.close()
    with MultimodalStore.open(path) as reopened:
        say(f"reopened {path}: {reopened.count()} records, spaces {reopened.info()['spaces']}")


def _show(say: Callable[[str], None], title: str, hits: list) -> None:
    say(f"\n{title}:")
    for hit in hits:
        r = hit.record
        span = f" [{r.metadata['start']:.0f}-{r.metadata['end']:.0f}s]" if "start" in r.metadata else ""
        say(f"  {hit.rank + 1}. {hit.score:.3f} {r.modality:<5} {r.text}{span} ({r.uri})")
