"""Retrieval evaluation: recall@k, precision@k, F1@k, MRR and nDCG@k per modality, and transcript WER.

A query file is JSON Lines, one query per line::

    {"query": "a dog on a beach", "relevant": ["img-17", "txt-3"]}
    {"image": "queries/harbour.jpg", "relevant": ["img-4"], "filter": {"year": {"$gte": 2020}}}
    {"audio": "queries/question.wav", "relevant": ["talk-2#t=30"], "reference": "where did we meet"}

Relevance is binary. Metrics are computed on the fused ranking ("all") and per modality, where both the
ranking and the relevant ids are restricted to records of that modality (a query counts for a modality only
when it has relevant records of it). A line with ``audio`` and ``reference`` also scores the transcript.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_rag.errors import InvalidInputError
from mm_rag.records import MODALITIES

DEFAULT_KS = (1, 5, 10)
_QUERY_KEYS = frozenset({"query", "image", "audio", "relevant", "filter", "reference", "id"})


@dataclass(frozen=True)
class EvalQuery:
    """One evaluation query: text, image and/or audio, the relevant record ids, and optionally a reference
    transcript of the audio."""

    relevant: frozenset[str]
    query: str | None = None
    image: str | None = None
    audio: str | None = None
    filter: dict[str, Any] | None = None
    reference: str | None = None
    id: str | None = None


@dataclass
class EvalReport:
    """Mean metrics by modality (``"all"`` is the fused ranking) and the number of queries behind each.

    ``metrics[modality]`` maps names like ``"recall@5"``, ``"precision@5"``, ``"f1@5"``, ``"ndcg@5"`` and
    ``"mrr"`` to means over the queries counted for that modality. ``wer`` is the corpus word error rate of
    the transcribed audio queries that had a reference (None when none had).
    """

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=dict)
    wer: float | None = None
    wer_queries: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "queries": self.queries, "wer": self.wer, "wer_queries": self.wer_queries}

    def table(self) -> str:
        """A plain-text table: one row per modality, one column per metric."""
        if not self.metrics:
            return "no queries with relevant records"
        names = list(next(iter(self.metrics.values())))
        lines = [f"{'modality':<9} {'queries':>7} " + " ".join(f"{name:>12}" for name in names)]
        for modality, values in self.metrics.items():
            row = " ".join(f"{values[name]:>12.4f}" for name in names)
            lines.append(f"{modality:<9} {self.queries[modality]:>7} {row}")
        if self.wer is not None:
            lines.append(f"transcript WER {self.wer:.4f} over {self.wer_queries} audio queries")
        return "\n".join(lines)


# --- metrics on one ranking ----------------------------------------------------------------------------------
def recall_at(ranked: Sequence[str], relevant: frozenset[str], k: int) -> float:
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def precision_at(ranked: Sequence[str], relevant: frozenset[str], k: int) -> float:
    """Relevant share of the first `k` positions (a ranking shorter than k counts the missing ones as misses)."""
    return len(relevant.intersection(ranked[:k])) / k


def f1_at(ranked: Sequence[str], relevant: frozenset[str], k: int) -> float:
    precision, recall = precision_at(ranked, relevant, k), recall_at(ranked, relevant, k)
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def reciprocal_rank(ranked: Sequence[str], relevant: frozenset[str]) -> float:
    return next((1.0 / (rank + 1) for rank, item in enumerate(ranked) if item in relevant), 0.0)


def ndcg_at(ranked: Sequence[str], relevant: frozenset[str], k: int) -> float:
    gain = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return gain / ideal if ideal else 0.0


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: word edits (substitutions, insertions, deletions) over reference words, after lower-casing
    and dropping punctuation."""
    edits = words = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        expected, heard = _words(reference), _words(hypothesis)
        edits += _edit_distance(expected, heard)
        words += len(expected)
    if not words:
        raise InvalidInputError("word_error_rate: the references hold no words")
    return edits / words


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def _edit_distance(expected: list[str], heard: list[str]) -> int:
    previous = list(range(len(heard) + 1))
    for i, word in enumerate(expected, start=1):
        current = [i]
        for j, other in enumerate(heard, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1]


