"""Maximal marginal relevance (Carbonell & Goldstein, 1998): relevant results that do not repeat each other.

One implementation for the retriever and both framework integrations.
"""

from __future__ import annotations

import numpy as np

from mm_rag.errors import InvalidInputError


def mmr_order(relevance: np.ndarray, similarity: np.ndarray, trade_off: float, limit: int | None = None) -> list[int]:
    """Indices in maximal-marginal-relevance order: each next item maximises
    ``trade_off * relevance - (1 - trade_off) * (its highest similarity to the items already chosen)``.

    ``trade_off=1`` keeps the relevance order; lower values trade relevance for variety. Ties go to the
    earlier item, so candidates given best-first keep their order when nothing else decides.
    """
    if not 0.0 <= trade_off <= 1.0:
        raise InvalidInputError(f"MMR trade-off (lambda) must be in [0, 1], got {trade_off!r}")
    relevance = np.asarray(relevance, dtype=np.float64)
    count = len(relevance) if limit is None else max(0, min(limit, len(relevance)))
    chosen: list[int] = []
    closest = np.zeros(len(relevance))  # no penalty before the first choice
    available = np.ones(len(relevance), dtype=bool)
    for step in range(count):
        value = np.where(available, trade_off * relevance - (1.0 - trade_off) * closest, -np.inf)
        best = int(np.argmax(value))
        chosen.append(best)
        available[best] = False
        row = np.asarray(similarity[best], dtype=np.float64)
        closest = row if step == 0 else np.maximum(closest, row)
    return chosen


def mmr_select(query: np.ndarray, candidates: np.ndarray, k: int, trade_off: float) -> list[int]:
    """Up to `k` rows of `candidates` in MMR order, with cosine similarity for relevance (to `query`) and
    redundancy (between rows); zero rows are similar to nothing."""
    rows = _normalised(np.asarray(candidates, dtype=np.float64))
    if not len(rows) or k < 1:
        if not 0.0 <= trade_off <= 1.0:
            raise InvalidInputError(f"MMR trade-off (lambda) must be in [0, 1], got {trade_off!r}")
        return []
    relevance = rows @ _normalised(np.asarray(query, dtype=np.float64)[None, :])[0]
    return mmr_order(relevance, rows @ rows.T, trade_off, k)


def _normalised(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
