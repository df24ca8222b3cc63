"""`MultimodalRetriever`: one query (text, image or voice clip) across every space, fused into one ranked list.

Each space is searched once per modality with that modality's own ``k`` and the caller's filter, so a
modality with few records is never crowded out by one with many, and a filter restricts every space alike.
A text query also searches the store's keyword index (BM25, `MultimodalStore.search_text`) in the default
``"hybrid"`` mode: exact names, codes and numbers that embeddings blur come back through it.
The hits of each space are then ranked together where their scores are comparable (see `_rankings`) and the
rankings fused: reciprocal-rank fusion by default (ranks only, so a cosine of 0.3 in the CLIP space and 0.6
in the text space need not be compared), or relative-score fusion (scores min-max normalised per ranking),
each ranking with its weight. A record reached through several rankings appears once, carrying the evidence
of each. Only real matches enter the fusion: query words that carry no information create no keyword match
(`MultimodalStore.keywords`), a keyword hit whose BM25 score is nil is left out, and `min_score` drops hits
below a floor per space.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mm_rag.errors import InvalidInputError
from mm_rag.filters import Filter
from mm_rag.mmr import mmr_order
from mm_rag.records import LEXICAL, MODALITIES, Hit, Modality, Record

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
# hybrid: embeddings and keywords fused; dense: embeddings only; lexical: keywords (BM25) only.
Mode = Literal["hybrid", "dense", "lexical"]
MODES = ("hybrid", "dense", "lexical")
QueryForm = Literal["text", "image", "audio"]

# The constant of reciprocal-rank fusion (Cormack et al., 2009): damps the weight of the very first ranks.
RRF_K = 60
# FTS5 floors a word's idf at 1e-6 when half the records or more hold it, so a keyword hit scoring below this
# matched only such words (in a store too small for `MultimodalStore.keywords` to leave them out): it ranks
# nothing and enters no fusion.
MIN_BM25 = 1e-3


@dataclass(frozen=True, slots=True)
class Evidence:
    """One ranked list that found a result.

    Attributes:
        space: The store space searched.
        query: What was searched: the query's ``"text"``, the query ``"image"``, or the words heard in the
            query ``"audio"`` (a voice query, transcribed).
        rank: 0-based rank of the record in that list.
        score: The space's raw similarity (cosine for cosine spaces; higher is better).
    """

    space: str
    query: QueryForm
    rank: int
    score: float


@dataclass(frozen=True, slots=True)
class Retrieved:
    """A fused result: the record, its fused score, and the evidence of every list that found it.

    Attributes:
        record: The stored record.
        score: Fused score, higher is better; comparable only within one retrieval (see `scores` for the
            raw similarities).
        evidence: The lists that found the record, best first.
    """

    record: Record
    score: float
    evidence: tuple[Evidence, ...]

    @property
    def modality(self) -> Modality:
        return self.record.modality

    @property
    def source(self) -> str | None:
        """Where the content comes from: the media path/URL, else the source document."""
        return self.record.uri or self.record.doc_id

    @property
    def scores(self) -> dict[str, float]:
        """The best raw score of each ranking that found the record: cosine per space, BM25 as ``"lexical"``."""
        best: dict[str, float] = {}
        for e in self.evidence:
            best[e.space] = max(best.get(e.space, e.score), e.score)
        return best

    @property
    def start(self) -> float | None:
        """Start of the time range in seconds (audio and video), if any."""
        return _seconds(self.record.metadata.get("start"))

    @property
    def end(self) -> float | None:
        return _seconds(self.record.metadata.get("end"))

    def explain(self) -> str:
        """Which space and rank produced this result, e.g. ``"text space #1 (0.612); clip space #3 (0.284)"``."""
        return "; ".join(
            f"keywords #{e.rank + 1} (BM25 {e.score:.3f})"
            if e.space == LEXICAL
            else f"{e.space} space #{e.rank + 1} ({e.score:.3f}{'' if e.query == 'text' else ', by ' + e.query})"
            for e in self.evidence
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for the command line and the HTTP service)."""
        record = self.record
        return {
            "id": record.id,
            "modality": record.modality,
            "score": self.score,
            "scores": self.scores,
            "text": record.text,
            "source": self.source,
            "uri": record.uri,
            "doc_id": record.doc_id,
            "start": self.start,
            "end": self.end,
            "metadata": record.metadata,
            "explanation": self.explain(),
            "evidence": [{"space": e.space, "query": e.query, "rank": e.rank, "score": e.score} for e in self.evidence],
        }


