"""Maximal marginal relevance over candidate vectors: relevant results that do not repeat each other."""

from __future__ import annotations

import numpy as np

DEFAULT_MMR_THRESHOLD = 0.5
DEFAULT_PREFETCH_FACTOR = 4.0


def select_diverse(query: np.ndarray, candidates: np.ndarray, k: int, threshold: float) -> list[int]:
    """Pick up to `k` rows of `candidates`, each maximising ``threshold * relevance - (1 - threshold) * redundancy``.

    Relevance is the cosine similarity to `query`, redundancy the highest cosine similarity to a row already
    picked. ``threshold=1`` ranks by relevance alone; lower values trade relevance for diversity. Ties go to
    the earlier row, so candidates ordered best-first keep that order when nothing else decides.
    """
    if not len(candidates) or k < 1:
        return []
    rows = _normalised(np.asarray(candidates, dtype=np.float32))
    relevance = rows @ _normalised(np.asarray(query, dtype=np.float32)[None, :])[0]
    similarity = rows @ rows.T
    redundancy = np.zeros(len(rows), dtype=np.float32)
    available = np.ones(len(rows), dtype=bool)
    chosen: list[int] = []
    for _ in range(min(k, len(rows))):
        score = np.where(available, threshold * relevance - (1 - threshold) * redundancy, -np.inf)
        best = int(np.argmax(score))
        chosen.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, similarity[best])
    return chosen


def _normalised(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
