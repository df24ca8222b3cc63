"""The exact moment: short sentence windows point a search hit at when something was said, and the LLM context
widens the hit back to the talk around it.

The end-to-end tests run the real `mm-rag ingest` and `mm-rag search` (typer's runner, in this process, so the
libraries import once) with their defaults on a two-minute recording of 24 spoken facts
(`fixtures.longtalk`), transcribed once per session by Whisper tiny.en and embedded by all-MiniLM-L6-v2.
"""

from __future__ import annotations

import inspect
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fixtures.longtalk import Talk, long_talk
from typer.testing import CliRunner

from mm_rag.cli import app
from mm_rag.embed.transcript import (
    DEFAULT_MAX_SENTENCES,
    DEFAULT_OVERLAP_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    Segment,
    split_sentences,
    transcript_windows,
)
from mm_rag.errors import InvalidInputError
from mm_rag.ingestion.extract import ExtractOptions

MOMENT_SECONDS = 12.0  # a top hit longer than this points at a stretch of talk, not at a moment
runner = CliRunner()


def seg(start: float, end: float, text: str) -> Segment:
    return Segment(start, end, text, 0.8)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


# --------------------------------------------------------------------------------------------------------------
# windows (no model)
# --------------------------------------------------------------------------------------------------------------
def test_default_windows_hold_two_sentences_and_share_one() -> None:
    sentences = [f"Sentence number {i} says something new." for i in range(12)]
    segments = [seg(4.0 * i, 4.0 * i + 3.5, text) for i, text in enumerate(sentences)]
    windows = transcript_windows(segments)
    assert [w.segments for w in windows] == [(i, i + 1) for i in range(11)]
    assert sorted({i for w in windows for i in w.segments}) == list(range(12))  # every segment covered
    for before, after in itertools.pairwise(windows):
        assert before.segments[-1] == after.segments[0]  # the overlap is exactly one sentence
    for window in windows:
        assert window.end - window.start <= DEFAULT_WINDOW_SECONDS
        assert window.text == " ".join(sentences[i] for i in window.segments)


def test_a_segment_of_several_sentences_is_cut_at_its_sentence_ends() -> None:
    talk = "Okay. Dr. Smith opened the meeting at nine. Sales grew by 3.5 percent. The U.S. office is new."
    pieces = split_sentences([seg(10.0, 19.0, talk), seg(19.5, 22.0, "and then we all went home")])
    assert [p.text for p in pieces] == [
        "Okay. Dr. Smith opened the meeting at nine.",  # a one-word sentence is no moment alone; titles no ends
        "Sales grew by 3.5 percent.",
        "The U.S. office is new.",
        "and then we all went home",  # no sentence end: the segment stays whole, never joined to others
    ]
    assert [p.segment for p in pieces] == [0, 0, 0, 1]
    assert pieces[0].start == 10.0 and pieces[2].end == 19.0  # times shared out within the segment
    for one, following in itertools.pairwise(pieces[:3]):
        assert one.end == following.start
    lengths = [p.end - p.start for p in pieces[:3]]
    assert lengths[0] > lengths[1] > lengths[2]  # in proportion to the characters
    windows = transcript_windows([seg(10.0, 19.0, talk), seg(19.5, 22.0, "and then we all went home")])
    assert [w.segments for w in windows] == [(0,), (0,), (0, 1)]
    assert windows[0].text == f"{pieces[0].text} {pieces[1].text}"


def test_time_and_character_limits_still_bound_a_window() -> None:
    segments = [seg(0, 6, "A first sentence here."), seg(6.5, 12, "A second one there."), seg(12, 13, "Third one now.")]
    assert [w.segments for w in transcript_windows(segments)] == [(0,), (1, 2)]  # 0-12 s would exceed 10 s
    unlimited = transcript_windows(segments, window_seconds=30, max_sentences=None)
    assert [w.segments for w in unlimited] == [(0, 1, 2)]
    assert [w.segments for w in transcript_windows(segments, overlap_seconds=0, max_sentences=1)] == [(0,), (1,), (2,)]
    long_one = transcript_windows([seg(5.0, 40.0, "one very long sentence without an end")])
    assert [(w.start, w.end) for w in long_one] == [(5.0, 40.0)]  # never split inside a sentence


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window_seconds": 0}, "window_seconds must be a positive number of seconds, got 0"),
        ({"window_seconds": float("inf")}, "window_seconds"),
        ({"window_seconds": True}, "window_seconds"),
        ({"window_seconds": 8, "overlap_seconds": 8}, r"overlap_seconds .* less than window_seconds \(8\), got 8"),
        ({"overlap_seconds": -0.5}, "overlap_seconds"),
        ({"max_sentences": 0}, "max_sentences must be a positive integer or None"),
        ({"max_sentences": 1.5}, "max_sentences"),
    ],
)
def test_bad_window_settings_are_refused_by_name(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        transcript_windows([seg(0, 1, "x")], **options)


def test_ingestion_options_check_windows_before_any_file_is_read() -> None:
    with pytest.raises(InvalidInputError, match=r"transcript windows: window_overlap .* got 12"):
        ExtractOptions(window_overlap=12)
    with pytest.raises(InvalidInputError, match="window_sentences"):
        ExtractOptions(window_sentences=-1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--window-seconds", "0"], "--window-seconds must be a positive number of seconds, got 0"),
        (["--window-overlap", "15"], "--window-overlap must be at least 0 and less than --window-seconds"),
        (["--window-sentences", "-2"], "--window-sentences must be 0 (no limit) or more, got -2"),
    ],
)
def test_the_command_refuses_bad_window_options_naming_them(tmp_path: Path, arguments: list[str], message: str) -> None:
    (tmp_path / "note.txt").write_text("nothing to hear")
    result = runner.invoke(app, ["ingest", str(tmp_path / "note.txt"), "--store", str(tmp_path / "s"), *arguments])
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "s").exists()  # refused before any store or model


