"""Search helpers of the vector store that need no store: exact callable filters, MMR, relevance scores."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from langchain_core.documents import Document

from mm_rag.errors import InvalidInputError

# A callable filter is applied to this many candidates per k at first, widening by the same factor.
WIDEN_FACTOR = 4
MIN_CANDIDATES = 20


def filter_exactly(
    search: Callable[[int], list[tuple[Document, float]]],
    keep: Callable[[Document], bool],
    k: int,
    available: int,
) -> list[tuple[Document, float]]:
    """The first `k` results of `search(n)` (best first) that `keep` accepts.

    Asks for more candidates, `WIDEN_FACTOR` times as many each round, until `k` pass or all `available`
    candidates have been looked at, so a selective predicate never yields fewer than ``min(k, passing)``.
    """
    wanted = min(max(WIDEN_FACTOR * k, MIN_CANDIDATES), available)
    while True:
        kept = [(document, score) for document, score in search(wanted) if keep(document)]
        if len(kept) >= k or wanted >= available:
            return kept[:k]
        wanted = min(wanted * WIDEN_FACTOR, available)


def mmr_order(query: np.ndarray, candidates: np.ndarray, k: int, lambda_mult: float) -> list[int]:
    """Maximal marginal relevance: indices of up to `k` rows of `candidates`, in the order picked.

    Each pick maximises ``lambda_mult * sim(query, c) - (1 - lambda_mult) * max sim(c, picked)`` with cosine
    similarity, so ``lambda_mult=1`` is plain similarity order and ``0`` favours diversity only.
    """
    if not 0.0 <= lambda_mult <= 1.0:
        raise InvalidInputError(f"lambda_mult must be in [0, 1], got {lambda_mult!r}")
    if not len(candidates) or k < 1:
        return []
    rows = _normalised(np.asarray(candidates, dtype=np.float64))
    relevance = rows @ _normalised(np.asarray(query, dtype=np.float64)[None, :])[0]
    picked: list[int] = [int(np.argmax(relevance))]
    redundancy = rows @ rows[picked[0]]
    while len(picked) < min(k, len(rows)):
        gain = lambda_mult * relevance - (1.0 - lambda_mult) * redundancy
        gain[picked] = -np.inf
        choice = int(np.argmax(gain))
        picked.append(choice)
        redundancy = np.maximum(redundancy, rows @ rows[choice])
    return picked


def _normalised(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def similarity_relevance(score: float) -> float:
    """Cosine (or inner product of normalised vectors) in [-1, 1] → relevance in [0, 1]."""
    return float(min(1.0, max(0.0, (1.0 + float(score)) / 2.0)))


def distance_relevance(score: float) -> float:
    """An ``l2`` space's score (the negated Euclidean distance) → relevance in (0, 1]."""
    return float(1.0 / (1.0 + max(0.0, -float(score))))


def check_lengths(name: str, values: Sequence[object] | None, count: int) -> None:
    if values is not None and len(values) != count:
        raise InvalidInputError(f"{name}: {len(values)} given for {count} items")