# --- running an evaluation -------------------------------------------------------------------------------------
def load_queries(path: str | os.PathLike[str]) -> list[EvalQuery]:
    """Read a JSON Lines query file; media paths are relative to the file's folder.

    Raises:
        InvalidInputError: naming the line: not JSON, unknown keys, no query at all, or no relevant ids.
    """
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"cannot read query file {source}: {error}") from error
    queries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidInputError(f"{where}: not JSON: {error.msg}") from error
        if not isinstance(item, dict):
            raise InvalidInputError(f"{where}: expected a JSON object")
        unknown = set(item) - _QUERY_KEYS
        if unknown:
            raise InvalidInputError(f"{where}: unknown keys {sorted(unknown)}; expected some of {sorted(_QUERY_KEYS)}")
        relevant = item.get("relevant")
        if not isinstance(relevant, list) or not relevant or not all(isinstance(i, str) for i in relevant):
            raise InvalidInputError(f"{where}: 'relevant' must be a non-empty list of record ids")
        if not any(item.get(key) for key in ("query", "image", "audio")):
            raise InvalidInputError(f"{where}: give a 'query', an 'image' or an 'audio' file")
        media = {key: str(source.parent / item[key]) for key in ("image", "audio") if item.get(key)}
        queries.append(
            EvalQuery(
                frozenset(relevant), item.get("query"), media.get("image"), media.get("audio"),
                item.get("filter"), item.get("reference"), item.get("id"),
            )
        )  # fmt: skip
    return queries


def evaluate(
    queries: Iterable[EvalQuery] | str | os.PathLike[str], retriever: Any, ks: Sequence[int] = DEFAULT_KS
) -> EvalReport:
    """Run every query through `retriever` and average the metrics.

    Each modality is retrieved with ``k = max(ks)`` so that every cut-off can be measured. Audio queries with
    a reference transcript are transcribed once for both the WER and the search.
    """
    if isinstance(queries, (str, os.PathLike)):
        queries = load_queries(queries)
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise InvalidInputError(f"evaluate: cut-offs must be positive integers, got {ks}")
    depth = dict.fromkeys(MODALITIES, ks[-1])
    sums: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    references, heard = [], []
    for item in queries:
        text = item.query
        if item.audio and item.reference is not None:
            spoken = retriever.transcriber.transcribe(item.audio).text
            references.append(item.reference)
            heard.append(spoken)
            text = " ".join(part for part in (item.query, spoken) if part)
            audio = None
        else:
            audio = item.audio
        results = retriever.retrieve(text, image=item.image, audio=audio, filter=item.filter, k=depth)
        modality_of = {r.record.id: r.modality for r in results}
        modality_of.update({r.id: r.modality for r in retriever.store.get(list(item.relevant))})
        ranked = [r.record.id for r in results]
        views = {"all": (ranked, item.relevant)}
        for modality in sorted({modality_of[i] for i in item.relevant if i in modality_of}):
            views[modality] = (
                [i for i in ranked if modality_of.get(i) == modality],
                frozenset(i for i in item.relevant if modality_of.get(i) == modality),
            )
        for view, (ids, relevant) in views.items():
            totals = sums.setdefault(view, {})
            for name, value in _metrics(ids, relevant, ks).items():
                totals[name] = totals.get(name, 0.0) + value
            counts[view] = counts.get(view, 0) + 1
    report = EvalReport(
        {view: {name: total / counts[view] for name, total in values.items()} for view, values in sums.items()},
        counts,
    )
    if references:
        report.wer, report.wer_queries = word_error_rate(references, heard), len(references)
    return report


def _metrics(ranked: list[str], relevant: frozenset[str], ks: Sequence[int]) -> dict[str, float]:
    values: dict[str, float] = {}
    for k in ks:
        values[f"recall@{k}"] = recall_at(ranked, relevant, k)
        values[f"precision@{k}"] = precision_at(ranked, relevant, k)
        values[f"f1@{k}"] = f1_at(ranked, relevant, k)
        values[f"ndcg@{k}"] = ndcg_at(ranked, relevant, k)
    values["mrr"] = reciprocal_rank(ranked, relevant)
    return values
