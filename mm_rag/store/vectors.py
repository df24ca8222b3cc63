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