def test_one_default_everywhere() -> None:
    from langchain_mm_rag.loaders import VideoLoader, WhisperSegmentParser
    from llama_index.readers.mm_rag import VideoReader, WhisperReader

    from mm_rag.cli.ingesting import ingest

    options = ExtractOptions()
    assert (options.window_seconds, options.window_overlap, options.window_sentences) == (
        DEFAULT_WINDOW_SECONDS, DEFAULT_OVERLAP_SECONDS, DEFAULT_MAX_SENTENCES,
    )  # fmt: skip
    command = inspect.signature(ingest).parameters
    assert command["window_seconds"].default == DEFAULT_WINDOW_SECONDS
    assert command["window_overlap"].default == DEFAULT_OVERLAP_SECONDS
    assert command["window_sentences"].default == DEFAULT_MAX_SENTENCES
    for integration in (WhisperSegmentParser, VideoLoader, WhisperReader, VideoReader):
        parameters = inspect.signature(integration.__init__).parameters
        assert parameters["window_seconds"].default == DEFAULT_WINDOW_SECONDS, integration
        assert parameters["overlap_seconds"].default == DEFAULT_OVERLAP_SECONDS, integration
        assert parameters["max_sentences"].default == DEFAULT_MAX_SENTENCES, integration
    assert DEFAULT_WINDOW_SECONDS <= MOMENT_SECONDS
    from mm_rag.cli.agents import mcp
    from mm_rag.cli.serving import serve

    for command in (serve, mcp):  # the servers ingest with the same windows, and take the same options
        parameters = inspect.signature(command).parameters
        assert parameters["window_seconds"].default == DEFAULT_WINDOW_SECONDS, command
        assert parameters["window_sentences"].default == DEFAULT_MAX_SENTENCES, command


@pytest.mark.parametrize("command", ["serve", "mcp"])
def test_the_servers_take_window_options_and_hand_them_to_ingestion(tmp_path: Path, command: str) -> None:
    from mm_rag import MultimodalStore
    from mm_rag.server.service import Service

    root = ["--ingest-root", str(tmp_path)] if command == "mcp" else []
    refused = runner.invoke(app, [command, "--store", str(tmp_path / "s"), "--create", *root, "--window-seconds", "0"])
    assert refused.exit_code == 2 and "--window-seconds must be a positive number of seconds, got 0" in refused.stderr
    with MultimodalStore() as store:
        store.create_space("text", 3)
        options = ExtractOptions(window_seconds=4.0, window_overlap=0.0, window_sentences=1)
        service = Service(store, text=_ThreeDimensions(), options=options)
        assert service.options is options


class _ThreeDimensions:
    space, dim = "text", 3


# --------------------------------------------------------------------------------------------------------------
# end to end: mm-rag ingest and mm-rag search with their defaults
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def talk() -> Talk:
    return long_talk()


