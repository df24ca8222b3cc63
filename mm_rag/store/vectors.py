"""The raw vectors of one space, kept beside its Faiss index.

Faiss indices are lossy (PQ) or cannot delete (HNSW), so each space keeps its exact float32 vectors here:
they rebuild or retrain the index, answer selective filtered searches exactly, and feed MMR. Keys come
from a monotonic counter, so appending keeps `keys` sorted and lookups are a binary search.
"""

from __future__ import annotations

import numpy as np


class VectorTable:
    """Sorted int64 keys with one float32 row each; deleted rows are masked until `compact`."""

    def __init__(self, dim: int, keys: np.ndarray | None = None, vectors: np.ndarray | None = None) -> None:
        self.dim = dim
        self._keys = np.empty(0, dtype=np.int64) if keys is None else keys
        self._vectors = np.empty((0, dim), dtype=np.float32) if vectors is None else vectors
        self._size = len(self._keys)
        self._alive = np.ones(self._size, dtype=bool)
        self._live = self._size

    def __len__(self) -> int:
        return self._live

    def last_key(self) -> int:
        """The largest key this table has held (live or deleted), -1 when it never held one."""
        return int(self._keys[self._size - 1]) if self._size else -1

    @property
    def keys(self) -> np.ndarray:
        """Keys of the live rows, ascending."""
        return self._keys[: self._size][self._alive[: self._size]]

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) of every live row, ascending by key: views of the table while no row is deleted (a
        search scans them without copying), else copies."""
        if self._live == self._size:
            return self._keys[: self._size], self._vectors[: self._size]
        mask = self._alive[: self._size]
        return self._keys[: self._size][mask], self._vectors[: self._size][mask]

    def append(self, keys: np.ndarray, vectors: np.ndarray, adopt: bool = False) -> None:
        """Add rows whose keys are all greater than every key already here.

        With `adopt`, an empty table keeps `vectors` itself rather than a copy (the caller gives it up).
        """
        if len(keys) == 0:
            return
        if self._size and keys[0] <= self._keys[self._size - 1]:
            raise ValueError("VectorTable keys must grow monotonically")
        if adopt and self._size == 0 and vectors.flags.c_contiguous and vectors.dtype == np.float32:
            self._keys, self._vectors = np.array(keys, dtype=np.int64), vectors
            self._size = self._live = len(keys)
            self._alive = np.ones(self._size, dtype=bool)
            return
        need = self._size + len(keys)
        if need > len(self._keys) or not (self._vectors.flags.writeable and self._keys.flags.writeable):
            capacity = max(need, int(len(self._keys) * 1.5) + 1024)
            self._keys = _grow(self._keys, self._size, (capacity,))
            self._vectors = _grow(self._vectors, self._size, (capacity, self.dim))
            self._alive = _grow(self._alive, self._size, (capacity,))
        self._keys[self._size : need] = keys
        self._vectors[self._size : need] = vectors
        self._alive[self._size : need] = True
        self._size = need
        self._live += len(keys)

    def between(self, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) of the live rows with keys from `first` to `last`, ascending (copies)."""
        stored = self._keys[: self._size]
        start, stop = np.searchsorted(stored, [first, last + 1])
        alive = self._alive[start:stop]
        return stored[start:stop][alive], self._vectors[start:stop][alive]

    def all_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, vectors, alive) of every row, deleted ones included: views, for a scan that copies nothing."""
        return self._keys[: self._size], self._vectors[: self._size], self._alive[: self._size]

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Keys of about `count` live rows drawn at random (a deleted row drawn is left out): all when fewer."""
        if self._size <= count:
            return self.keys
        rows = rng.integers(0, self._size, count)
        return self._keys[rows[self._alive[rows]]]

    def rows(self, keys: np.ndarray) -> np.ndarray:
        """Row positions of those `keys` that are live (others are dropped)."""
        keys = np.asarray(keys, dtype=np.int64)
        if self._size == 0 or len(keys) == 0:
            return np.empty(0, dtype=np.int64)
        stored = self._keys[: self._size]
        positions = np.minimum(np.searchsorted(stored, keys), self._size - 1)
        positions = positions[stored[positions] == keys]
        return positions[self._alive[positions]]

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Keys among `keys` that are live here."""
        return self._keys[self.rows(keys)]

    def take(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) of the live rows among `keys`, ascending by key."""
        rows = np.sort(self.rows(keys))
        return self._keys[rows], self._vectors[rows]

    def delete(self, keys: np.ndarray) -> np.ndarray:
        """Mask the rows of `keys`; returns the keys that were live."""
        rows = self.rows(keys)
        self._alive[rows] = False
        self._live -= len(rows)
        return self._keys[rows]

    def compact(self) -> None:
        """Drop masked rows so the arrays hold exactly the live rows."""
        keys, vectors = self.live_vectors()
        self._keys, self._vectors = keys.copy(), np.ascontiguousarray(vectors)
        self._size = self._live = len(keys)
        self._alive = np.ones(self._size, dtype=bool)


