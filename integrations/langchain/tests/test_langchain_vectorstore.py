"""The vector store beyond LangChain's standard suite: conversion, filters, MMR, relevance, persistence, errors."""

from __future__ import annotations

import math
from pathlib import Path

import langchain_mm_rag
import numpy as np
import pytest
from fixtures.invoices import INVOICES
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_mm_rag import IncompatibleSpaceError, MMRagRetriever, MMRagVectorStore
from langchain_mm_rag._convert import document_to_record, record_to_document, translate_filter

from mm_rag import FilterError, InvalidInputError, MultimodalStore, Record


@pytest.fixture
def fake() -> DeterministicFakeEmbedding:
    return DeterministicFakeEmbedding(size=8)


@pytest.fixture
def numbered(fake: DeterministicFakeEmbedding) -> MMRagVectorStore:
    """60 documents: n = 0..59, parity, a colour cycling through three values, tags on multiples of 5."""
    store = MMRagVectorStore(embedding=fake)
    colours = ("red", "green", "blue")
    metadatas = [
        {"n": n, "even": n % 2 == 0, "colour": colours[n % 3], **({"tags": ["five"]} if n % 5 == 0 else {})}
        for n in range(60)
    ]
    store.add_texts([f"document number {n}" for n in range(60)], metadatas, ids=[f"d{n}" for n in range(60)])
    return store


def test_public_names_are_pinned() -> None:
    assert sorted(langchain_mm_rag.__all__) == [
        "ImageLoader", "IncompatibleSpaceError", "MMRagEmbeddings", "MMRagLoader", "MMRagRetriever",
        "MMRagVectorStore", "MultimodalSearchTool", "OpenCLIPEmbeddings", "TextEmbeddings", "VideoLoader",
        "WhisperSegmentLoader", "WhisperSegmentParser", "context_to_blocks", "create_multimodal_retriever_tool",
        "documents_to_context",
        "export_to",
    ]  # fmt: skip
    for name in langchain_mm_rag.__all__:
        assert getattr(langchain_mm_rag, name).__doc__


# --- conversion ----------------------------------------------------------------------------------------------
def test_plain_text_documents_round_trip_without_extra_metadata() -> None:
    document = Document(page_content="hello", metadata={"year": 2024, "id": 7, "modality": "text"}, id="x")
    record = document_to_record(document, "x")
    assert record == Record("x", "text", "hello", None, {"year": 2024, "id": 7, "modality": "text"})
    assert record_to_document(record) == document


def test_media_fields_are_lifted_into_the_record_and_shown_again() -> None:
    document = Document(
        page_content="", metadata={"modality": "video", "uri": "a.mp4", "doc_id": "a", "start": 1.5, "end": 3.0}
    )
    record = document_to_record(document, "k")
    assert (record.modality, record.uri, record.doc_id, record.text) == ("video", "a.mp4", "a", None)
    assert record.metadata == {"start": 1.5, "end": 3.0}
    assert record_to_document(record) == Document(page_content="", metadata=document.metadata, id="k")
    # values of another type stay user metadata
    odd = document_to_record(Document(page_content="t", metadata={"uri": 3, "modality": "sound"}), "o")
    assert (odd.modality, odd.uri, odd.metadata) == ("text", None, {"uri": 3, "modality": "sound"})


def test_neq_is_translated_at_any_depth() -> None:
    given = {"$or": [{"a": {"$neq": 1}}, {"$and": [{"b": {"$neq": "x", "$gt": 2}}]}], "c": {"$in": [1, 2]}}
    assert translate_filter(given) == {
        "$or": [{"a": {"$ne": 1}}, {"$and": [{"b": {"$ne": "x", "$gt": 2}}]}],
        "c": {"$in": [1, 2]},
    }


