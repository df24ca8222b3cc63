"""The keyword index: BM25 order and scores by hand, exact filters, safe queries, consistency, hybrid retrieval."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mm_rag import InvalidInputError, MultimodalRetriever, MultimodalStore, Record
from mm_rag.records import LEXICAL
from mm_rag.store import lexical

ROOT = Path(__file__).resolve().parents[1]
CORPUS = {
    "a": "apple banana apple",
    "b": "banana cherry",
    "c": "cherry cherry cherry date",
    "d": "elderberry fig grape",
}


def text_store(texts: dict[str, str], path=None, **metadata) -> MultimodalStore:
    store = MultimodalStore(path)
    store.create_space("v", 4)
    records = [Record(i, "text", text=t, metadata={"n": n, **metadata}) for n, (i, t) in enumerate(texts.items())]
    store.add(records, {"v": np.random.default_rng(0).random((len(records), 4))})
    return store


def bm25(query: list[str], documents: dict[str, str], k1: float = 1.2, b: float = 0.75) -> dict[str, float]:
    """Okapi BM25 as FTS5 computes it (its idf floor included), written out by hand."""
    tokens = {i: text.split() for i, text in documents.items()}
    total = len(tokens)
    average = sum(map(len, tokens.values())) / total
    scores = {}
    for i, words in tokens.items():
        score = 0.0
        for term in query:
            having = sum(term in other for other in tokens.values())
            idf = math.log((total - having + 0.5) / (having + 0.5))
            idf = idf if idf > 0 else 1e-6
            frequency = words.count(term)
            score += idf * frequency * (k1 + 1) / (frequency + k1 * (1 - b + b * len(words) / average))
        if any(term in words for term in query):
            scores[i] = score
    return scores


@pytest.mark.parametrize("query", ["apple", "cherry", "banana cherry", "apple date", "fig"])
def test_bm25_scores_and_order_match_the_formula(query: str) -> None:
    with text_store(CORPUS) as store:
        hits = store.search_text(query, k=10)
    expected = bm25(query.split(), CORPUS)
    assert [hit.record.id for hit in hits] == sorted(expected, key=lambda i: -expected[i])
    for hit in hits:
        assert hit.space == LEXICAL and hit.score == pytest.approx(expected[hit.record.id], rel=1e-9)
    assert [hit.rank for hit in hits] == list(range(len(hits)))


def test_filters_are_exact_not_applied_afterwards() -> None:
    urgency = {i: 3 if i < 15 else 1 if i >= 50 else 0 for i in range(60)}  # "urgent" in 25 of 60 records
    texts = {f"r{i}": f"invoice number {i} {'urgent ' * urgency[i]}" for i in range(60)}
    with text_store(texts) as store:
        assert len(store.search_text("urgent invoice", k=5)) == 5
        hits = store.search_text("urgent invoice", k=5, filter={"n": {"$gte": 50}})
        # the best-scoring "urgent" records are all below 50: a post-filter of the top 5 would return nothing
        assert len(hits) == 5 and all(hit.record.metadata["n"] >= 50 for hit in hits)
        assert store.search_text("urgent", k=100, filter={"n": {"$in": [3, 7]}})[0].record.id in {"r3", "r7"}
        assert store.search_text("urgent", k=3, filter={"n": -1}) == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('"quoted" AND NEAR(x y) OR *', "syntax"),
        ("café", "accents"),
        ("CAFE", "accents"),
        ("Straße", "unicode"),
        ("INV-4711", "code"),
        ("4711", "code"),
        ("注意事项", "cjk"),
    ],
)
def test_queries_are_words_never_syntax(query: str, expected: str) -> None:
    texts = {
        "syntax": 'say "quoted" AND NEAR(x y) OR * please',
        "accents": "un café au lait",
        "unicode": "die Straße entlang",
        "code": "Invoice INV-4711 is due",
        "cjk": "注意事项 见下文",
        "other": "nothing to see",
    }
    with text_store(texts) as store:
        assert store.search_text(query, k=1)[0].record.id == expected


def test_queries_without_words_find_nothing_and_bad_arguments_are_named() -> None:
    with text_store(CORPUS) as store:
        assert store.search_text("?! -- ...", k=3) == [] and store.search_text("", k=3) == []
        with pytest.raises(InvalidInputError, match="k must be"):
            store.search_text("apple", k=0)
        with pytest.raises(InvalidInputError, match="query must be text"):
            store.search_text(b"apple")  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="reserved"):
            store.create_space(LEXICAL, 4)


def integrity_check(store: MultimodalStore) -> None:
    """FTS5's own check that the index holds exactly the terms of the records' text (raises if not)."""
    from mm_rag.store import lexical

    store._generations.catalog._db.execute(lexical.CHECK)


def test_the_index_follows_upserts_deletes_clear_rollback_save_and_reopen(tmp_path) -> None:
    path = tmp_path / "store"
    with text_store(CORPUS, path) as store:
        store.add([Record("a", "text", text="kiwi lemon")], {"v": np.ones((1, 4))})  # replaces "apple banana apple"
        store.delete(["b"])
        store.add([Record("e", "text", text="doc chunk lemon", doc_id="doc"), Record("f", "text", doc_id="doc")],
                  {"v": np.ones((2, 4))})  # fmt: skip
        integrity_check(store)
        assert store.search_text("apple", k=5) == [] and store.search_text("banana", k=5) == []
        assert {hit.record.id for hit in store.search_text("lemon", k=5)} == {"a", "e"}
        store.save()
        store.delete_doc("doc")
        store.rollback()
        assert {hit.record.id for hit in store.search_text("lemon", k=5)} == {"a", "e"}
        store.delete_doc("doc")
        store.save()
    with MultimodalStore.open(path) as store:
        integrity_check(store)
        assert {hit.record.id for hit in store.search_text("lemon kiwi cherry", k=5)} == {"a", "c"}
        store.clear()
        integrity_check(store)
        assert store.search_text("cherry", k=5) == []


_KILLED_MID_SAVE = """
import os, sys
import numpy as np
from mm_rag import MultimodalStore, Record
from mm_rag.store import segments