@pytest.fixture(scope="session")
def talk_store(talk: Talk, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The long talk ingested by `mm-rag ingest` with its defaults (the packaged Whisper and MiniLM)."""
    store = tmp_path_factory.mktemp("moments") / "store"
    result = runner.invoke(app, ["ingest", str(talk.path), "--store", str(store), "--no-clip", "--no-ocr",
                                 "--device", "cpu", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["added"] == [str(talk.path)] and not report["failed"], report
    return store


@pytest.fixture(scope="session")
def top_hits(talk: Talk, talk_store: Path) -> list[dict[str, Any]]:
    """`mm-rag search --json` for every question: the top result of each."""
    hits = []
    for question in talk.questions:
        result = runner.invoke(app, ["search", question, "--store", str(talk_store), "--device", "cpu", "--json"])
        assert result.exit_code == 0, result.output
        hits.append(json.loads(result.stdout)[0])
    return hits


def overlaps(hit: dict[str, Any], span: tuple[float, float]) -> bool:
    return hit["start"] is not None and hit["start"] <= span[1] and hit["end"] >= span[0]


@pytest.mark.slow
def test_the_top_hit_is_the_moment_the_answer_was_said(talk: Talk, top_hits: list[dict[str, Any]]) -> None:
    assert len(talk.questions) >= 10 and talk.duration >= 110
    on_the_moment = [
        overlaps(hit, span) and hit["end"] - hit["start"] <= MOMENT_SECONDS for hit, span in zip(top_hits, talk.spans)
    ]
    assert sum(on_the_moment) >= 0.8 * len(on_the_moment), [
        (question, hit["start"], hit["end"], hit["text"])
        for question, hit, right in zip(talk.questions, top_hits, on_the_moment)
        if not right
    ]
    assert all(hit["modality"] == "audio" and hit["source"] == str(talk.path) for hit in top_hits)


@pytest.mark.slow
def test_the_llm_context_widens_the_moment_to_the_sentences_around_it(
    talk: Talk, talk_store: Path, top_hits: list[dict[str, Any]]
) -> None:
    from langchain_core.language_models import FakeListChatModel

    from mm_rag.apps.qa import answer
    from mm_rag.embed.loading import ModelChoice, load_models
    from mm_rag.retrieval import MultimodalRetriever
    from mm_rag.store import MultimodalStore

    # The path of `mm-rag ask`: answer() retrieves with the store's models and builds the context from the store.
    checked = 0
    with MultimodalStore.open(talk_store) as store:
        models = load_models(store, ModelChoice(audio=False, device="cpu", queries_only=True), recorded_only=True)
        retriever = MultimodalRetriever(store, text=models.text)
        for index, (question, hit) in enumerate(zip(talk.questions, top_hits)):
            if not overlaps(hit, talk.spans[index]) or not 0 < index < len(talk.sentences) - 1:
                continue
            reply = answer(question, retriever, FakeListChatModel(responses=["noted"]))
            line = reply.context.text.splitlines()[0]
            assert reply.context.citations[0].id == hit["id"]
            assert (reply.context.citations[0].start, reply.context.citations[0].end) == (hit["start"], hit["end"])
            passage = re.match(
                r"\[1\] audio transcript \S+ (\d\d):(\d\d\.\d)-(\d\d):(\d\d\.\d) \(hit [^)]*\): (.*)", line
            )
            assert passage is not None, line
            start = int(passage[1]) * 60 + float(passage[2])
            end = int(passage[3]) * 60 + float(passage[4])
            # The passage reaches over the sentence before and the one after the answering sentence…
            assert start <= talk.spans[index - 1][0] + 1.0 and end >= talk.spans[index + 1][1] - 1.0, line
            cited = [c for c in reply.context.citations if c.number == 1]  # the hits this passage merges
            low, high = min(c.start for c in cited), max(c.end for c in cited)
            # …within the default widening, give or take the nearest window on each side that reaches past it
            reach = 10.0 + DEFAULT_WINDOW_SECONDS + 0.1
            assert low - reach <= start and end <= high + reach, line
            # …holds the hit's own words, marked, and repeats no words the windows share.
            text = passage[5]
            marked = re.findall(r"\*\*(.+?)\*\*", text)
            assert marked and words(hit["text"]) <= words(" ".join(marked)), line  # other hits nearby: marked too
            plain = text.replace("**", "").split()
            sixgrams = [tuple(plain[i : i + 6]) for i in range(len(plain) - 5)]
            assert len(sixgrams) == len(set(sixgrams)), line
            checked += 1
    assert checked >= 0.7 * len(talk.questions)


@pytest.mark.slow
def test_a_video_soundtrack_gets_the_same_windows_and_lines_up_with_its_keyframes(
    spoken_sentences, tiny_clip, minilm_dir: Path, whisper_ct2_dir: Path, tmp_path: Path
) -> None:
    from mm_rag.embed.text import TextEmbedder
    from mm_rag.embed.whisper import WhisperTranscriber
    from mm_rag.ingestion import ingest
    from mm_rag.store import MultimodalStore

    video = spoken_sentences.variants["mp4"]
    with MultimodalStore(tmp_path / "store") as store:
        report = ingest(
            [video], store, clip=tiny_clip, text=TextEmbedder(minilm_dir, device="cpu"),
            transcriber=WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu", language="en"),
        )  # fmt: skip
        assert report.added == [str(video)], report.lines()
        records = store.find({"uri": str(video)})
    frames = [r for r in records if "frame_time" in r.metadata]
    soundtrack = [r for r in records if "frame_time" not in r.metadata]
    assert frames and soundtrack and all(r.modality == "video" for r in records)
    for window in soundtrack:  # the default windows of any recording: a sentence or two, never half a minute
        assert window.metadata["end"] - window.metadata["start"] <= DEFAULT_WINDOW_SECONDS, window.metadata
        assert len(re.findall(r"[.!?](?:\s|$)", window.text)) <= DEFAULT_MAX_SENTENCES, window.text
    for window in soundtrack:  # on one clock: some keyframe is on screen while each window is spoken
        start, end = window.metadata["start"], window.metadata["end"]
        assert any(f.metadata["start"] <= end and f.metadata["end"] >= start for f in frames), window.metadata
    for frame in frames:
        assert 0.0 <= frame.metadata["start"] <= frame.metadata["end"] <= spoken_sentences.duration + 0.5