# --- writes ----------------------------------------------------------------------------------------------------
def test_ids_are_generated_kept_and_never_leak_into_metadata(fake) -> None:
    store = MMRagVectorStore(embedding=fake)
    documents = [Document(page_content="a", metadata={"k": 1}), Document(page_content="b", id="mine")]
    ids = store.add_documents(documents)
    assert ids[1] == "mine" and len(ids[0]) == 36 and ids[0] != ids[1]
    assert documents[0].id is None  # the caller's documents are not changed
    found = store.get_by_ids([ids[1], "missing", ids[0]])
    assert [(d.id, d.page_content, d.metadata) for d in found] == [("mine", "b", {}), (ids[0], "a", {"k": 1})]
    assert store.add_texts(["c", "d"], ids=[None, "d"])[1] == "d"
    assert store.add_documents([]) == []


def test_delete_none_empties_the_store(numbered: MMRagVectorStore) -> None:
    assert numbered.delete(["d1", "unknown"]) is True
    assert numbered.store.count() == 59
    assert numbered.delete() is True
    assert numbered.store.count() == 0 and numbered.similarity_search("document", k=3) == []


def test_wrong_dimension_and_bad_filters_fail_clearly_and_change_nothing(numbered: MMRagVectorStore) -> None:
    before = numbered.store.count()
    with pytest.raises(InvalidInputError, match="dim 8"):
        numbered.add_embeddings([("short", [1.0, 2.0, 3.0])], ids=["short"])
    with pytest.raises(InvalidInputError, match="rectangular|shape"):
        numbered.add_embeddings([("a", [1.0] * 8), ("b", [1.0] * 7)])
    with pytest.raises(FilterError, match=r"\$like"):
        numbered.similarity_search("document", k=2, filter={"colour": {"$like": "re%"}})
    with pytest.raises(FilterError):
        numbered.max_marginal_relevance_search("document", k=2, filter={"$nor": [{"n": 1}]})
    with pytest.raises(InvalidInputError, match="metadatas"):
        numbered.add_texts(["a", "b"], [{"n": 1}])
    assert numbered.store.count() == before and numbered.get_by_ids(["short"]) == []


def test_a_refused_first_batch_leaves_no_space_behind(fake) -> None:
    store = MMRagVectorStore(embedding=fake)
    with pytest.raises(InvalidInputError, match="more than once"):
        store.add_texts(["a", "b"], ids=["same", "same"])
    assert store.store.spaces == {} and store.store.count() == 0
    assert store.add_texts(["a"], ids=["a"]) == ["a"]


def test_a_bad_filter_is_refused_even_before_the_first_add(fake) -> None:
    with pytest.raises(FilterError):
        MMRagVectorStore(embedding=fake).similarity_search("q", filter={"a": {"$regex": "x"}})


# --- filters ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ({"colour": {"$neq": "red"}}, lambda n: n % 3 != 0),
        (
            {"$or": [{"colour": "red"}, {"$and": [{"even": True}, {"n": {"$gte": 50}}]}]},
            lambda n: n % 3 == 0 or (n % 2 == 0 and n >= 50),
        ),
        ({"tags": {"$contains": "five"}, "n": {"$lt": 40}}, lambda n: n % 5 == 0 and n < 40),
        ({"$not": {"n": {"$in": list(range(5, 60))}}}, lambda n: n < 5),
        (lambda d: d.metadata["n"] % 7 == 0, lambda n: n % 7 == 0),
        (lambda d: d.metadata["n"] in (3, 59), lambda n: n in (3, 59)),
    ],
    ids=["neq", "nested-or", "contains-and-lt", "not-in", "callable", "callable-rare"],
)
def test_filtered_search_returns_k_matching_documents_when_enough_match(numbered, filter, expected) -> None:
    matching = sum(expected(n) for n in range(60))
    for k in (1, 4, 9, 60):
        found = numbered.similarity_search("document number 12", k=k, filter=filter)
        assert len(found) == min(k, matching), (k, matching)
        assert all(expected(d.metadata["n"]) for d in found)
        scores = [s for _, s in numbered.similarity_search_with_score("document number 12", k=k, filter=filter)]
        assert scores == sorted(scores, reverse=True)