@dataclass
class MultimodalRetriever:
    """Retrieves aligned images, transcript moments and passages for a text, image or spoken query.

    Args:
        store: The store to search (filled by `mm_rag.ingest` or by hand).
        clip: The image+text embedder of the store's CLIP space: text queries reach images and keyframes
            through it, and image queries need it.
        text: The text embedder of the store's text space (passages and transcripts).
        transcriber: Turns a spoken query (`audio=`) into text; needed only for voice queries.
        text_k, image_k, audio_k, video_k: Results kept per modality (0 leaves a modality out).
        fusion: ``"convex"`` (the default: a weighted sum of each ranking's scores divided by its best, cosine
            and BM25 counted from 0, the convex combination of Bruch et al., 2023), ``"rrf"`` (reciprocal-rank
            fusion: ``weight / (rrf_k + rank)`` summed) or ``"relative"`` (relative-score fusion: each ranking's
            scores min-max normalised to [0, 1], times its weight).
        weights: Weight of each space in the fusion (default 1 for every space; ``"lexical"`` for keywords).
        rrf_k: The constant of reciprocal-rank fusion: larger values flatten the gap between first places.
        min_score: A relevance floor: hits scoring below it are dropped before fusion. A number applies to every
            embedding space (cosine); a mapping sets a floor per space, ``"lexical"`` for BM25.
        mode: ``"hybrid"`` (embeddings and keywords fused), ``"dense"`` (embeddings only) or ``"lexical"``
            (keywords only: needs no embedder, and no image queries).
        diversity: None, or the MMR trade-off λ in [0, 1] (1: relevance only) to reorder results for variety.
        filter: A filter (see `mm_rag.filters`) applied in every space to every query.
    """

    store: Any
    clip: Any | None = None
    text: Any | None = None
    transcriber: Any | None = None
    text_k: int = 5
    image_k: int = 5
    audio_k: int = 3
    video_k: int = 3
    fusion: Fusion = DEFAULT_FUSION
    weights: Mapping[str, float] = field(default_factory=dict)
    rrf_k: float = RRF_K
    min_score: float | Mapping[str, float] | None = None
    diversity: float | None = None
    filter: Filter | None = None
    mode: Mode = "hybrid"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidInputError(f"MultimodalRetriever: unknown mode {self.mode!r}; expected one of {list(MODES)}")
        if self.clip is None and self.text is None and (self.mode != "lexical" or self.diversity is not None):
            raise InvalidInputError(
                "MultimodalRetriever: give at least one embedder (clip= and/or text=)"
                + ("" if self.mode != "lexical" else "; diversity needs one")
            )
        _check_fusion("MultimodalRetriever", self.fusion, self.rrf_k)
        _floors(self.min_score)  # checked now, not at the first query
        for name in ("text_k", "image_k", "audio_k", "video_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInputError(f"MultimodalRetriever: {name} must be a non-negative integer, got {value!r}")
        if self.diversity is not None and not 0.0 <= self.diversity <= 1.0:
            raise InvalidInputError(f"MultimodalRetriever: diversity must be in [0, 1], got {self.diversity!r}")

    def retrieve(
        self,
        query: str | None = None,
        *,
        image: Any = None,
        audio: Any = None,
        filter: Filter | None = None,
        k: Mapping[Modality, int] | None = None,
    ) -> list[Retrieved]:
        """Search every relevant space and return the fused results, best first.

        Args:
            query: The question or description, as text.
            image: A query image (path, bytes or PIL image), searched in the CLIP space.
            audio: A spoken query (path, bytes or samples), transcribed first and then searched as text
                (joined to `query` when both are given).
            filter: Restricts every space, combined with the retriever's own filter.
            k: Per-modality counts overriding the retriever's, e.g. ``{"image": 10, "text": 0}``.

        Raises:
            InvalidInputError: no query, an empty one, a voice query without a transcriber (or without speech),
                an image query without a CLIP embedder, or a bad `k`.
        """
        counts = self._counts(k)
        text_query = self._text_query(query, audio)
        filters = [f for f in (self.filter, filter) if f]
        form: QueryForm = "audio" if audio is not None and not (query and query.strip()) else "text"
        lists = self._ranked_lists(text_query, form, image, counts, filters)
        fused = self._fuse(lists, counts)
        if self.diversity is not None and len(fused) > 2:
            fused = self._diversify(fused, self.diversity)
        return fused

    __call__ = retrieve

    # --- queries ----------------------------------------------------------------------------------------
    def _counts(self, override: Mapping[Modality, int] | None) -> dict[Modality, int]:
        counts: dict[Modality, int] = {
            "text": self.text_k,
            "image": self.image_k,
            "audio": self.audio_k,
            "video": self.video_k,
        }
        for modality, value in (override or {}).items():
            if modality not in MODALITIES:
                raise InvalidInputError(
                    f"retrieve: unknown modality {modality!r} in k; expected one of {sorted(MODALITIES)}"
                )
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInputError(f"retrieve: k[{modality!r}] must be a non-negative integer, got {value!r}")
            counts[modality] = value
        return counts

    def _text_query(self, query: str | None, audio: Any) -> str | None:
        if query is not None and not isinstance(query, str):
            raise InvalidInputError(f"retrieve: query must be text, got {type(query).__name__}")
        parts = [query.strip()] if query and query.strip() else []
        if audio is not None:
            if self.transcriber is None:
                raise InvalidInputError("retrieve: a spoken query needs a transcriber (transcriber=)")
            heard = self.transcriber.transcribe(audio).text.strip()
            if not heard:
                raise InvalidInputError("retrieve: no speech found in the audio query")
            parts.append(heard)
        if query is not None and not parts:
            raise InvalidInputError("retrieve: the query is empty")
        return " ".join(parts) or None

    def _ranked_lists(
        self, text_query: str | None, form: QueryForm, image: Any, counts: dict[Modality, int], filters: list[Filter]
    ) -> list[tuple[str, QueryForm, Modality, list[Any]]]:
        """Every (space, query form, modality) search, each with the modality's own k and the filters, keeping
        only real matches: hits at or above the space's floor, keyword hits with a BM25 score."""
        if text_query is None and image is None:
            raise InvalidInputError("retrieve: give a query, an image or an audio clip")
        searches: list[tuple[str, QueryForm, np.ndarray]] = []
        spaces = self.store.spaces if self.mode != "lexical" else {}
        if image is not None and self.mode == "lexical":
            raise InvalidInputError("retrieve: an image query needs embeddings; use mode 'dense' or 'hybrid'")
        if text_query is not None:
            if self.text is not None and self.text.space in spaces:
                embed_query = getattr(self.text, "embed_query", None)
                vector = embed_query(text_query) if embed_query else self.text.embed_texts([text_query])[0]
                searches.append((self.text.space, form, vector))
            if self.clip is not None and self.clip.space in spaces:
                searches.append((self.clip.space, form, self.clip.embed_texts([text_query])[0]))
        if image is not None:
            if self.clip is None:
                raise InvalidInputError("retrieve: an image query needs a CLIP embedder (clip=)")
            if self.clip.space in spaces:
                searches.append((self.clip.space, "image", self.clip.embed_images([image])[0]))
        lists = []
        for modality, k in counts.items():
            if not k:
                continue
            condition = {"$and": [*filters, {"modality": modality}]}
            for space, searched, vector in searches:
                hits = self.store.search(space, vector, k, filter=condition)
                lists.append((space, searched, modality, self._above_floor(space, hits)))
            if text_query is not None and self.mode != "dense":
                hits = self.store.search_text(text_query, k, filter=condition)
                if self.mode == "hybrid":  # keywords alone (lexical mode) keep every word match, ranked by BM25
                    hits = [hit for hit in hits if hit.score >= MIN_BM25]
                lists.append((LEXICAL, form, modality, self._above_floor(LEXICAL, hits)))
        return lists

    def _above_floor(self, space: str, hits: list[Any]) -> list[Any]:
        floors = _floors(self.min_score)
        floor = floors.get(space, floors.get(_EVERY_EMBEDDING_SPACE) if space != LEXICAL else None)
        return hits if floor is None else [hit for hit in hits if hit.score >= floor]

    # --- fusion -----------------------------------------------------------------------------------------
    def _fuse(
        self, lists: list[tuple[str, QueryForm, Modality, list[Any]]], counts: dict[Modality, int]
    ) -> list[Retrieved]:
        scores: dict[str, float] = {}
        evidence: dict[str, list[Evidence]] = {}
        records: dict[str, Record] = {}
        for (space, form, _), hits in _rankings(lists).items():
            weight = float(self.weights.get(space, 1.0))
            metric = "bm25" if space == LEXICAL else self.store.spaces[space].metric
            low, high = _bounds(self.fusion, metric, hits)
            for rank, hit in enumerate(hits):
                key = hit.record.id
                scores[key] = scores.get(key, 0.0) + weight * _contribution(
                    self.fusion, self.rrf_k, rank, hit.score, low, high
                )
                evidence.setdefault(key, []).append(Evidence(space, form, rank, hit.score))
                records[key] = hit.record
        # Equal fused scores (say, two first places in different rankings) go to the closer match by raw score.
        best = {key: max(e.score for e in found) for key, found in evidence.items()}
        ranked = sorted(scores, key=lambda key: (-scores[key], -best[key], key))
        kept: dict[str, int] = dict.fromkeys(counts, 0)
        results = []
        for key in ranked:  # a record found in two spaces is one result; each modality keeps its own k
            modality = records[key].modality
            if kept[modality] < counts[modality]:
                kept[modality] += 1
                found = tuple(sorted(evidence[key], key=lambda e: (e.rank, -e.score)))
                results.append(Retrieved(records[key], scores[key], found))
        return results

    def _diversify(self, results: list[Retrieved], trade_off: float) -> list[Retrieved]:
        """Maximal marginal relevance over the fused list, with similarities from one space (CLIP's when
        present: it holds every modality)."""
        space = self.clip.space if self.clip is not None and self.clip.space in self.store.spaces else self.text.space
        ids = [r.record.id for r in results]
        stored = self.store.vectors(space, ids)
        dim = self.store.spaces[space].dim
        vectors = np.stack([stored.get(i, np.zeros(dim, dtype=np.float32)) for i in ids])
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        top = max(r.score for r in results)
        relevance = np.array([r.score / top for r in results]) if top > 0 else np.ones(len(results))
        chosen = mmr_order(relevance, vectors @ vectors.T, trade_off)
        return [results[i] for i in chosen]


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
    _check_fusion("fuse_rankings", fusion, rrf_k)
    rankings = [[hit for hit in hits if hit.space != LEXICAL or hit.score >= MIN_BM25] for hits in rankings]
    scores: dict[str, float] = {}
    best: dict[str, Hit] = {}
    for hits, weight in zip(rankings, weights):
        if not hits or weight == 0:  # a ranking weighed 0 adds no candidates either (alpha=1: dense only)
            continue
        low, high = _bounds(fusion, "bm25" if hits[0].space == LEXICAL else "cosine", hits)
        for rank, hit in enumerate(hits):
            key = hit.record.id
            scores[key] = scores.get(key, 0.0) + weight * _contribution(fusion, rrf_k, rank, hit.score, low, high)
            if key not in best or rank < best[key].rank:
                best[key] = hit
    order = sorted(scores, key=lambda key: (-scores[key], -best[key].score, key))
    return [(best[key], scores[key]) for key in order]


def _bounds(fusion: Fusion, metric: str, hits: Sequence[Hit]) -> tuple[float, float]:
    """The scores that a ranking's hits are normalised between: its own lowest and highest (``"relative"``),
    or, for ``"convex"``, the lowest a score can mean anything (0 for cosine and BM25: nothing in common) and
    the ranking's highest, so that a ranking of near-equal weak hits does not spread them from 0 to 1."""
    high = max(hit.score for hit in hits)
    if fusion == "convex" and metric in ("cosine", "bm25"):
        return 0.0, high
    return min(hit.score for hit in hits), high


def _contribution(fusion: Fusion, rrf_k: float, rank: int, score: float, low: float, high: float) -> float:
    """What one ranked hit adds to its record's fused score."""
    if fusion == "rrf":
        return 1.0 / (rrf_k + rank + 1)
    if high <= low:  # one hit, or equal scores; for convex, nothing above the floor
        return 1.0 if fusion == "relative" or score > low else 0.0
    return (max(score, low) - low) / (high - low)  # normalised within the ranking: comparable there


def _rankings(lists: list[tuple[str, QueryForm, Modality, list[Any]]]) -> dict[tuple[str, str, str], list[Any]]:
    """Merge the per-modality lists into one ranking per (space, query form, embedded kind), by score.

    Scores are comparable within a space for one kind of embedded content: in a text space every record is
    text (passages and transcripts alike), so a transcript moment at 0.82 outranks a passage at 0.40. In a
    CLIP space, text-to-image similarities run far below text-to-text ones (the modality gap), so pictures
    (images, keyframes) and texts are ranked apart and meet only in the fusion.
    """
    rankings: dict[tuple[str, str, str], list[Any]] = {}
    for space, form, _, hits in lists:
        for hit in hits:
            kind = "picture" if hit.record.modality in ("image", "video") and not hit.record.text else "text"
            rankings.setdefault((space, form, kind), []).append(hit)
    for hits in rankings.values():
        hits.sort(key=lambda hit: -hit.score)
    return rankings


_EVERY_EMBEDDING_SPACE = "*"


def _check_fusion(caller: str, fusion: str, rrf_k: float) -> None:
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
        _floors(floors)
        return floors
    except (ValueError, InvalidInputError) as error:
        raise InvalidInputError(
            f"min_score {text!r}: expected a number (every embedding space), SPACE=NUMBER pairs separated by"
            ' commas (e.g. "text=0.35,lexical=2"), or a JSON object of them'
        ) from error


def _floors(min_score: float | Mapping[str, float] | None) -> dict[str, float]:
    """`min_score` as floors by space name (``"*"``: every embedding space)."""
    if min_score is None:
        return {}
    floors = {_EVERY_EMBEDDING_SPACE: min_score} if not isinstance(min_score, Mapping) else dict(min_score)
    for space, floor in floors.items():
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or math.isnan(floor):
            where = "" if space == _EVERY_EMBEDDING_SPACE else f"[{space!r}]"
            raise InvalidInputError(f"MultimodalRetriever: min_score{where} must be a number, got {floor!r}")
    return {space: float(floor) for space, floor in floors.items()}


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
