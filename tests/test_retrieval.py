"""`MultimodalRetriever`: per-modality k, fusion order, dedup across spaces, filters in every space, MMR, queries
by text, image and voice; then the same end to end with real models (tiny CLIP, MiniLM, Whisper tiny.en)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mm_rag import InvalidInputError, MultimodalStore, Record
from mm_rag.embed.transcript import Segment, Transcript
from mm_rag.mmr import mmr_order, mmr_select
from mm_rag.retrieval import RRF_K, MultimodalRetriever


class TableEmbedder:
    """Maps known queries (texts, or image names standing in for images) to fixed vectors: fusion arithmetic
    is checked on vectors chosen by hand, not on what a model happens to produce."""

    def __init__(self, space: str, table: dict[str, list[float]]) -> None:
        self.space = space
        self.table = {key: np.asarray(value, dtype=np.float32) for key, value in table.items()}
        self.dim = len(next(iter(self.table.values())))

    def embed_texts(self, texts):
        return np.stack([self.table[text] for text in texts])

    embed_images = embed_texts


class ScriptedTranscriber:
    def __init__(self, text: str) -> None:
        self.text = text

    def transcribe(self, source) -> Transcript:
        words = [Segment(0.0, 1.0, self.text, 0.9)] if self.text else []
        return Transcript(words, "en", 1.0)


def unit(*values: float) -> list[float]:
    vector = np.asarray(values, dtype=np.float32)
    return (vector / np.linalg.norm(vector)).tolist()


@pytest.fixture
def store():
    with MultimodalStore() as store:
        yield store


def fill(store, space: str, items: list[tuple[Record, list[float]]]) -> None:
    store.create_space(space, len(items[0][1]))
    store.upsert([record for record, _ in items], {space: np.asarray([vector for _, vector in items])})


def ids(results) -> list[str]:
    return [result.record.id for result in results]


# --- per-modality k and fusion ---------------------------------------------------------------------------
def test_each_modality_keeps_its_own_k_however_many_others_score_higher(store) -> None:
    texts = [(Record(f"t{i}", "text", text=f"passage {i}"), unit(1, 0.01 * i)) for i in range(30)]
    images = [(Record(f"i{i}", "image", uri=f"{i}.jpg"), unit(0.2, 1, 0.1 * i)[:2]) for i in range(3)]
    fill(store, "clip", texts + images)
    clip = TableEmbedder("clip", {"q": unit(1, 0)})
    results = MultimodalRetriever(store, clip=clip, text_k=4, image_k=2, audio_k=0, video_k=0).retrieve("q")
    modalities = [result.modality for result in results]
    assert modalities.count("text") == 4 and modalities.count("image") == 2
    # texts are far closer, yet images are not crowded out; per modality the order is the space's order
    assert [i for i in ids(results) if i.startswith("t")] == ["t0", "t1", "t2", "t3"]
    assert ids(MultimodalRetriever(store, clip=clip).retrieve("q", k={"text": 0, "image": 1})) == ["i0"]


def test_rrf_sums_reciprocal_ranks_and_a_record_found_twice_appears_once(store) -> None:
    # "both" is 2nd in the text space and 2nd in the CLIP space; "text-top" and "clip-top" lead one list each.
    fill(store, "text", [(Record("text-top", "text"), unit(1, 0)), (Record("both", "text"), unit(1, 0.3)),
                         (Record("text-3", "text"), unit(1, 0.9))])  # fmt: skip
    store.create_space("clip", 2)
    store.upsert([Record("clip-top", "text")], {"clip": [unit(0, 1)]})
    store.upsert([Record("both", "text")], {"text": [unit(1, 0.3)], "clip": [unit(0.3, 1)]})
    text = TableEmbedder("text", {"q": unit(1, 0)})
    clip = TableEmbedder("clip", {"q": unit(0, 1)})
    results = MultimodalRetriever(store, clip=clip, text=text, text_k=10, fusion="rrf").retrieve("q")
    assert ids(results) == ["both", "clip-top", "text-top", "text-3"]
    both = results[0]
    assert both.score == pytest.approx(2 / (RRF_K + 2))
    assert {(e.space, e.rank) for e in both.evidence} == {("text", 1), ("clip", 1)}
    assert results[1].score == pytest.approx(1 / (RRF_K + 1))
    assert "text space #2" in both.explain() and "clip space #2" in both.explain()


def test_comparable_scores_rank_together_and_the_modality_gap_is_kept_apart(store) -> None:
    # Text space: a transcript moment (0.9) and a passage (0.5) are both text: one ranking, by score.
    fill(store, "text", [(Record("passage", "text", text="p"), unit(1, 1.7)),
                         (Record("moment", "audio", text="m", metadata={"start": 1, "end": 2}), unit(1, 0.5))])  # fmt: skip
    text = TableEmbedder("text", {"q": unit(1, 0)})
    assert ids(MultimodalRetriever(store, text=text).retrieve("q")) == ["moment", "passage"]
    # CLIP space: a caption close to the query (0.9) and a picture far below it (0.3, the modality gap) each
    # lead their own ranking, so both get first-rank credit.
    store.create_space("clip", 2)
    store.upsert([Record("caption", "text", text="c"), Record("picture", "image")],
                 {"clip": [unit(1, 0.5), unit(1, 3.2)]})  # fmt: skip
    clip = TableEmbedder("clip", {"q": unit(1, 0)})
    results = MultimodalRetriever(store, clip=clip).retrieve("q", k={"text": 1, "image": 1, "audio": 0})
    assert {r.record.id: r.evidence[0].rank for r in results} == {"caption": 0, "picture": 0}


def test_weights_and_relative_score_fusion_change_the_order(store) -> None:
    fill(store, "text", [(Record("a", "text"), unit(1, 0.2)), (Record("b", "text"), unit(1, 1))])
    store.create_space("clip", 2)
    store.upsert([Record("c", "text")], {"clip": [unit(0, 1)]})
    text = TableEmbedder("text", {"q": unit(1, 0)})
    clip = TableEmbedder("clip", {"q": unit(0, 1)})
    default = MultimodalRetriever(store, clip=clip, text=text)
    assert ids(default.retrieve("q")) == ["c", "a", "b"]  # a tie of first places goes to the closer raw match
    assert ids(MultimodalRetriever(store, clip=clip, text=text, weights={"clip": 2.0}).retrieve("q"))[0] == "c"
    relative = MultimodalRetriever(store, clip=clip, text=text, fusion="relative").retrieve("q")
    # min-max per space: a → 1, b → 0 in the text space; c alone in the CLIP space → 1
    assert {r.record.id: r.score for r in relative} == {"a": 1.0, "c": 1.0, "b": 0.0}


def test_filters_restrict_every_space(store) -> None:
    fill(
        store, "text", [(Record(f"t{i}", "text", metadata={"year": 2000 + i % 3}), unit(1, 0.1 * i)) for i in range(9)]
    )
    store.create_space("clip", 2)
    store.upsert([Record(f"i{i}", "image", metadata={"year": 2000 + i % 3}) for i in range(6)],
                 {"clip": [unit(0.1 * i, 1) for i in range(6)]})  # fmt: skip
    retriever = MultimodalRetriever(
        store, clip=TableEmbedder("clip", {"q": unit(0, 1)}), text=TableEmbedder("text", {"q": unit(1, 0)}),
        text_k=10, image_k=10, filter={"year": {"$gte": 2001}},
    )  # fmt: skip
    results = retriever.retrieve("q", filter={"year": {"$ne": 2002}})
    assert results and all(r.record.metadata["year"] == 2001 for r in results)
    assert sorted(ids(results)) == ["i1", "i4", "t1", "t4", "t7"]  # every match, from both spaces


def test_mmr_pushes_near_duplicates_down(store) -> None:
    fill(store, "clip", [(Record("a", "image"), unit(1, 0, 0)), (Record("a-copy", "image"), unit(1, 0.01, 0)),
                         (Record("other", "image"), unit(0.8, 0, 0.6))])  # fmt: skip
    clip = TableEmbedder("clip", {"q": unit(1, 0, 0)})
    assert ids(MultimodalRetriever(store, clip=clip).retrieve("q")) == ["a", "a-copy", "other"]
    assert ids(MultimodalRetriever(store, clip=clip, diversity=0.3).retrieve("q")) == ["a", "other", "a-copy"]


def test_mmr_order_by_hand() -> None:
    similarity = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.1], [0.0, 0.1, 1.0]])
    assert mmr_order(np.array([1.0, 0.95, 0.5]), similarity, 1.0) == [0, 1, 2]
    assert mmr_order(np.array([1.0, 0.95, 0.5]), similarity, 0.5) == [0, 2, 1]
    assert mmr_order(np.array([1.0, 0.95, 0.5]), similarity, 0.5, limit=2) == [0, 2]
    # relevance to the query: 0.8, 0.876, 0.96, 0; row 1 repeats row 2 (cosine 0.71) more than row 0 does (0.6)
    candidates = np.array([[1.0, 0.0], [0.99, 0.14], [0.6, 0.8], [0.0, 0.0]])
    query = np.array([0.8, 0.6])
    assert mmr_select(query, candidates, 4, 1.0) == [2, 1, 0, 3]
    assert mmr_select(query, candidates, 2, 0.5) == [2, 0]
    assert mmr_select(query, candidates[:0], 2, 0.5) == []
    with pytest.raises(InvalidInputError, match="lambda"):
        mmr_select(query, candidates, 2, 1.5)


def test_query_by_image_and_by_voice(store) -> None:
    fill(store, "clip", [(Record("cat", "image"), unit(1, 0)), (Record("dog", "image"), unit(0, 1))])
    clip = TableEmbedder(
        "clip", {"dog.jpg": unit(0.1, 1), "a dog barking": unit(0, 1), "show me a dog barking": unit(0.2, 1)}
    )
    retriever = MultimodalRetriever(store, clip=clip, transcriber=ScriptedTranscriber("a dog barking"))
    by_image = retriever.retrieve(image="dog.jpg")
    assert ids(by_image)[0] == "dog" and by_image[0].evidence[0].query == "image"
    assert ids(retriever.retrieve(audio=b"RIFF..."))[0] == "dog"
    assert ids(retriever.retrieve("show me", audio=b"RIFF..."))[0] == "dog"  # query and speech joined


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "give a query"),
        ({"query": "   "}, "empty"),
        ({"query": 3}, "must be text"),
        ({"query": "q", "k": {"smell": 1}}, "unknown modality"),
        ({"query": "q", "k": {"text": -1}}, "non-negative"),
    ],
)
def test_bad_queries_are_refused_clearly(store, arguments, message) -> None:
    fill(store, "clip", [(Record("a", "image"), unit(1, 0))])
    retriever = MultimodalRetriever(store, clip=TableEmbedder("clip", {"q": unit(1, 0)}))
    with pytest.raises(InvalidInputError, match=message):
        retriever.retrieve(**arguments)


def test_voice_and_image_queries_need_their_models(store) -> None:
    fill(store, "text", [(Record("a", "text"), unit(1, 0))])
    text_only = MultimodalRetriever(store, text=TableEmbedder("text", {"q": unit(1, 0)}))
    with pytest.raises(InvalidInputError, match="transcriber"):
        text_only.retrieve(audio=b"...")
    with pytest.raises(InvalidInputError, match="CLIP"):
        text_only.retrieve(image=b"...")
    silent = MultimodalRetriever(store, text=text_only.text, transcriber=ScriptedTranscriber(""))
    with pytest.raises(InvalidInputError, match="no speech"):
        silent.retrieve(audio=b"...")
    with pytest.raises(InvalidInputError, match="embedder"):
        MultimodalRetriever(store)
    with pytest.raises(InvalidInputError, match="fusion"):
        MultimodalRetriever(store, text=text_only.text, fusion="borda")  # type: ignore[arg-type]


def test_results_carry_source_and_time_range(store) -> None:
    window = Record("w", "audio", text="hello", uri="talk.wav", metadata={"start": 12.5, "end": 20}, doc_id="talk")
    fill(store, "text", [(window, unit(1, 0))])
    result = MultimodalRetriever(store, text=TableEmbedder("text", {"q": unit(1, 0)})).retrieve("q")[0]
    assert (result.modality, result.source, result.start, result.end) == ("audio", "talk.wav", 12.5, 20.0)
    data = result.to_dict()
    assert data["start"] == 12.5 and data["evidence"][0]["space"] == "text" and "text space #1" in data["explanation"]


# --- readable scores, relevance floors, only real keyword matches ---------------------------------------------
def test_each_result_shows_its_raw_score_per_ranking_and_the_query_form(store) -> None:
    fill(
        store,
        "text",
        [
            (Record("a", "text", text="plum cake"), unit(1, 0.1)),
            (Record("b", "text", text="x"), unit(0, 1)),
            (Record("c", "text", text="y"), unit(1, 1)),
        ],
    )
    text = TableEmbedder("text", {"plum cake": unit(1, 0), "plum": unit(1, 0)})
    result = MultimodalRetriever(store, text=text).retrieve("plum cake")[0]
    assert result.record.id == "a" and set(result.scores) == {"text", "lexical"}
    assert result.scores["text"] == pytest.approx(float(np.dot(unit(1, 0), unit(1, 0.1))), abs=1e-6)
    assert result.scores["lexical"] > 0 and result.to_dict()["scores"] == result.scores
    heard = MultimodalRetriever(store, text=text, transcriber=ScriptedTranscriber("plum")).retrieve(audio=b"...")
    assert {e.query for e in heard[0].evidence} == {"audio"} and "by audio" in heard[0].explain()
    typed = MultimodalRetriever(store, text=text, transcriber=ScriptedTranscriber("cake")).retrieve("plum", audio=b".")
    assert {e.query for e in typed[0].evidence} == {"text"}  # the typed words lead; the heard ones join them


def test_min_score_drops_weak_hits_per_space(store) -> None:
    fill(store, "text", [(Record(f"t{i}", "text", text=f"note {i}"), unit(1, 0.5 * i)) for i in range(4)])
    text = TableEmbedder("text", {"q": unit(1, 0), "note 1": unit(1, 0)})
    cosines = {f"t{i}": float(np.dot(unit(1, 0), unit(1, 0.5 * i))) for i in range(4)}  # 1, .89, .71, .55
    kept = MultimodalRetriever(store, text=text, min_score=0.8).retrieve("q")
    assert ids(kept) == ["t0", "t1"] and all(cosines[r.record.id] >= 0.8 for r in kept)
    assert ids(MultimodalRetriever(store, text=text, min_score={"text": 0.6}).retrieve("q")) == ["t0", "t1", "t2"]
    assert MultimodalRetriever(store, text=text, min_score=1.01).retrieve("q") == []  # however weak, no padding
    # A floor on keywords only: "note" is in every record, "1" in one; BM25 keeps t1 at the top either way.
    keywords = MultimodalRetriever(store, text=text, mode="lexical", min_score={"lexical": 100.0})
    assert keywords.retrieve("note 1") == []
    for bad in ("high", {"text": "high"}, {"text": float("nan")}):
        with pytest.raises(InvalidInputError, match="min_score"):
            MultimodalRetriever(store, text=text, min_score=bad)  # type: ignore[arg-type]


def test_parse_min_score_reads_a_number_pairs_or_json() -> None:
    from mm_rag.retrieval import parse_min_score

    assert parse_min_score("0.3") == 0.3 and parse_min_score(None) is None and parse_min_score(" ") is None
    assert parse_min_score("text=0.35, lexical=2") == {"text": 0.35, "lexical": 2.0}
    assert parse_min_score('{"clip": 0.2}') == {"clip": 0.2}
    for bad in ("text", "text=high", "[1]", '{"text": "x"}'):
        with pytest.raises(InvalidInputError, match="min_score"):
            parse_min_score(bad)


def test_keyword_hits_with_a_nil_bm25_enter_no_fusion(store) -> None:
    # "lake" is in two of four records: BM25's idf is 0 (FTS5 floors it at 1e-6), so those two matches rank
    # nothing; the dense ranking alone decides.
    items = [(Record("a", "text", text="lake view"), unit(0, 1)), (Record("b", "text", text="lake shore"), unit(0.1, 1)),
             (Record("c", "text", text="mountain"), unit(1, 0.1)), (Record("d", "text", text="valley"), unit(1, 1))]  # fmt: skip
    fill(store, "text", items)
    text = TableEmbedder("text", {"lake": unit(1, 0)})
    assert [h.record.id for h in store.search_text("lake", k=5)] and max(
        h.score for h in store.search_text("lake")
    ) < 1e-3
    hybrid = MultimodalRetriever(store, text=text).retrieve("lake")
    assert ids(hybrid)[:2] == ["c", "d"] and not any(e.space == "lexical" for r in hybrid for e in r.evidence)


def test_convex_combination_counts_scores_from_zero_and_the_other_fusions_are_settings(store) -> None:
    # Three near-equal weak matches: min-max (relative) spreads them over [0, 1]; the convex combination keeps
    # them near-equal (each over the best), so one weak ranking cannot outvote a strong one.
    fill(store, "text", [(Record(i, "text"), unit(1, x)) for i, x in (("a", 0), ("b", 0.05), ("c", 0.1))])
    text = TableEmbedder("text", {"q": unit(1, 0)})
    convex = MultimodalRetriever(store, text=text).retrieve("q")
    cosines = [float(np.dot(unit(1, 0), unit(1, x))) for x in (0, 0.05, 0.1)]
    assert [r.score for r in convex] == pytest.approx([c / cosines[0] for c in cosines], abs=1e-5)  # float32
    relative = MultimodalRetriever(store, text=text, fusion="relative").retrieve("q")
    assert [r.score for r in relative] == pytest.approx(
        [1.0, (cosines[1] - cosines[2]) / (cosines[0] - cosines[2]), 0.0], abs=1e-4
    )


def test_rrf_k_and_relative_score_fusion_are_settings(store) -> None:
    fill(store, "text", [(Record("a", "text"), unit(1, 0)), (Record("b", "text"), unit(1, 1))])
    text = TableEmbedder("text", {"q": unit(1, 0)})
    results = MultimodalRetriever(store, text=text, fusion="rrf", rrf_k=0).retrieve("q")
    assert [r.score for r in results] == pytest.approx([1.0, 0.5])
    with pytest.raises(InvalidInputError, match="rrf_k"):
        MultimodalRetriever(store, text=text, rrf_k=-1)
    with pytest.raises(InvalidInputError, match="'weighted' is now 'relative'"):
        MultimodalRetriever(store, text=text, fusion="weighted")  # type: ignore[arg-type]


# --- real models -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ingested(tmp_path_factory, tiny_clip, minilm_dir, whisper_ct2_dir, spoken_sentences):
    """Drawn shapes, a few passages and the spoken sentences, ingested with the real models."""
    from fixtures.tiny_clip import draw_shape

    from mm_rag import TextEmbedder, WhisperTranscriber, ingest
    from mm_rag.ingestion.extract import ExtractOptions

    folder = tmp_path_factory.mktemp("retrieval-media")
    for colour, shape in (("red", "circle"), ("blue", "square"), ("green", "triangle")):
        draw_shape(colour, shape, size=64).save(folder / f"{colour}-{shape}.png")
    (folder / "fruit.txt").write_text("Bananas are yellow and rich in potassium.")
    (folder / "space.txt").write_text("The rocket launched into orbit around the planet.")
    (folder / "speech.wav").write_bytes(spoken_sentences.path.read_bytes())
    text = TextEmbedder(minilm_dir, device="cpu")
    transcriber = WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu", language="en")
    store = MultimodalStore()
    one_sentence_each = ExtractOptions(window_seconds=1.0, window_overlap=0.0)  # windows hold one segment
    report = ingest(folder, store, clip=tiny_clip, text=text, transcriber=transcriber, options=one_sentence_each)
    assert not report.failed, report.failed
    yield MultimodalRetriever(store, clip=tiny_clip, text=text, transcriber=transcriber), folder
    store.close()


def test_a_caption_finds_its_picture_and_a_question_its_passage(ingested) -> None:
    retriever, _ = ingested
    results = retriever.retrieve("a blue square", k={"text": 0, "audio": 0})
    assert results[0].record.uri.endswith("blue-square.png")
    # The tiny CLIP's text tower knows only shapes and colours, so its ranking of passages is noise; with equal
    # weights a noise ranking can tie the text space's under RRF. Trusting the text space more breaks that.
    text_first = dataclasses.replace(retriever, weights={retriever.clip.space: 0.5})
    passages = text_first.retrieve("which fruit has potassium?", k={"image": 0, "audio": 0})
    assert passages[0].record.text.startswith("Bananas")
    assert {e.space for e in passages[0].evidence} >= {"text"}


def test_a_picture_finds_its_own_kind(ingested) -> None:
    from fixtures.tiny_clip import draw_shape

    retriever, _ = ingested
    results = retriever.retrieve(image=draw_shape("red", "circle", size=64, seed=99), k={"text": 0, "audio": 0})
    assert results[0].record.uri.endswith("red-circle.png")


def test_a_spoken_question_finds_the_moment_it_was_said(ingested, spoken_sentences) -> None:
    retriever, _ = ingested
    sentence = spoken_sentences.sentences[1]
    results = retriever.retrieve(sentence, k={"text": 0, "image": 0, "audio": 1})
    (first, last) = spoken_sentences.spans[1]
    assert results[0].modality == "audio"
    assert results[0].start <= first + 0.5 and results[0].end >= last - 0.5