def test_a_callable_filter_agrees_with_the_same_dict_filter(numbered) -> None:
    query = numbered.embeddings.embed_query("anything")
    by_dict = numbered.similarity_search_by_vector(query, k=7, filter={"colour": "blue", "even": False})
    by_callable = numbered.similarity_search_by_vector(
        query, k=7, filter=lambda d: d.metadata["colour"] == "blue" and not d.metadata["even"]
    )
    assert [d.id for d in by_dict] == [d.id for d in by_callable] and len(by_dict) == 7


def test_record_fields_filter_as_documents_show_them(numbered) -> None:
    image = Document(page_content="", metadata={"modality": "image", "uri": "x.png"}, id="img")
    with pytest.raises(InvalidInputError, match="cannot embed images"):
        numbered.add_documents([image])  # a text-only embedding and no caption: nothing to embed
    numbered.add_documents([Document(page_content="a caption", metadata=image.metadata, id="img")])
    assert [d.id for d in numbered.similarity_search("x", k=5, filter={"modality": "image"})] == ["img"]
    assert [d.id for d in numbered.similarity_search("x", k=5, filter={"id": "d3"})] == ["d3"]


# --- MMR -------------------------------------------------------------------------------------------------------
class AxisEmbedding(Embeddings):
    """Every query is the x axis (documents here come with their own vectors)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0, 0.0] for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return [1.0, 0.0, 0.0]


@pytest.fixture
def geometric() -> MMRagVectorStore:
    """Vectors at known angles to the query (the x axis): near 0°, twin 2°, other 10°, side 40°, far 180°."""
    store = MMRagVectorStore(embedding=AxisEmbedding())

    def at(degrees: float) -> list[float]:
        return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees)), 0.0]

    rows = {
        "near": (at(0), "a"),
        "twin": (at(2), "a"),
        "side": (at(40), "b"),
        "far": (at(180), "b"),
        "other": (at(10), "c"),
    }
    store.add_embeddings([(name, vector) for name, (vector, _) in rows.items()],
                         [{"group": group} for _, group in rows.values()], ids=list(rows))  # fmt: skip
    return store


def test_mmr_prefers_diversity_and_reports_similarity_scores(geometric) -> None:
    query = [1.0, 0.0, 0.0]
    plain = geometric.max_marginal_relevance_search_with_score_by_vector(query, k=3, lambda_mult=1.0)
    assert [d.id for d, _ in plain] == ["near", "twin", "other"]
    # λ = 0.3: after `near`, `far` gains 0.3·(-1) - 0.7·cos 180° = 0.4, `side` 0.3·cos 40° - 0.7·cos 40° = -0.31,
    # `twin` -0.4; then `side` (-0.31 against max(cos 40°, cos 140°)) beats `twin` and `other`.
    diverse = geometric.max_marginal_relevance_search_with_score_by_vector(query, k=3, lambda_mult=0.3)
    assert [d.id for d, _ in diverse] == ["near", "far", "side"]
    for document, score in diverse:
        assert isinstance(score, float)
        assert score == pytest.approx(
            float(np.dot(query, geometric.store.vectors(geometric.space, [document.id])[document.id])), abs=1e-5
        )


def test_mmr_chooses_among_filtered_candidates_only(geometric) -> None:
    found = geometric.max_marginal_relevance_search_by_vector([1.0, 0.0, 0.0], k=3, fetch_k=10, lambda_mult=0.5,
                                                              filter={"group": {"$neq": "a"}})  # fmt: skip
    # `twin`/`near` are filtered out; after `other`, `far` gains -0.5 + 0.5·cos 10° > `side`'s 0.5·(cos 40° - cos 30°)
    assert [d.id for d in found] == ["other", "far", "side"]
    retriever = geometric.as_retriever(search_type="mmr", search_kwargs={"k": 2, "filter": {"group": "b"}})
    assert {d.id for d in retriever.invoke("q")} == {"side", "far"}


def test_relevance_scores_are_python_floats_in_the_unit_interval(geometric) -> None:
    pairs = geometric._similarity_search_with_relevance_scores("q", k=5)  # the base class's path
    assert len(pairs) == 5 and all(type(s) is float and 0.0 <= s <= 1.0 for _, s in pairs)
    relevance = geometric._select_relevance_score_fn()
    assert (
        relevance(1.0) == 1.0
        and relevance(-1.0) == 0.0
        and relevance(0.0) == 0.5
        and type(relevance(np.float32(0.2))) is float
    )
    retriever = geometric.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.95, "k": 5}
    )
    assert {d.id for d in retriever.invoke("q")} == {"near", "twin", "other"}  # cos 10° → 0.992; cos 40° → 0.883
    plain = geometric.as_retriever(search_kwargs={"k": 2, "filter": {"group": {"$in": ["b", "c"]}}})
    assert [d.id for d in plain.invoke("q")] == ["other", "side"]


def test_l2_spaces_map_distances_into_the_unit_interval(fake) -> None:
    store = MMRagVectorStore(embedding=fake, metric="l2")
    store.add_embeddings([("a", [0.0, 0.0]), ("b", [3.0, 4.0])], ids=["a", "b"])
    pairs = store.similarity_search_with_score_by_vector([0.0, 0.0], k=2)
    assert [round(s, 4) for _, s in pairs] == [0.0, -5.0]
    assert [store._select_relevance_score_fn()(s) for _, s in pairs] == [1.0, pytest.approx(1 / 6)]


# --- persistence and wrapping ----------------------------------------------------------------------------------
def test_save_and_load_round_trip_without_pickle(numbered, fake, tmp_path: Path) -> None:
    expected = numbered.similarity_search_with_score("document number 3", k=5, filter={"even": False})
    numbered.save(tmp_path / "saved")
    files = sorted(p.relative_to(tmp_path / "saved").as_posix() for p in (tmp_path / "saved").rglob("*") if p.is_file())
    assert "mmrag.json" in files and "catalog.sqlite" in files
    assert not any(name.endswith((".pkl", ".pickle")) for name in files)
    for file in (tmp_path / "saved").rglob("*"):
        if file.is_file():
            assert not file.read_bytes().startswith(b"\x80"), file  # no pickle protocol header anywhere
    loaded = MMRagVectorStore.load(tmp_path / "saved", fake)
    assert loaded.space == numbered.space
    assert loaded.similarity_search_with_score("document number 3", k=5, filter={"even": False}) == expected
    loaded.add_texts(["later"], ids=["later"])
    loaded.save()
    assert MMRagVectorStore.load(tmp_path / "saved", fake).get_by_ids(["later"])[0].page_content == "later"


def test_a_persistent_store_created_by_path_reopens(fake, tmp_path: Path) -> None:
    store = MMRagVectorStore.from_texts(["one", "two"], fake, ids=["1", "2"], path=tmp_path / "s")
    store.save()
    store.store.close()
    assert {d.id for d in MMRagVectorStore(embedding=fake, path=tmp_path / "s").get_by_ids(["1", "2"])} == {"1", "2"}


def test_an_existing_space_must_fit_the_embedding(tiny_clip) -> None:
    from langchain_mm_rag import OpenCLIPEmbeddings

    store = MultimodalStore()
    store.create_space("clip", 32)
    with pytest.raises(IncompatibleSpaceError, match="32"):
        MMRagVectorStore(embedding=OpenCLIPEmbeddings(tiny_clip), store=store)
    with pytest.raises(IncompatibleSpaceError, match="metric"):
        MMRagVectorStore(embedding=DeterministicFakeEmbedding(size=32), store=store, space="clip", metric="l2")


@pytest.mark.asyncio
async def test_async_variants_share_the_sync_implementation(numbered) -> None:
    filter = {"colour": {"$neq": "green"}}
    assert await numbered.asimilarity_search("document", k=5, filter=filter) == numbered.similarity_search(
        "document", k=5, filter=filter
    )
    assert await numbered.amax_marginal_relevance_search(
        "document", k=3, filter=filter
    ) == numbered.max_marginal_relevance_search("document", k=3, filter=filter)
    retriever = MMRagRetriever(vectorstore=numbered, k=3, filter=lambda d: d.metadata["n"] > 50)
    found = await retriever.ainvoke("document")
    assert len(found) == 3 and all(d.metadata["n"] > 50 for d in found)
    assert len(await retriever.ainvoke("document", k=20)) == 9


_OTHER_WORKER = """
import sys
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_mm_rag import MMRagVectorStore