def _grow(array: np.ndarray, used: int, shape: tuple[int, ...]) -> np.ndarray:
    grown = np.empty(shape, dtype=array.dtype)
    grown[:used] = array[:used]
    return grown


class RecentPart:
    """The vectors a space keeps beside its main index: committed segments' rows, and rows added since.

    Small segments and new rows share one in-memory `VectorTable` (`memory`); a segment read memory-mapped (a
    large file) is a table of its own over the mapping (`mapped`), so that processes sharing a store share its
    pages instead of each holding a copy. Every segment covers its own range of keys, so the tables never
    hold the same key; searches scan each table (`tables`).
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.memory = VectorTable(dim)
        self.mapped: list[VectorTable] = []

    def tables(self) -> list[VectorTable]:
        return [table for table in (*self.mapped, self.memory) if len(table)]

    def __len__(self) -> int:
        return len(self.memory) + sum(len(table) for table in self.mapped)

    def append(self, keys: np.ndarray, vectors: np.ndarray, adopt: bool = False) -> None:
        """Add rows whose keys are greater than every key here: a memory-mapped segment's as a table of its own."""
        if isinstance(vectors, np.memmap):
            self.mapped.append(VectorTable(self.dim, keys, vectors))
        else:
            self.memory.append(keys, vectors, adopt)

    def last_key(self) -> int:
        return max((table.last_key() for table in (*self.mapped, self.memory)), default=-1)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        return _merged([table.contains(keys) for table in self.tables()])

    def take(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _merged_rows([table.take(keys) for table in self.tables()], self.dim)

    def delete(self, keys: np.ndarray) -> np.ndarray:
        return _merged([table.delete(keys) for table in self.tables()])

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) of every live row, ascending: a copy wherever more than one table holds rows."""
        tables = self.tables()
        if len(tables) == 1:
            return tables[0].live_vectors()
        return _merged_rows([table.live_vectors() for table in tables], self.dim)

    def between(self, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        return _merged_rows([table.between(first, last) for table in self.tables()], self.dim)

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        total = max(1, len(self))
        return np.concatenate(
            [np.empty(0, dtype=np.int64)]
            + [table.sample(round(count * len(table) / total), rng) for table in self.tables()]
        )


def _merged(parts: list[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    return np.sort(np.concatenate([np.empty(0, dtype=np.int64), *parts]))


def _merged_rows(parts: list[tuple[np.ndarray, np.ndarray]], dim: int) -> tuple[np.ndarray, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    keys = np.concatenate([np.empty(0, dtype=np.int64), *(keys for keys, _ in parts)])
    vectors = np.concatenate([np.empty((0, dim), dtype=np.float32), *(vectors for _, vectors in parts)])
    order = np.argsort(keys, kind="stable")
    return keys[order], vectors[order]
