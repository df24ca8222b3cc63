"""A store's searches: vector search with filters planned by the share of the space's vectors they keep, and
keyword search restricted to a space.

There are two ways to search with a filter:

- *keys first*: collect the keys of every matching record (`mm_rag.store.planner.plan_filter`), then search
  only those (`Space.search` with ``allowed``: an exact scan of few candidates, else the index through an
  ``IDSelector``). Its cost grows with the matches: about 0.85 us per match when the keys come straight from
  the value index, 2.6 us per match of a conjunction (1M records, 2 cores): at 10 % of 1M records, 85-335 ms
  against 159 ms for the unfiltered Flat search.
- *candidates first*: ask the index, unfiltered, for ``MARGIN * k / share`` candidates and check only those
  against the filter, one record at a time (`mm_rag.store.planner.check_each`), widening while a query has
  fewer than `k` that pass. It costs the unfiltered search plus a check of a few hundred candidates. On a Flat
  index it is exact: the first `k` that pass in the exact ranking are the filtered top `k`.

The share is estimated by checking `SAMPLE` keys of the space drawn at random (about a millisecond). A filter
keeping at least `CANDIDATES_FIRST_SHARE` of the vectors searches candidates first (`..._FROM_INDEX` when its
keys come straight from the value index, which collects them three times faster), unless its keys are cached
from an earlier search or few enough match for an exact scan of them on an approximate index (exact beats
approximate at the same cost). Whichever way, hits are never fewer than ``min(k, matches)``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from mm_rag.filters import Filter, canonical_filter
from mm_rag.records import Hit
from mm_rag.store import space as space_module
from mm_rag.store.catalog import Catalog
from mm_rag.store.committed import Generations
from mm_rag.store.planner import check_each, keys_from_index, plan_filter
from mm_rag.store.space import Space
from mm_rag.store.writes import lookup

SAMPLE = 256
CANDIDATES_FIRST_SHARE = 0.05
CANDIDATES_FIRST_SHARE_FROM_INDEX = 0.2
# Below this many vectors both ways cost little; the keys are collected without sampling first.
SMALL_SPACE = 10_000
MARGIN = 3  # candidates asked per expected hit: at a share of 10 %, k=10 asks 300
CANDIDATES_LIMIT = 8192  # per query; a filter that leaves a query short by then is collected after all
FILTER_CACHE_SIZE = 64


class MatchingKeys:
    """The keys of the records each filter matches, planned by cost (`plan_filter`), for the last
    `FILTER_CACHE_SIZE` filters while the store shows the same edition (no change since)."""

    def __init__(self, generations: Generations) -> None:
        self._generations = generations
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._edition = generations.edition
        self._mutex = threading.Lock()  # concurrent searches share the cache

    def __call__(self, filter: Filter) -> np.ndarray:
        """Sorted keys matching `filter` (the caller holds the store's thread lock for reading)."""
        name = canonical_filter(filter)
        keys = self.cached(name)
        if keys is None:
            keys = self._generations.catalog.keys_of(*plan_filter(filter, self._generations.catalog.count_rows))
            with self._mutex:
                self._cache[name] = keys
                while len(self._cache) > FILTER_CACHE_SIZE:
                    self._cache.popitem(last=False)
        return keys

    def cached(self, name: str) -> np.ndarray | None:
        """The keys of the filter `canonical_filter` calls `name`, if at hand."""
        with self._mutex:
            if self._edition != self._generations.edition:
                self._cache.clear()
                self._edition = self._generations.edition
            return self._cache.get(name)

    def clear(self) -> None:
        with self._mutex:
            self._cache.clear()


def vector_hits(
    generations: Generations,
    matching: MatchingKeys,
    space: str,
    vectors: Any,
    count: int,
    k: int,
    filter: Filter | None,
) -> list[list[Hit]]:
    """`MultimodalStore.search_batch` once its arguments are checked: hits of each query, best first."""
    for attempt in range(2):
        with generations.reading():
            target = lookup(generations.spaces, space)
            queries = target.prepare(vectors, count, "search")
            if filter is None:
                scores, keys = target.search(queries, k, None)
            else:
                scores, keys = search(target, generations.catalog, queries, k, filter, matching)
            wanted = {int(key) for key in keys.ravel() if key >= 0}
            found = generations.catalog.records_by_keys(wanted)
        if len(found) == len(wanted) or attempt:
            break
        # Another process committed between the check and the catalog read: records it deleted are gone from
        # the catalog but not yet from these spaces. Catch up and search again rather than come back short.
    return [
        [
            Hit(found[key], space, float(score), rank)
            for rank, (score, key) in enumerate((s, kk) for s, kk in zip(row_scores, row_keys.tolist()) if kk in found)
        ]
        for row_scores, row_keys in zip(scores, keys)
    ]


def search(
    space: Space,
    catalog: Catalog,
    queries: np.ndarray,
    k: int,
    filter: Filter,
    matching: MatchingKeys,
) -> tuple[np.ndarray, np.ndarray]:
    """`Space.search` restricted to the records `filter` matches, planned as the module says."""
    if matching.cached(canonical_filter(filter)) is None and len(space) >= SMALL_SPACE:
        check = check_each(filter)
        sample = space.sample_keys(SAMPLE)
        share = len(catalog.keys_among(sample, *check)) / max(1, len(sample))
        threshold = CANDIDATES_FIRST_SHARE_FROM_INDEX if keys_from_index(filter) else CANDIDATES_FIRST_SHARE
        exact_scan = (
            space.spec != "Flat" and share * len(space) <= space_module.EXACT_SCAN_LIMIT
        )  # read here: tests patch it
        if share >= threshold and not exact_scan:
            found = _candidates_first(space, catalog, queries, k, check, share)
            if found is not None:
                return found
    return space.search(queries, k, matching(filter))


def _candidates_first(
    space: Space, catalog: Catalog, queries: np.ndarray, k: int, check: tuple[str, list], share: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Top-`k` of the unfiltered ranking's candidates that pass `check`; None when a query is still short at
    `CANDIDATES_LIMIT` candidates (the filter keeps far fewer than its sample said)."""
    total = len(space)
    fetch = min(total, max(2 * k, math.ceil(MARGIN * k / share)))
    while True:
        scores, found = space.search(queries, fetch, None)
        passing = np.isin(found, catalog.keys_among(np.unique(found[found >= 0]), *check))
        if (passing.sum(axis=1) >= k).all():
            break
        if fetch >= total and ((found >= 0).sum(axis=1) == total).all():
            break  # every vector was ranked: what passed is all there is
        if fetch >= min(total, CANDIDATES_LIMIT):
            return None
        fetch = min(total, CANDIDATES_LIMIT, fetch * 4)
    order = np.argsort(~passing, axis=1, kind="stable")[:, :k]  # those that pass first, still best first
    kept = np.take_along_axis(passing, order, axis=1)
    scores, found = np.take_along_axis(scores, order, axis=1), np.take_along_axis(found, order, axis=1)
    return np.where(kept, scores, -np.inf).astype(np.float32), np.where(kept, found, -1)


def text_rows(
    catalog: Catalog, space: Space | None, query: str, condition: tuple[str, list], k: int
) -> list[tuple[int, float]]:
    """(key, BM25 score) of the `k` best keyword matches among the records meeting `condition` and, with
    `space`, holding a vector there: more matches are ranked until `k` qualify (exact, like the filter)."""
    wanted = k if space is None else 4 * k
    while True:
        rows = catalog.search_text(query, *condition, wanted)
        if space is None:
            return rows
        inside = set(space.contains(np.fromiter((key for key, _ in rows), dtype=np.int64)).tolist())
        kept = [(key, score) for key, score in rows if key in inside]
        if len(kept) >= k or len(rows) < wanted:
            return kept[:k]
        wanted *= 4
