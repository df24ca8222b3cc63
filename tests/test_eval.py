"""`mm_rag.eval`: metrics on hand-computed rankings, the query file format, and a real evaluation run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mm_rag import InvalidInputError, MultimodalRetriever, MultimodalStore, Record
from mm_rag.embed.transcript import Segment, Transcript
from mm_rag.eval import (
    evaluate,
    f1_at,
    load_queries,
    ndcg_at,
    precision_at,
    recall_at,
    reciprocal_rank,
    word_error_rate,
)

RANKED = ["a", "x", "b", "y", "z"]
RELEVANT = frozenset({"a", "b", "c"})


def test_metrics_by_hand() -> None:
    assert recall_at(RANKED, RELEVANT, 1) == pytest.approx(1 / 3)
    assert recall_at(RANKED, RELEVANT, 3) == pytest.approx(2 / 3)
    assert precision_at(RANKED, RELEVANT, 3) == pytest.approx(2 / 3)
    assert precision_at(RANKED, RELEVANT, 10) == pytest.approx(2 / 10)  # a short ranking still divides by k
    assert f1_at(RANKED, RELEVANT, 3) == pytest.approx(2 / 3)
    assert f1_at(RANKED, RELEVANT, 1) == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))
    assert reciprocal_rank(RANKED, RELEVANT) == 1.0
    assert reciprocal_rank(["x", "y", "b"], RELEVANT) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x"], RELEVANT) == 0.0
    dcg = 1 + 1 / math.log2(4)  # hits at ranks 1 and 3
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at(RANKED, RELEVANT, 5) == pytest.approx(dcg / ideal)
    assert ndcg_at(["a", "b", "c"], RELEVANT, 3) == pytest.approx(1.0)
    assert f1_at(["x"], RELEVANT, 1) == 0.0


def test_word_error_rate_by_hand() -> None:
    assert word_error_rate(["the cat sat"], ["The cat sat."]) == 0.0
    assert word_error_rate(["the cat sat"], ["the bat sat down"]) == pytest.approx(2 / 3)  # 1 sub + 1 ins
    assert word_error_rate(["a b c d", "e f"], ["a c d", ""]) == pytest.approx(3 / 6)  # corpus-level
    with pytest.raises(InvalidInputError, match="no words"):
        word_error_rate([""], ["x"])


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("\n".join(json.dumps(line) if not isinstance(line, str) else line for line in lines))
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON"),
        ({"query": "q"}, "relevant"),
        ({"query": "q", "relevant": []}, "relevant"),
        ({"relevant": ["a"]}, "give a 'query'"),
        ({"query": "q", "relevant": ["a"], "k": 5}, "unknown keys"),
    ],
)
def test_bad_query_lines_are_named(tmp_path: Path, line, message) -> None:
    path = write_lines(tmp_path / "q.jsonl", [{"query": "fine", "relevant": ["a"]}, line])
    with pytest.raises(InvalidInputError, match=rf"q\.jsonl:2: .*{message}"):
        load_queries(path)


class Table:
    space, dim = "clip", 2

    def __init__(self, table):
        self.table = {k: np.asarray(v, dtype=np.float32) for k, v in table.items()}

    def embed_texts(self, texts):
        return np.stack([self.table[t] for t in texts])

    embed_images = embed_texts


class Heard:
    def transcribe(self, source):
        return Transcript([Segment(0, 1, "dog pictures please", 0.9)], "en", 1.0)


def test_evaluate_reports_per_modality_and_wer(tmp_path: Path) -> None:
    store = MultimodalStore()
    store.create_space("clip", 2)
    records = [Record("dog-img", "image"), Record("dog-txt", "text"), Record("cat-img", "image"), Record("cat-txt", "text")]
    store.upsert(records, {"clip": [[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]]})
    clip = Table({"dog": [1, 0], "cat": [0, 1], "dog pictures please": [1, 0.05]})
    retriever = MultimodalRetriever(store, clip=clip, transcriber=Heard())
    queries = write_lines(tmp_path / "q.jsonl", [
        {"query": "dog", "relevant": ["dog-img", "dog-txt"]},
        {"query": "cat", "relevant": ["cat-img"]},
        {"audio": "ask.wav", "reference": "dog pictures", "relevant": ["dog-img"]},
    ])  # fmt: skip
    report = evaluate(queries, retriever, ks=(1, 2))
    assert report.queries == {"all": 3, "image": 3, "text": 1}
    assert report.metrics["image"]["recall@1"] == 1.0 and report.metrics["image"]["mrr"] == 1.0
    assert report.metrics["text"]["recall@1"] == 1.0
    # fused: "dog" ranks dog-img, dog-txt first (both relevant); "cat" cat-img first; audio dog-img first
    assert report.metrics["all"]["precision@1"] == 1.0
    assert report.metrics["all"]["recall@2"] == pytest.approx(1.0)
    assert report.wer == pytest.approx(1 / 2) and report.wer_queries == 1  # "please" inserted
    assert "transcript WER 0.5000" in report.table() and json.dumps(report.to_dict())
    store.close()