store = MMRagVectorStore(path=sys.argv[1], embedding=DeterministicFakeEmbedding(size=8))
store.add_texts(["a note from the other worker", "another one"], [{"worker": 2}, {"worker": 2}], ids=["w1", "w2"])
store.delete(["d0"])
store.save()
"""


def test_two_app_workers_on_one_path_see_each_others_commits(tmp_path: Path, fake: DeterministicFakeEmbedding) -> None:
    """Workers of one app (separate processes) share a store: each sees the other's saved documents and deletes."""
    import subprocess
    import sys

    path = tmp_path / "shared"
    store = MMRagVectorStore(path=path, embedding=fake)
    store.add_texts(["document number 0", "document number 1"], [{"worker": 1}, {"worker": 1}], ids=["d0", "d1"])
    store.save()
    worker = subprocess.run(
        [sys.executable, "-c", _OTHER_WORKER, str(path)], check=False, capture_output=True, text=True, timeout=300
    )
    assert worker.returncode == 0, worker.stderr
    found = store.similarity_search("a note from the other worker", k=1, filter={"worker": 2})
    assert [document.id for document in found] == ["w1"]  # the next search sees the other worker's commit
    assert store.get_by_ids(["d0", "d1", "w2"]) == [store.get_by_ids(["d1"])[0], store.get_by_ids(["w2"])[0]]
    store.add_texts(["a third worker's note"], [{"worker": 1}], ids=["d2"])  # written on top, losing nothing
    store.save()
    reopened = MMRagVectorStore.load(path, embedding=fake)
    assert sorted(document.id for document in reopened.get_by_ids(["d0", "d1", "d2", "w1", "w2"])) == ["d1", "d2", "w1", "w2"]


