"""Retrieval evaluation: recall@k, precision@k, F1@k, MRR and nDCG@k per modality, and transcript WER.

A query file is JSON Lines, one query per line::

    {"query": "a dog on a beach", "relevant": ["img-17", "txt-3"]}
    {"query": "when is the launch?", "relevant": ["docs/plan.pdf", "/data/talks/kickoff.mp3"]}
    {"image": "queries/harbour.jpg", "relevant": ["img-4"], "filter": {"year": {"$gte": 2020}}}
    {"audio": "queries/question.wav", "relevant": ["talk-2#t=30"], "reference": "where did we meet"}

**Relevant items** are what a user knows: a record id, a document id, or a file path. Each item is looked up
in the store as follows, and stands for a *set* of records:

1. exact matches: the record with that id, plus every record whose ``doc_id`` or ``uri`` equals the string;
2. only if nothing matched exactly, the item is read as a file path: an absolute path as it is, a relative one
   first against the query file's folder, then against the current directory. Ingestion stores a file's
   ``doc_id`` (and ``uri``) as its absolute path, so a path matches the records of that file; symbolic links
   and ``..`` are followed on both sides, so a differently spelled path to the same file matches too.

Items that match nothing are **reported**, never silently scored as misses: `EvalReport.unknown` lists them per
query, `evaluate` warns (or raises with ``strict=True``), and ``mm-rag eval`` prints them. They are left out of
the scores (no retriever could find a record the store does not hold), and a query with no known item left is
skipped and listed in `EvalReport.skipped`.

**Scoring by item.** A document or file is found when *any* of its records is retrieved; the ranking is read
item by item: the first retrieved record of a relevant item is a hit at its position, later records of an
already-found item are dropped from the ranking (neither hit nor miss: one document in five chunks counts once,
and its other chunks do not push results down), and any other record is a miss. On that ranking, with ``n``
relevant items: recall@k is found items / n, precision@k is hits / k (a short ranking counts the missing places
as misses), MRR is 1 / position of the first hit, and nDCG@k uses binary gains against ``min(k, n)`` ideal
hits. With record ids only, this is the usual record-level evaluation.

Metrics are computed on the fused ranking ("all") and per modality, where the ranking is restricted to records
of that modality and each item to its records of that modality (a query counts for a modality only when one of
its items has records of it). A line with ``audio`` and ``reference`` also scores the transcript.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_rag.errors import InvalidInputError
from mm_rag.records import MODALITIES

DEFAULT_KS = (1, 5, 10)
_QUERY_KEYS = frozenset({"query", "image", "audio", "relevant", "filter", "reference", "id"})


@dataclass(frozen=True)
class EvalQuery:
    """One evaluation query: text, image and/or audio, the relevant items (record ids, document ids or file
    paths), and optionally a reference transcript of the audio.

    `folder` is where relative paths among the relevant items are looked up first (the query file's folder when
    read by `load_queries`; the current directory is tried after it). `where` names the query in messages.
    """

    relevant: frozenset[str]
    query: str | None = None
    image: str | None = None
    audio: str | None = None
    filter: dict[str, Any] | None = None
    reference: str | None = None
    id: str | None = None
    folder: str | None = None
    where: str | None = None


@dataclass
class EvalReport:
    """Mean metrics by modality (``"all"`` is the fused ranking) and the number of queries behind each.

    ``metrics[modality]`` maps names like ``"recall@5"``, ``"precision@5"``, ``"f1@5"``, ``"ndcg@5"`` and
    ``"mrr"`` to means over the queries counted for that modality. ``wer`` is the corpus word error rate of
    the transcribed audio queries that had a reference (None when none had). ``unknown`` maps a query's name
    to its relevant items that match no record; ``skipped`` names the queries left out because none of their
    items matched.
    """

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    queries: dict[str, int] = field(default_factory=dict)
    wer: float | None = None
    wer_queries: int = 0
    unknown: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics, "queries": self.queries, "wer": self.wer, "wer_queries": self.wer_queries,
            "unknown": self.unknown, "skipped": self.skipped,
        }  # fmt: skip

    def problems(self) -> list[str]:
        """One line per query with unknown relevant items (and whether it was skipped), for people to read."""
        lines = []
        for name, items in self.unknown.items():
            left_out = " (query skipped: no relevant item is in the store)" if name in self.skipped else ""
            lines.append(f"{name}: relevant items not in the store: {', '.join(map(repr, items))}{left_out}")
        return lines

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


def credit_ranking(ranked: Sequence[str], items: Mapping[str, Iterable[str]]) -> list[frozenset[str]]:
    """Read a ranking of record ids item by item: per kept position, the relevant items it finds first.

    Args:
        ranked: Record ids, best first.
        items: Each relevant item → the ids of its records.

    Returns:
        One entry per kept position: the items first found there (empty: a miss). A record of items that
        were all found higher up is dropped, so a document counts once however many of its chunks come back.
    """
    owners: dict[str, list[str]] = {}
    for item, records in items.items():
        for record in records:
            owners.setdefault(record, []).append(item)
    found: set[str] = set()
    positions: list[frozenset[str]] = []
    for record in ranked:
        mine = owners.get(record)
        if not mine:
            positions.append(frozenset())
            continue
        new = frozenset(item for item in mine if item not in found)
        if new:
            found |= new
            positions.append(new)
    return positions


def item_metrics(positions: Sequence[frozenset[str]], relevant: int, ks: Sequence[int]) -> dict[str, float]:
    """recall/precision/F1/nDCG at each k and MRR of a `credit_ranking` result with `relevant` items in all."""
    values: dict[str, float] = {}
    hits = [bool(found) for found in positions]
    for k in ks:
        found = len(frozenset().union(*positions[:k]))
        recall = found / relevant if relevant else 0.0
        precision = sum(hits[:k]) / k
        values[f"recall@{k}"] = recall
        values[f"precision@{k}"] = precision
        values[f"f1@{k}"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        gain = sum(1.0 / math.log2(rank + 2) for rank, hit in enumerate(hits[:k]) if hit)
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, relevant)))
        values[f"ndcg@{k}"] = gain / ideal if ideal else 0.0
    values["mrr"] = next((1.0 / (rank + 1) for rank, hit in enumerate(hits) if hit), 0.0)
    return values


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


# --- relevant items → records ----------------------------------------------------------------------------------
class RelevantIndex:
    """Looks relevant items (record ids, document ids, file paths) up in a store: each → {record id: modality}.

    See the module docstring for the rules. The map from real file paths to document ids is built on the first
    item that needs it (one read of the store's documents), since most items match exactly.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._real_paths: dict[str, list[str]] | None = None

    def resolve(self, items: Iterable[str], folder: str | None = None) -> tuple[dict[str, dict[str, str]], list[str]]:
        """The records of each item that matches, and the items that match nothing (sorted)."""
        items = sorted(set(items))
        found: dict[str, dict[str, str]] = {item: {} for item in items}
        for record in self.store.get(items):
            found[record.id][record.id] = record.modality
        for record in self._with_doc_or_uri(items):
            for value in {record.doc_id, record.uri} & found.keys():
                found[value][record.id] = record.modality
        for item in [item for item in items if not found[item]]:
            documents = self._documents_at(item, folder)
            if documents:
                for record in self._with_doc_or_uri(documents):
                    found[item][record.id] = record.modality
        unknown = [item for item in items if not found[item]]
        return {item: records for item, records in found.items() if records}, unknown

    def _with_doc_or_uri(self, values: Sequence[str]) -> list[Any]:
        values = list(values)
        return self.store.find({"$or": [{"doc_id": {"$in": values}}, {"uri": {"$in": values}}]})

    def _documents_at(self, item: str, folder: str | None) -> list[str]:
        """Stored document ids (or uris) naming the file `item` denotes, trying the query folder, then the cwd."""
        path = Path(item).expanduser()
        bases = [path] if path.is_absolute() else [Path(base) / path for base in (folder, os.getcwd()) if base]
        for candidate in bases:
            spellings = sorted({str(candidate.absolute()), os.path.normpath(candidate.absolute())})
            exact = {
                value for r in self._with_doc_or_uri(spellings) for value in (r.doc_id, r.uri) if value in spellings
            }
            if exact:
                return sorted(exact)
            # The same file under another spelling: a symlinked folder, ".." kept in a stored path.
            same_file = self._by_real_path().get(os.path.realpath(candidate))
            if same_file:
                return same_file
        return []

    def _by_real_path(self) -> dict[str, list[str]]:
        if self._real_paths is None:
            self._real_paths = {}
            for doc_id in self.store.documents():
                if doc_id and os.path.isabs(doc_id):
                    self._real_paths.setdefault(os.path.realpath(doc_id), []).append(doc_id)
        return self._real_paths


# --- running an evaluation -------------------------------------------------------------------------------------
def load_queries(path: str | os.PathLike[str]) -> list[EvalQuery]:
    """Read a JSON Lines query file; media paths are relative to the file's folder, and so are relative paths
    among the relevant items (then the current directory, see the module docstring).

    Raises:
        InvalidInputError: naming the line: not JSON, unknown keys, no query at all, or no relevant items.
    """
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"cannot read query file {source}: {error}") from error
    folder = str(source.parent.absolute())
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
        if not isinstance(relevant, list) or not relevant or not all(isinstance(i, str) and i for i in relevant):
            raise InvalidInputError(
                f"{where}: 'relevant' must be a non-empty list of record ids, document ids or file paths"
            )
        if not any(item.get(key) for key in ("query", "image", "audio")):
            raise InvalidInputError(f"{where}: give a 'query', an 'image' or an 'audio' file")
        media = {key: str(source.parent / item[key]) for key in ("image", "audio") if item.get(key)}
        queries.append(
            EvalQuery(
                frozenset(relevant), item.get("query"), media.get("image"), media.get("audio"),
                item.get("filter"), item.get("reference"), item.get("id"), folder, where,
            )
        )  # fmt: skip
    return queries


