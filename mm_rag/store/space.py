"""One embedding space: a Faiss index, the exact vectors behind it, and the plan for each search."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mm_rag.errors import InvalidInputError
from mm_rag.store import indexing, ondisk
from mm_rag.store.config import SpaceConfig
from mm_rag.store.vectors import RecentPart, VectorTable

if TYPE_CHECKING:
    import faiss

    from mm_rag.store.manifest import SpaceFiles

# Below this many candidates a filtered search scans exactly the matching vectors instead of the index:
# cheaper than walking an index that mostly holds excluded vectors, and exact.
EXACT_SCAN_LIMIT = 20_000
# Compressed codes (PQ, SQ) rank only approximately: a search fetches this many candidates per result and
# re-scores them with the exact vectors kept beside the index (the idea of Faiss's IndexRefine), which
# recovers most of the recall the codes lose for the price of a few hundred dot products per query.
REFINE_FACTOR = 10
# HNSW cannot delete in place; rebuild once this share of its entries is dead.
TOMBSTONE_REBUILD_RATIO = 0.3
# An unfiltered search over an index holding up to this many deleted entries asks it for that many more
# results and drops the dead ones: exact, and far cheaper than an `IDSelector` (Flat then leaves BLAS).
OVERFETCH_LIMIT = 1024
# Vectors added after the main part was saved stay in `recent` (saved as segments, searched exactly) until
# they outgrow this share of the main part (and `FOLD_MIN`), then join its index: an exact scan costs what a
# Flat index costs per vector, so Flat keeps a larger recent part than indices that search sublinearly.
FOLD_SHARE_FLAT = 0.25
FOLD_SHARE = 0.02
FOLD_MIN = 4096


class Space:
    """A space's index and vectors. Not thread-safe by itself: the store serialises writers."""

    def __init__(
        self, config: SpaceConfig, table: VectorTable | None = None, index: Any = None, spec: str | None = None
    ):
        self.config = config
        self.table = table if table is not None else VectorTable(config.dim)
        self.index: faiss.Index | None = index
        self.spec = spec  # factory string of the index built (None until one is)
        self.mapped = False  # index memory-mapped read-only; loaded fully before its first change
        self.ondisk = False  # inverted lists in a mapped .ivfdata file (see `ondisk`); copied to memory on change
        self.serving: Any = None  # a sharded copy of the index answering searches until the next change
        self._serving_parts: list[Any] = []
        self.tombstones = np.empty(0, dtype=np.int64)  # keys still in the index (mapped, or HNSW) but deleted
        self.removes_in_place = True
        # Persistence (see `mm_rag.store.segments`): the committed files holding the main part as it is
        # (None once it changed), vectors added since in `recent` (keys above the main part's), the keys those
        # files hold that were deleted since, and the first key no committed file holds.
        self.recent = RecentPart(config.dim)
        self.files: SpaceFiles | None = None
        self.dead = np.empty(0, dtype=np.int64)
        self.saved_dead = self.dead
        self.saved_below = 0
        if index is not None:
            self.removes_in_place = indexing.can_remove(index)
            if not self.removes_in_place:
                self.tombstones = np.setdiff1d(indexing.index_keys(index), self.table.keys, assume_unique=True)
        elif table is None or not len(self.table):
            self.rebuild()

    # --- writes -----------------------------------------------------------------------------------------
    def prepare(self, vectors: Any, count: int, label: str) -> np.ndarray:
        """Validate and normalise vectors into a new array; raises `InvalidInputError` naming the problem."""
        return self.normalised(*self.check(vectors, count, label))

    def check(self, vectors: Any, count: int, label: str) -> tuple[np.ndarray, np.ndarray]:
        """Validate vectors for this space: (them as float32, possibly the caller's own array; their squared
        norms in float64). Raises `InvalidInputError` naming the problem."""
        name, dim = self.config.name, self.config.dim
        try:
            array = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"{label}: vectors for space {name!r} are not numeric: {error}") from error
        if array.ndim == 1 and count == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != dim:
            raise InvalidInputError(f"{label}: space {name!r} takes vectors of dim {dim}, got shape {array.shape}")
        if array.shape[0] != count:
            raise InvalidInputError(f"{label}: {count} items but {array.shape[0]} vectors for space {name!r}")
        # Squared norms accumulated in float64: float32 squares overflow (|x| > ~1e19) or underflow
        # (|x| < ~1e-19); NaN and inf show up here too, without a pass over every element.
        squares = np.einsum("ij,ij->i", array, array, dtype=np.float64)
        broken = ~np.isfinite(squares)
        if broken.any():
            raise InvalidInputError(f"{label}: vector {int(np.argmax(broken))} for space {name!r} has NaN or inf")
        if self.config.metric == "cosine" and (squares == 0).any():
            raise InvalidInputError(f"{label}: vector {int(np.argmin(squares))} for cosine space {name!r} is all zeros")
        return array, squares

    def normalised(self, array: np.ndarray, squares: np.ndarray) -> np.ndarray:
        """Checked vectors (see `check`) as a new C-contiguous float32 array, L2-normalised for cosine."""
        if self.config.metric != "cosine":
            return np.array(array, dtype=np.float32, order="C", copy=True)  # owned: the table adopts it
        return np.ascontiguousarray(array / np.sqrt(squares).astype(np.float32)[:, None], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.table) + len(self.recent)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Keys among `keys` with a live vector here, ascending."""
        found = self.table.contains(keys)
        return np.union1d(found, self.recent.contains(keys)) if len(self.recent) else found

    def sample_keys(self, count: int) -> np.ndarray:
        """Keys of about `count` live vectors drawn at random, the same ones while the space is unchanged."""
        rng = np.random.default_rng(len(self))
        main = round(count * len(self.table) / max(1, len(self)))
        return np.concatenate([self.table.sample(main, rng), self.recent.sample(count - main, rng)])

    def take(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) of the live vectors among `keys`, ascending by key."""
        main = self.table.take(keys)
        if not len(self.recent):
            return main
        recent = self.recent.take(keys)
        return np.concatenate([main[0], recent[0]]), np.concatenate([main[1], recent[1]])

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Append prepared vectors under new keys (greater than every key already here).

        While the main part is as its committed files hold it, they go to `recent`, so that a save writes them
        alone; past the fold limit they join the main part.
        """
        if self.files is not None and self.index is not None:
            self.recent.append(keys, vectors, adopt=True)
            share = FOLD_SHARE_FLAT if self.spec == "Flat" else FOLD_SHARE
            if len(self.recent) > max(FOLD_MIN, share * len(self.table)):
                self.fold()
            return
        self.fold()
        self._add_to_main(keys, vectors)

    def fold(self) -> None:
        """Move the recent vectors into the main part and its index (the next save rewrites it)."""
        if len(self.recent):
            keys, vectors = self.recent.live_vectors()
            self.recent = RecentPart(self.config.dim)
            self._add_to_main(keys, np.ascontiguousarray(vectors))

    def _add_to_main(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self.unshard()
        self.files = None
        if self.index is not None:
            self._materialise()  # before appending: the rebuild must not already hold the new vectors
        self.table.append(keys, vectors, adopt=True)
        if self.index is not None:
            self.index.add_with_ids(vectors, keys)
        self._maintain()

    def delete(self, keys: np.ndarray) -> None:
        """Remove the vectors of `keys`; keys without a vector here are ignored."""
        gone = self.table.delete(keys)
        gone_recent = self.recent.delete(keys) if len(self.recent) else gone[:0]
        if self.files is not None:  # the committed files still hold them: the next save records them dead
            saved = np.concatenate([gone, gone_recent[gone_recent < self.saved_below]])
            self.dead = np.union1d(self.dead, saved)
        if len(gone) and self.index is not None:
            self.unshard()
            self._forget(gone)

    def _forget(self, gone: np.ndarray) -> None:
        """Take deleted main-part keys out of its index: in place where the index can, else as tombstones."""
        if self.mapped or not self.removes_in_place:  # a mapped index is never written to
            self.tombstones = np.union1d(self.tombstones, gone)
            if not self.mapped and len(self.tombstones) > TOMBSTONE_REBUILD_RATIO * max(1, self.index.ntotal):
                self.rebuild()
            return
        import faiss

        self.index.remove_ids(faiss.IDSelectorBatch(gone))

    def clear(self) -> None:
        self.unshard()
        self.table = VectorTable(self.config.dim)
        self.recent = RecentPart(self.config.dim)
        self.spec = None
        self.rebuild()

    def _maintain(self) -> None:
        """Train once enough vectors exist; move an ``auto`` space up the size/memory rule as it grows."""
        if self.index is None:
            self.rebuild()
        elif self.config.index == "auto":
            wanted = indexing.choose_index(len(self.table), self.config.dim, self.config.memory_budget)
            if indexing.tier(wanted) > indexing.tier(self.spec or "Flat"):
                self.rebuild(wanted)

    def rebuild(self, spec: str | None = None) -> None:
        config = self.config
        if spec is None:
            spec = self.spec or (
                config.index
                if config.index != "auto"
                else indexing.choose_index(len(self.table), config.dim, config.memory_budget)
            )
        if len(self.recent):  # one index over every vector: the recent ones join the main part
            self.table.append(*self.recent.live_vectors())
            self.recent = RecentPart(config.dim)
        keys, vectors = self.table.live_vectors()
        self.index = indexing.build(spec, config.dim, config.metric, keys, vectors)
        self.spec = spec
        self.files = None
        self.mapped = self.ondisk = False
        self.unshard()
        self.tombstones = np.empty(0, dtype=np.int64)
        self.removes_in_place = self.index is None or indexing.can_remove(self.index)

    def _materialise(self) -> None:
        if self.ondisk:  # keep the trained quantizer: copy the lists, never write the committed data file
            ondisk.load_lists(self.index)
            self.mapped = self.ondisk = False
            if self.removes_in_place and len(self.tombstones):
                import faiss

                self.index.remove_ids(faiss.IDSelectorBatch(self.tombstones))
                self.tombstones = np.empty(0, dtype=np.int64)
        elif self.mapped:
            self.rebuild(self.spec)

    # --- sharded serving --------------------------------------------------------------------------------
    def shard(self, shards: int, gpus: bool = False) -> None:
        """Answer searches through a threaded `faiss.IndexShards` of `shards` sub-indices until the next change.

        Only IVF indices split (by entries of every inverted list, sharing the quantizer), so results equal
        the unsharded index's. With `gpus`, the index is instead spread over every GPU (faiss-gpu only).
        """
        import faiss

        if self.index is None or faiss.try_extract_index_ivf(self.index) is None:
            raise InvalidInputError(f"space {self.config.name!r}: only IVF indices serve sharded, not {self.spec}")
        if gpus:
            self.serving, self._serving_parts = ondisk.to_gpus(self.index), []
        else:
            self.serving, self._serving_parts = ondisk.shard_ivf(self.index, shards)

    def unshard(self) -> None:
        """Search the index itself again (drops the sharded copy)."""
        self.serving, self._serving_parts = None, []

    # --- search -----------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` (scores, keys) per prepared query, higher score first, padded with (-inf, -1); at most
        as many columns as there are candidates, however large `k` is.

        `allowed` restricts the search to those keys (from a compiled filter); it is exact whenever few keys
        match or the index is Flat, and never returns fewer than min(k, matches) hits. The recent vectors are
        scanned exactly and their hits merged with the main part's by score.
        """
        scores, keys = self._search_main(queries, k, allowed)
        if not len(self.recent) or k <= 0:
            return scores, keys
        found = [(scores, keys)]
        for table in self.recent.tables():  # a memory-mapped segment is scanned where it lies
            inside = None if allowed is None else table.contains(allowed)
            if inside is None or len(inside):
                found.append(self._exact_scan(queries, k, inside, table))
        scores, keys = np.hstack([s for s, _ in found]), np.hstack([kk for _, kk in found])
        order = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, len(self))]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(keys, order, axis=1)

    def _search_main(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        nq = len(queries)
        candidates = len(self.table) if allowed is None else len(allowed := self.table.contains(allowed))
        if candidates == 0 or k <= 0:
            return np.full((nq, max(k, 0)), -np.inf, dtype=np.float32), np.full((nq, max(k, 0)), -1, dtype=np.int64)
        k = min(k, candidates)  # a huge k must not make Faiss allocate k results per query
        limit = EXACT_SCAN_LIMIT
        if self.spec == "Flat" and nq <= 4:
            # Flat with a bitmap selector is exact too; for a few queries it beats gathering (copying) many rows
            limit = min(limit, len(self.table) // 64)
        exact_scan = self.index is None or (allowed is not None and candidates <= limit)
        if not exact_scan:
            fetch = min(candidates, k * REFINE_FACTOR) if indexing.compresses(self.spec) else k
            scores, keys = self._index_search(queries, fetch, allowed, candidates)
            if fetch > k:
                scores, keys = self._refine(queries, keys, k)
            short = (keys[:, : min(k, candidates)] < 0).any(axis=1)
            if short.any():  # rescan only the queries the index left short: an answer never depends on its batch
                scores[short], keys[short] = self._exact_scan(queries[short], k, allowed)
            return scores, keys
        return self._exact_scan(queries, k, allowed)

    def _index_search(self, queries, k, allowed, candidates) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        keep_alive: list[Any] = []
        selector = None
        dead = len(self.tombstones)
        if allowed is not None:
            selector = indexing.bitmap_selector(allowed, keep_alive)
        elif dead and (dead > OVERFETCH_LIMIT or k + dead > self.index.ntotal):
            selector = faiss.IDSelectorNot(indexing.bitmap_selector(self.tombstones, keep_alive))
        fetch = k + dead if dead and selector is None and allowed is None else k
        # Overfetching, the index is searched as if the dead entries were gone: for `k`, not widened.
        selectivity = 1.0 if fetch > k else candidates / max(1, self.index.ntotal)
        params = indexing.search_parameters(self.index, k, selectivity, selector)
        target = self.index if self.serving is None else self.serving
        distances, keys = target.search(queries, fetch, params=params)
        del keep_alive
        scores = self._scores(distances, keys)
        if fetch == k:
            return scores, keys
        live = (keys >= 0) & ~np.isin(keys, self.tombstones)
        order = np.argsort(~live, axis=1, kind="stable")[:, :k]  # the live hits first, still best first
        alive = np.take_along_axis(live, order, axis=1)
        scores, keys = np.take_along_axis(scores, order, axis=1), np.take_along_axis(keys, order, axis=1)
        return np.where(alive, scores, -np.inf).astype(np.float32), np.where(alive, keys, -1)

    def _refine(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Re-score each query's candidates with the exact vectors and keep the best `k`."""
        found = np.unique(candidates[candidates >= 0])
        keys, vectors = self.table.take(found)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        best = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, wanted) in enumerate(zip(queries, candidates)):
            wanted = wanted[wanted >= 0]
            at = np.searchsorted(keys, wanted)
            live = (at < len(keys)) & (keys[np.minimum(at, len(keys) - 1)] == wanted) if len(keys) else at < 0
            rows, wanted = at[live], wanted[live]
            if self.config.metric == "l2":
                exact = -np.linalg.norm(vectors[rows] - query, axis=1)
            else:
                exact = vectors[rows] @ query
            order = np.argsort(-exact, kind="stable")[:k]
            scores[row, : len(order)], best[row, : len(order)] = exact[order], wanted[order]
        return scores, best

    def _exact_scan(self, queries, k, allowed, table: VectorTable | None = None) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        table = self.table if table is None else table
        keys, vectors, alive = table.all_rows()
        dead = len(keys) - len(table)
        if allowed is not None or dead > OVERFETCH_LIMIT:
            keys, vectors = table.live_vectors() if allowed is None else table.take(allowed)
            alive, dead = None, 0
        # else every row is scanned in place (a mapped segment is not copied) and deleted ones are dropped
        top = min(k + dead, len(keys))
        metric = indexing.faiss_metric(self.config.metric)
        distances, rows = faiss.knn(queries, np.ascontiguousarray(vectors), top, metric=metric)
        found = np.where(rows >= 0, keys[np.maximum(rows, 0)], -1)
        scores = self._scores(distances, found)
        if dead:
            live = (rows >= 0) & alive[np.maximum(rows, 0)]
            order = np.argsort(~live, axis=1, kind="stable")[:, :k]
            live = np.take_along_axis(live, order, axis=1)
            scores = np.where(live, np.take_along_axis(scores, order, axis=1), -np.inf).astype(np.float32)
            found = np.where(live, np.take_along_axis(found, order, axis=1), -1)
            top = scores.shape[1]
        if top < k:
            pad = ((0, 0), (0, k - top))
            scores = np.pad(scores, pad, constant_values=-np.inf)
            found = np.pad(found, pad, constant_values=-1)
        return scores, found

    def _scores(self, distances: np.ndarray, keys: np.ndarray) -> np.ndarray:
        scores = -np.sqrt(np.maximum(distances, 0)) if self.config.metric == "l2" else distances.astype(np.float32)
        return np.where(keys >= 0, scores, -np.inf).astype(np.float32)
