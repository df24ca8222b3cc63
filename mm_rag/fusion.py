"""Fusing ranked lists into one: the fusions, their constants, and relevance floors.

`MultimodalRetriever` fuses the rankings of every space it searched; `fuse_rankings` fuses any rankings of one
collection (the LangChain and LlamaIndex stores use it for their hybrid search). Three fusions, each ranking
times its weight:

- ``"convex"`` (the default): each ranking's scores divided by its best, with cosine and BM25 counted from 0
  (nothing in common), summed: the convex combination of Bruch et al. (2023). A strong keyword match keeps its
  lead over weak ones, and a ranking of near-equal weak hits is not spread from 0 to 1.
- ``"rrf"``: reciprocal-rank fusion (Cormack et al., 2009), ``1 / (rrf_k + rank)``: ranks only.
- ``"relative"``: relative-score fusion, each ranking min-max normalised to [0, 1].

A keyword hit with a nil BM25 score (`MIN_BM25`) enters no fusion: it matched only words half the records hold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Literal

from mm_rag.errors import InvalidInputError
from mm_rag.records import LEXICAL, Hit

Fusion = Literal["rrf", "relative", "convex"]
FUSIONS = ("rrf", "relative", "convex")
# Measured on the retrieval-quality set of tests/test_retrieval_quality.py (benchmarks/README.md): the convex
# combination is the one fusion whose hybrid matches the better of dense and keywords on every subset; RRF and
# relative-score fusion each lose a question or two to a record that is second in both rankings.
DEFAULT_FUSION: Fusion = "convex"
FUSION_HELP = (
    "convex: scores divided by each ranking's best, summed; rrf: reciprocal-rank fusion; relative: scores min-max"
    " normalised per ranking."
)
MIN_SCORE_HELP = (
    "Drop hits scoring below a floor: a number applies to every embedding space (cosine); an object sets floors"
    ' per space, "lexical" for BM25.'
)
# The constant of reciprocal-rank fusion (Cormack et al., 2009): damps the weight of the very first ranks.
RRF_K = 60
# FTS5 floors a word's idf at 1e-6 when half the records or more hold it, so a keyword hit scoring below this
# matched only such words (in a store too small for `MultimodalStore.keywords` to leave them out): it ranks
# nothing and enters no fusion.
MIN_BM25 = 1e-3


def fuse_rankings(
    rankings: Sequence[Sequence[Hit]],
    weights: Sequence[float] | None = None,
    fusion: Fusion = DEFAULT_FUSION,
    rrf_k: float = RRF_K,
) -> list[tuple[Hit, float]]:
    """Several rankings of one collection (say, a dense and a keyword search) as one: (hit, fused score), best first.

    The fusion is `MultimodalRetriever`'s (convex combination, reciprocal ranks or relative scores), each
    ranking times its weight (default 1 each); a record found by several rankings appears once, with the
    hit of the ranking where it ranked best, and equal fused scores go to the higher raw score. Keyword hits
    with a nil BM25 score (see `MIN_BM25`) are left out.
    """
    weights = [1.0] * len(rankings) if weights is None else [float(weight) for weight in weights]
    if len(weights) != len(rankings):
        raise InvalidInputError(f"fuse_rankings: {len(weights)} weights for {len(rankings)} rankings")
    check_fusion("fuse_rankings", fusion, rrf_k)
    rankings = [[hit for hit in hits if hit.space != LEXICAL or hit.score >= MIN_BM25] for hits in rankings]
    scores: dict[str, float] = {}
    best: dict[str, Hit] = {}
    for hits, weight in zip(rankings, weights):
        if not hits or weight == 0:  # a ranking weighed 0 adds no candidates either (alpha=1: dense only)
            continue
        low, high = bounds(fusion, "bm25" if hits[0].space == LEXICAL else "cosine", hits)
        for rank, hit in enumerate(hits):
            key = hit.record.id
            scores[key] = scores.get(key, 0.0) + weight * contribution(fusion, rrf_k, rank, hit.score, low, high)
            if key not in best or rank < best[key].rank:
                best[key] = hit
    order = sorted(scores, key=lambda key: (-scores[key], -best[key].score, key))
    return [(best[key], scores[key]) for key in order]


def bounds(fusion: Fusion, metric: str, hits: Sequence[Hit]) -> tuple[float, float]:
    """The scores that a ranking's hits are normalised between: its own lowest and highest (``"relative"``),
    or, for ``"convex"``, the lowest a score can mean anything (0 for cosine and BM25: nothing in common) and
    the ranking's highest, so that a ranking of near-equal weak hits does not spread them from 0 to 1."""
    high = max(hit.score for hit in hits)
    if fusion == "convex" and metric in ("cosine", "bm25"):
        return 0.0, high
    return min(hit.score for hit in hits), high


def contribution(fusion: Fusion, rrf_k: float, rank: int, score: float, low: float, high: float) -> float:
    """What one ranked hit adds to its record's fused score."""
    if fusion == "rrf":
        return 1.0 / (rrf_k + rank + 1)
    if high <= low:  # one hit, or equal scores; for convex, nothing above the floor
        return 1.0 if fusion == "relative" or score > low else 0.0
    return (max(score, low) - low) / (high - low)  # normalised within the ranking: comparable there


EVERY_EMBEDDING_SPACE = "*"


def check_fusion(caller: str, fusion: str, rrf_k: float) -> None:
    if fusion not in FUSIONS:
        hint = " ('weighted' is now 'relative': relative-score fusion)" if fusion == "weighted" else ""
        raise InvalidInputError(f"{caller}: unknown fusion {fusion!r}; expected one of {list(FUSIONS)}{hint}")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, float)) or not 0 <= rrf_k < float("inf"):
        raise InvalidInputError(f"{caller}: rrf_k must be a non-negative number, got {rrf_k!r}")


def parse_min_score(text: str | None) -> float | dict[str, float] | None:
    """A relevance floor as people write it: ``"0.3"`` (every embedding space), ``"text=0.35,lexical=2"`` or
    the JSON object ``{"text": 0.35, "lexical": 2}``; None or blank for none.

    Raises:
        InvalidInputError: text that is none of these, naming it.
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        if text.startswith("{"):
            floors = json.loads(text)
            if not isinstance(floors, dict):
                raise ValueError
        else:
            try:
                return float(text)
            except ValueError:
                floors = {}
                for pair in text.split(","):
                    space, value = pair.split("=")
                    floors[space.strip()] = float(value)
        score_floors(floors)
        return floors
    except (ValueError, InvalidInputError) as error:
        raise InvalidInputError(
            f"min_score {text!r}: expected a number (every embedding space), SPACE=NUMBER pairs separated by"
            ' commas (e.g. "text=0.35,lexical=2"), or a JSON object of them'
        ) from error


def score_floors(min_score: float | Mapping[str, float] | None) -> dict[str, float]:
    """`min_score` as floors by space name (``"*"``: every embedding space)."""
    if min_score is None:
        return {}
    floors = {EVERY_EMBEDDING_SPACE: min_score} if not isinstance(min_score, Mapping) else dict(min_score)
    for space, floor in floors.items():
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or math.isnan(floor):
            where = "" if space == EVERY_EMBEDDING_SPACE else f"[{space!r}]"
            raise InvalidInputError(f"MultimodalRetriever: min_score{where} must be a number, got {floor!r}")
    return {space: float(floor) for space, floor in floors.items()}
