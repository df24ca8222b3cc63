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
    records = [
        Record("dog-img", "image"),
        Record("dog-txt", "text"),
        Record("cat-img", "image"),
        Record("cat-txt", "text"),
    ]
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


# --- relevant items by what users know: record ids, document ids, file paths ----------------------------------
@pytest.fixture
def documents(tmp_path: Path):
    """A report in three chunks, a note, and a photo whose document id is not a path, as ingestion would store
    them (doc_id and uri: the file's absolute path); queries live in their own folder beside the documents."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "queries").mkdir()
    report, note = tmp_path / "docs" / "report.txt", tmp_path / "docs" / "note.txt"
    for path in (report, note):
        path.write_text("stand-in")
    chunks = [Record(f"report-{i}", "text", doc_id=str(report), uri=str(report)) for i in range(3)]
    store = MultimodalStore()
    store.create_space("clip", 2)
    store.upsert(
        [*chunks, Record("photo", "image", doc_id="album-7"), Record("note", "text", doc_id=str(note), uri=str(note))],
        {"clip": [[1, 0], [0.99, 0.1], [0.98, 0.2], [0.9, 0.4], [0, 1]]},
    )
    # "q" ranks: report-0, photo, report-1, report-2, note (the photo leads the image list; ties go to raw score)
    retriever = MultimodalRetriever(store, clip=Table({"q": [1, 0]}), mode="dense")
    yield retriever, tmp_path
    store.close()


def test_paths_document_ids_and_mixtures_count_each_document_once(documents) -> None:
    retriever, base = documents
    report = base / "docs" / "report.txt"
    queries = write_lines(base / "queries" / "q.jsonl", [
        {"id": "relative", "query": "q", "relevant": ["../docs/report.txt"]},  # against the query file's folder
        {"id": "absolute", "query": "q", "relevant": [str(report)]},
        {"id": "dotted", "query": "q", "relevant": [str(base / "queries" / ".." / "docs" / "report.txt")]},
        {"id": "doc id", "query": "q", "relevant": ["album-7"]},
        {"id": "mixed", "query": "q", "relevant": ["../docs/report.txt", "album-7", "note"]},
        {"id": "two docs", "query": "q", "relevant": [str(report), "../docs/note.txt"]},
    ])  # fmt: skip
    loaded = load_queries(queries)
    # k = 5 per modality: the note is the 4th text record, so a depth of 3 would not retrieve it at all
    per_query = {item.id: evaluate([item], retriever, ks=(1, 2, 3, 5)).metrics["all"] for item in loaded}
    for name in ("relative", "absolute", "dotted"):
        # found at rank 1 and counted once: its two other chunks neither add recall nor count as misses
        assert per_query[name]["recall@1"] == per_query[name]["mrr"] == per_query[name]["precision@1"] == 1.0
        assert per_query[name]["precision@3"] == pytest.approx(1 / 3)
    assert per_query["doc id"]["mrr"] == pytest.approx(1 / 2)
    mixed = per_query["mixed"]
    # report-0 (report), photo (album-7), report-1/2 dropped, note: three items in three places
    assert mixed["recall@2"] == pytest.approx(2 / 3) and mixed["recall@3"] == 1.0 and mixed["precision@3"] == 1.0
    two = per_query["two docs"]
    # report-0 hit, photo miss, note hit at place 3 (place 5 if the report's other chunks were counted)
    assert two["recall@2"] == pytest.approx(1 / 2) and two["recall@3"] == 1.0
    assert two["precision@3"] == pytest.approx(2 / 3)
    assert two["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    whole = evaluate(queries, retriever, ks=(1, 3))
    assert whole.queries == {"all": 6, "text": 5, "image": 2} and not whole.unknown and not whole.skipped
    assert whole.metrics["image"]["recall@1"] == 1.0  # per modality, "album-7" is its image record only


def test_relative_paths_fall_back_to_the_current_directory(documents, monkeypatch) -> None:
    retriever, base = documents
    monkeypatch.chdir(base / "docs")
    from mm_rag.eval import EvalQuery

    report = evaluate([EvalQuery(frozenset({"report.txt"}), query="q")], retriever, ks=(1,))
    assert report.metrics["all"]["recall@1"] == 1.0 and not report.unknown


def test_unknown_items_are_reported_not_scored_as_misses(documents) -> None:
    retriever, base = documents
    queries = write_lines(base / "queries" / "q.jsonl", [
        {"query": "q", "relevant": ["report-0", "typo/report.txt", "no-such-id"]},
        {"id": "lost", "query": "q", "relevant": ["/nowhere/at/all.pdf"]},
    ])  # fmt: skip
    with pytest.warns(UserWarning, match=r"q\.jsonl:1: relevant items not in the store: 'no-such-id', 'typo/report"):
        report = evaluate(queries, retriever, ks=(1,))
    assert report.unknown == {f"{queries}:1": ["no-such-id", "typo/report.txt"], "lost": ["/nowhere/at/all.pdf"]}
    assert report.skipped == ["lost"] and report.queries["all"] == 1
    assert report.metrics["all"]["recall@1"] == 1.0  # scored on the item the store holds
    assert "query skipped" in report.problems()[1] and json.dumps(report.to_dict())
    with pytest.raises(InvalidInputError, match=r"no-such-id.*\n.*lost"):
        evaluate(queries, retriever, ks=(1,), strict=True)


# --- the command, on a store ingested with the real MiniLM ------------------------------------------------------
def test_eval_command_takes_paths_and_reports_unknown_items(tmp_path: Path, minilm_dir) -> None:
    import os
    import subprocess
    import sys

    from mm_rag import TextEmbedder, ingest
    from mm_rag.ingestion.extract import ExtractOptions

    data = tmp_path / "data"
    data.mkdir()
    (data / "cake.txt").write_text(
        "Bake the plum cake for fifty minutes at 180 degrees. " * 3
        + "Plums are sour before they ripen. " * 4
        + "Serve the cake warm with cream and a pot of tea. " * 3
    )
    (data / "fireworks.txt").write_text("The fireworks over the harbour start at half past nine in the evening.")
    (data / "train.txt").write_text("The night train to Vienna leaves from platform four at eleven fifteen.")
    with MultimodalStore(tmp_path / "store") as store:
        options = ExtractOptions(chunk_tokens=12, chunk_overlap=0)
        assert not ingest(data, store, text=TextEmbedder(minilm_dir, device="cpu"), options=options).failed
        assert len(store.find({"doc_id": str((data / "cake.txt").absolute())})) >= 3  # a multi-chunk document
    queries = write_lines(tmp_path / "queries.jsonl", [
        {"query": "how long does the plum cake bake?", "relevant": ["data/cake.txt"]},
        {"query": "when do the fireworks start?", "relevant": [str(data / "fireworks.txt"), "data/missing.txt"]},
    ])  # fmt: skip
    command = [str(Path(sys.executable).with_name("mm-rag")), "eval", str(queries), "--store", str(tmp_path / "store")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run(
        [*command, "--k", "1,3", "--device", "cpu", "--json"], check=False, capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["queries"]["all"] == 2 and report["metrics"]["all"]["recall@1"] == 1.0
    # the cake's other chunks follow it: each is dropped, not a miss, so precision@3 is 1/3 per query, not 2/3+
    assert report["metrics"]["all"]["precision@3"] == pytest.approx(1 / 3)
    assert report["unknown"] == {f"{queries}:2": ["data/missing.txt"]}
    assert "warning:" in run.stderr and "data/missing.txt" in run.stderr
    strict = subprocess.run(
        [*command, "--device", "cpu", "--strict"], check=False, capture_output=True, text=True, env=env
    )
    assert strict.returncode == 2 and "data/missing.txt" in strict.stderr and "Traceback" not in strict.stderr
    # the same retrieval as `mm-rag search`: keywords alone still find the cake and the fireworks by their words
    lexical = subprocess.run(
        [*command, "--k", "1", "--device", "cpu", "--json", "--mode", "lexical", "--fusion", "rrf"],
        check=False, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert lexical.returncode == 0, lexical.stderr
    assert json.loads(lexical.stdout)["metrics"]["all"]["recall@1"] == 1.0