def evaluate(
    queries: Iterable[EvalQuery] | str | os.PathLike[str],
    retriever: Any,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    strict: bool = False,
) -> EvalReport:
    """Run every query through `retriever` and average the metrics.

    Each modality is retrieved with ``k = max(ks)`` so that every cut-off can be measured. Audio queries with
    a reference transcript are transcribed once for both the WER and the search. Relevant items are matched
    to records as the module docstring describes, before any query runs.

    Args:
        queries: `EvalQuery` items, or the path of a query file (see `load_queries`).
        retriever: A `mm_rag.retrieval.MultimodalRetriever` (anything with ``retrieve`` and ``store``).
        ks: The cut-offs.
        strict: Raise instead of warning when relevant items match no record.

    Raises:
        InvalidInputError: bad cut-offs; with `strict`, relevant items that match nothing (all listed).
    """
    if isinstance(queries, (str, os.PathLike)):
        queries = load_queries(queries)
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise InvalidInputError(f"evaluate: cut-offs must be positive integers, got {ks}")
    report = EvalReport()
    index = RelevantIndex(retriever.store)
    resolved: list[tuple[EvalQuery, dict[str, dict[str, str]]]] = []
    for number, item in enumerate(queries, start=1):
        items, unknown = index.resolve(item.relevant, item.folder)
        if unknown:
            name = _name(item, number)
            report.unknown[name] = unknown
            if not items:
                report.skipped.append(name)
                continue
        resolved.append((item, items))
    if report.unknown:
        message = "evaluate: relevant items match no record:\n  " + "\n  ".join(report.problems())
        if strict:
            raise InvalidInputError(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    _run(resolved, retriever, ks, report)
    return report


def _name(item: EvalQuery, number: int) -> str:
    if item.id:
        return item.id
    if item.where:
        return item.where
    return f"query #{number}" + (f" ({item.query[:40]!r})" if item.query else "")


def _run(
    resolved: list[tuple[EvalQuery, dict[str, dict[str, str]]]], retriever: Any, ks: Sequence[int], report: EvalReport
) -> None:
    depth = dict.fromkeys(MODALITIES, ks[-1])
    sums: dict[str, dict[str, float]] = {}
    references, heard = [], []
    for item, items in resolved:
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
        ranked = [(r.record.id, r.modality) for r in results]
        views = {"all": ([i for i, _ in ranked], {name: list(records) for name, records in items.items()})}
        for modality in sorted({m for records in items.values() for m in records.values()}):
            views[modality] = (
                [i for i, m in ranked if m == modality],
                {
                    name: [i for i, m in records.items() if m == modality]
                    for name, records in items.items()
                    if modality in records.values()
                },
            )
        for view, (ids, relevant) in views.items():
            totals = sums.setdefault(view, {})
            for name, value in item_metrics(credit_ranking(ids, relevant), len(relevant), ks).items():
                totals[name] = totals.get(name, 0.0) + value
            report.queries[view] = report.queries.get(view, 0) + 1
    report.metrics = {
        view: {name: total / report.queries[view] for name, total in values.items()} for view, values in sums.items()
    }
    if references:
        report.wer, report.wer_queries = word_error_rate(references, heard), len(references)