store = MultimodalStore.open(sys.argv[1])
store.add([Record(f"late{i}", "text", text=f"unsaved words {i}") for i in range(20)], {"v": np.ones((20, 4))})
store.delete(["c"])
write = segments.write_space
segments.write_space = lambda *a, **k: (write(*a, **k), os._exit(3))[0]  # killed after the files
store.save()
"""


def test_a_writer_killed_during_save_leaves_the_index_as_committed(tmp_path) -> None:
    path = tmp_path / "store"
    with text_store(CORPUS, path) as store:
        store.save()
    result = subprocess.run([sys.executable, "-c", _KILLED_MID_SAVE, str(path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=dict(os.environ), check=False)  # fmt: skip
    assert result.returncode == 3, result.stderr
    with MultimodalStore.open(path) as store:
        integrity_check(store)
        assert store.search_text("unsaved", k=5) == []
        assert store.search_text("cherry", k=1)[0].record.id == "c"


def test_a_catalog_from_before_the_index_gets_it_on_open(tmp_path) -> None:
    path = tmp_path / "store"
    with text_store(CORPUS, path) as store:
        store.save()
        store._generations.catalog._db.execute("DROP TABLE records_text")  # as an older mm-rag wrote it
        store._generations.catalog._db.execute("DROP VIEW records_with_text")
    with MultimodalStore.open(path) as store:
        integrity_check(store)
        assert store.search_text("cherry", k=1)[0].record.id == "c"


def test_another_processes_commit_is_found_at_once(tmp_path) -> None:
    from fixtures.store_process import StoreProcess

    path = tmp_path / "store"
    with text_store(CORPUS, path) as store:
        store.save()
        with StoreProcess(path) as other:
            other.call("upsert", [Record("g", "text", text="quince")], {"v": np.ones((1, 4))})
            other.call("save")
        assert [hit.record.id for hit in store.search_text("quince", k=1)] == ["g"]


# --- hybrid retrieval with the real MiniLM ----------------------------------------------------------------
CUSTOMERS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka"]


def invoices() -> dict[str, str]:
    rng = np.random.default_rng(7)
    codes = rng.choice(np.arange(1000, 9999), size=32, replace=False)
    return {
        f"INV-{code}": f"Invoice INV-{code} from {CUSTOMERS[i % 8]} for {int(rng.integers(10, 90)) * 100} euros,"
        f" due at the end of the month."
        for i, code in enumerate(codes)
    }


def test_hybrid_finds_exact_codes_that_dense_search_misses(minilm_dir) -> None:
    from mm_rag import TextEmbedder

    embedder = TextEmbedder(minilm_dir, device="cpu").load()
    corpus = invoices()
    store = MultimodalStore()
    store.create_space(embedder.space, embedder.dim)
    store.add(
        [Record(i, "text", text=t) for i, t in corpus.items()],
        {embedder.space: embedder.embed_texts(list(corpus.values()))},
    )
    queries = {code: f"Which customer sent invoice {code}?" for code in corpus}
    recall = {}
    for mode in ("dense", "lexical", "hybrid"):
        retriever = MultimodalRetriever(store, text=embedder, text_k=5, mode=mode)
        found = [code in [r.record.id for r in retriever.retrieve(question)] for code, question in queries.items()]
        recall[mode] = sum(found) / len(found)
    print(f"recall@5 on {len(queries)} exact-code queries: {recall}")
    assert recall["hybrid"] == recall["lexical"] == 1.0 and recall["dense"] < 0.9
    code = next(iter(corpus))
    found = {r.record.id: r for r in MultimodalRetriever(store, text=embedder, text_k=5).retrieve(queries[code])}
    assert "keywords #1 (BM25" in found[code].explain() and LEXICAL in {e.space for e in found[code].evidence}
    store.close()


def test_lexical_mode_needs_no_embedder_and_refuses_images() -> None:
    with text_store(CORPUS) as store:
        retriever = MultimodalRetriever(store, mode="lexical")
        assert [r.record.id for r in retriever.retrieve("cherry")] == ["c", "b"]
        with pytest.raises(InvalidInputError, match="image query needs embeddings"):
            retriever.retrieve(image=b"not used")
        with pytest.raises(InvalidInputError, match="unknown mode"):
            MultimodalRetriever(store, mode="sparse")  # type: ignore[arg-type]


def test_bad_arguments_of_keyword_search_and_fusion_are_named() -> None:
    from mm_rag import FilterError, UnknownSpaceError
    from mm_rag.retrieval import fuse_rankings

    with text_store(CORPUS) as store:
        with pytest.raises(UnknownSpaceError, match="nope"):
            store.search_text("apple", k=3, space="nope")
        with pytest.raises(FilterError, match="unknown operator"):
            store.search_text("apple", k=3, filter={"n": {"$near": 1}})
        hits = store.search_text("cherry", k=3)
        assert [hit.record.id for hit in store.search_text("cherry", k=3, space="v")] == [hit.record.id for hit in hits]
    with pytest.raises(InvalidInputError, match="2 weights for 1 rankings"):
        fuse_rankings([hits], [1.0, 2.0])
    with pytest.raises(InvalidInputError, match="unknown fusion"):
        fuse_rankings([hits], fusion="borda")  # type: ignore[arg-type]
    assert fuse_rankings([hits]) == []  # "cherry" is in half the records: a nil BM25 enters no fusion
    with text_store(CORPUS) as store:
        hits = store.search_text("apple date", k=3)
    rrf = fuse_rankings([hits, hits[::-1]], [1.0, 0.0], fusion="rrf")
    assert len(hits) == 2 and rrf == [(hit, 1.0 / (61 + rank)) for rank, hit in enumerate(hits)]


@pytest.mark.parametrize("timeout", [-1, "soon", True, float("nan")])
def test_a_bad_lock_timeout_is_refused(timeout, tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="lock_timeout"):
        MultimodalStore(tmp_path / "store", lock_timeout=timeout)


# --- words that carry no information, stemming ---------------------------------------------------------------
FESTIVAL = {
    "fireworks": "The fireworks start at ten o'clock over the lake.",
    "cake": "Bake the plum cake for an hour at 180 degrees.",
    "map": "A map of the museum hangs by the door.",
    "maps": "Old maps and charts of the harbour.",
    "invoice": "Invoice INV-4711 is due in March.",
    "budget": "How do we pay for the stage? The budget is tight.",
}


def test_stop_words_create_no_match_of_their_own_and_are_reported() -> None:
    with text_store(FESTIVAL) as store:
        found = store.search_text("when do the fireworks start?", k=10)
        assert [hit.record.id for hit in found] == ["fireworks"]  # not every record holding "the"
        assert store.keywords("when do the fireworks start?").ignored == ("when", "do", "the")
        assert store.search_text("How do the", k=10) == [] and store.keywords("How do the").kept == ()
        assert [hit.record.id for hit in store.search_text("how long does the plum cake bake?", k=10)] == ["cake"]


def test_words_in_half_the_records_or_more_create_no_match_in_a_large_enough_store() -> None:
    texts = {
        f"r{i}": f"festival note {i}" + (" lantern" if i < 3 else "") for i in range(lexical.MIN_RECORDS_FOR_FREQUENCY)
    }
    with text_store(texts) as store:
        assert store.search_text("festival", k=5) == []  # every record: BM25 idf ≤ 0
        assert store.keywords("festival lantern").ignored == ("festival",)
        assert {hit.record.id for hit in store.search_text("festival lantern", k=5)} == {"r0", "r1", "r2"}
    small = dict(list(texts.items())[: lexical.MIN_RECORDS_FOR_FREQUENCY - 1])
    with text_store(small) as store:  # too few records to call a word common: only stop words are left out
        assert len(store.search_text("festival", k=100)) == len(small)


def test_stemming_finds_other_forms_and_keeps_codes_exact(tmp_path) -> None:
    with text_store(FESTIVAL, tmp_path / "store") as store:
        assert store.keyword_settings == {"stemming": lexical.DEFAULT_STEMMING, "languages": ["en"]}
        assert {hit.record.id for hit in store.search_text("map", k=5)} == {"map", "maps"}
        assert store.search_text("baking", k=5)[0].record.id == "cake"
        assert [hit.record.id for hit in store.search_text("INV-4711", k=5)] == ["invoice"]
        assert store.search_text("INV-4712", k=5) == []  # a neighbouring code is another code
        store.configure_keywords(stemming="none", languages=["en", "de"])
        integrity_check(store)
        assert [hit.record.id for hit in store.search_text("map", k=5)] == ["map"]  # words as written
        assert [hit.record.id for hit in store.search_text("INV-4711", k=5)] == ["invoice"]
        store.save()
    with MultimodalStore.open(tmp_path / "store") as store:
        assert store.keyword_settings == {"stemming": "none", "languages": ["en", "de"]}
        assert store.info()["keywords"] == store.keyword_settings
        assert store.keywords("die Karte der Stadt").ignored == ("die", "der")
        with pytest.raises(InvalidInputError, match="unknown stemming 'snowball'"):
            store.configure_keywords(stemming="snowball")  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match=r"no stop words for language\(s\) \['xx'\]"):
            store.configure_keywords(languages=["en", "xx"])
        assert store.keyword_settings["stemming"] == "none"


def test_a_store_whose_index_predates_stemming_keeps_reading_words_as_written(tmp_path) -> None:
    path = tmp_path / "store"
    with text_store(FESTIVAL, path) as store:
        store.configure_keywords(stemming="none")  # the index as every store before the setting built it
        store.save()
    with MultimodalStore.open(path) as store:
        assert store.keyword_settings["stemming"] == "none"
        assert [hit.record.id for hit in store.search_text("maps", k=5)] == ["maps"]


def test_the_keywords_command_shows_and_changes_the_settings(tmp_path) -> None:
    from typer.testing import CliRunner

    from mm_rag.cli import app

    with text_store(FESTIVAL, tmp_path / "store") as store:
        store.save()
    runner = CliRunner()
    shown = runner.invoke(app, ["keywords", str(tmp_path / "store")])
    assert shown.exit_code == 0 and json.loads(shown.stdout) == {"stemming": "porter", "languages": ["en"]}
    changed = runner.invoke(app, ["keywords", str(tmp_path / "store"), "--stemming", "none", "--languages", "en, fr"])
    assert changed.exit_code == 0 and json.loads(changed.stdout) == {"stemming": "none", "languages": ["en", "fr"]}
    with MultimodalStore.open(tmp_path / "store") as store:  # saved
        assert [hit.record.id for hit in store.search_text("maps", k=5)] == ["maps"]
    wrong = subprocess.run(
        [sys.executable, "-m", "mm_rag.cli", "keywords", str(tmp_path / "store"), "--languages", "xx"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: configure_keywords: no stop words for language")
