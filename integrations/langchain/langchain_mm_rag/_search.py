"""Search helpers of the vector store that need no store: exact callable filters, relevance scores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from langchain_core.documents import Document

from mm_rag.errors import InvalidInputError

Scored = TypeVar("Scored")
# A callable filter is applied to this many candidates per k at first, widening by the same factor.
WIDEN_FACTOR = 4
MIN_CANDIDATES = 20


def filter_exactly(
    search: Callable[[int], list[tuple[Document, Scored]]],
    keep: Callable[[Document], bool],
    k: int,
    available: int,
) -> list[tuple[Document, Scored]]:
    """The first `k` results of `search(n)` (best first) that `keep` accepts.

    Asks for more candidates, `WIDEN_FACTOR` times as many each round, until `k` pass or all `available`
    candidates have been looked at, so a selective predicate never yields fewer than ``min(k, passing)``.
    """
    wanted = min(max(WIDEN_FACTOR * k, MIN_CANDIDATES), available)
    while True:
        kept = [(document, scored) for document, scored in search(wanted) if keep(document)]
        if len(kept) >= k or wanted >= available:
            return kept[:k]
        wanted = min(wanted * WIDEN_FACTOR, available)


def similarity_relevance(score: float) -> float:
    """Cosine (or inner product of normalised vectors) in [-1, 1] → relevance in [0, 1]."""
    return float(min(1.0, max(0.0, (1.0 + float(score)) / 2.0)))


def distance_relevance(score: float) -> float:
    """An ``l2`` space's score (the negated Euclidean distance) → relevance in (0, 1]."""
    return float(1.0 / (1.0 + max(0.0, -float(score))))


def check_lengths(name: str, values: Sequence[object] | None, count: int) -> None:
    if values is not None and len(values) != count:
        raise InvalidInputError(f"{name}: {len(values)} given for {count} items")
