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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mm_rag.errors import InvalidInputError
from mm_rag.filters import Filter, check_filter
from mm_rag.fusion import (
    DEFAULT_FUSION,
    EVERY_EMBEDDING_SPACE,
    FUSION_HELP,
    FUSIONS,
    MIN_BM25,
    MIN_SCORE_HELP,
    RRF_K,
    Fusion,
    bounds,
    check_fusion,
    contribution,
    fuse_rankings,
    parse_min_score,
    score_floors,
)
from mm_rag.mmr import mmr_order
from mm_rag.records import LEXICAL, MODALITIES, Modality, Record

# Part of this module's interface since before `mm_rag.fusion` held them.
__all__ = [
    "DEFAULT_FUSION",
    "FUSIONS",
    "FUSION_HELP",
    "MIN_SCORE_HELP",
    "MODES",
    "RRF_K",
    "Evidence",
    "Fusion",
    "Mode",
    "MultimodalRetriever",
    "QueryForm",
    "Retrieved",
    "fuse_rankings",
    "parse_min_score",
]

# hybrid: embeddings and keywords fused; dense: embeddings only; lexical: keywords (BM25) only.
Mode = Literal["hybrid", "dense", "lexical"]
MODES = ("hybrid", "dense", "lexical")
QueryForm = Literal["text", "image", "audio"]


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
        check_fusion("MultimodalRetriever", self.fusion, self.rrf_k)
        score_floors(self.min_score)  # checked now, not at the first query
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
        # Checked one by one first: the searches wrap them in {"$and": [...]}, a path no user wrote.
        check_filter(self.filter, "MultimodalRetriever.filter")
        check_filter(filter, "filter")
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
        floors = score_floors(self.min_score)
        floor = floors.get(space, floors.get(EVERY_EMBEDDING_SPACE) if space != LEXICAL else None)
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
            low, high = bounds(self.fusion, metric, hits)
            for rank, hit in enumerate(hits):
                key = hit.record.id
                scores[key] = scores.get(key, 0.0) + weight * contribution(
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


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