@pytest.mark.slow  # a real model
def test_hybrid_and_keyword_search_find_exact_codes_through_the_retriever(minilm_dir: Path) -> None:
    from langchain_mm_rag import TextEmbeddings

    store = MMRagVectorStore(embedding=TextEmbeddings(model=str(minilm_dir), device="cpu"))
    store.add_texts(list(INVOICES.values()), [{"n": n} for n in range(len(INVOICES))], ids=list(INVOICES))
    question = "What does invoice INV-6021 say?"
    keyword = MMRagRetriever(vectorstore=store, search_type="keyword", k=3).invoke(question)
    assert keyword[0].id == "inv-6021"
    hybrid = MMRagRetriever(vectorstore=store, search_type="hybrid", k=3).invoke(question)
    assert "inv-6021" in [document.id for document in hybrid]
    assert MMRagRetriever(vectorstore=store, search_type="hybrid", k=3, keyword_weight=3.0).invoke(question)[0].id == "inv-6021"
    # filters restrict both rankings exactly, dict or callable
    only_late = store.hybrid_search("invoice INV-4711", k=2, filter={"n": {"$gte": 4}})
    assert len(only_late) == 2 and all(document.metadata["n"] >= 4 for document in only_late)
    picked = store.keyword_search_with_score("euros", k=2, filter=lambda document: document.metadata["n"] % 4 == 3)
    assert {document.id for document, _ in picked} == {"inv-6021", "inv-1187"}  # the only two that pass
    assert store.keyword_search("no such words here", k=3) == []
    with pytest.raises(FilterError, match="unknown operator"):  # checked before any search or embedding
        store.hybrid_search("invoice", k=2, filter={"n": {"$near": 1}})
    with pytest.raises(FilterError, match="unknown operator"):
        store.keyword_search("invoice", k=2, filter={"n": {"$near": 1}})
