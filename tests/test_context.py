"""`build_context`: citations, time ranges, token budget, downscaled images valid for LangChain and LlamaIndex."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mm_rag import InvalidInputError, Record
from mm_rag.context import build_context
from mm_rag.retrieval import Evidence, Retrieved


def result(record: Record, score: float = 1.0) -> Retrieved:
    return Retrieved(record, score, (Evidence("clip", "text", 0, score),))


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "beach.png"
    Image.new("RGB", (1600, 900), (200, 180, 40)).save(path)
    return path


def decoded(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_lines_number_every_result_with_source_kind_and_time(photo: Path) -> None:
    results = [
        result(Record("p", "text", text="Plums are  purple.\nVery.", uri="notes.md")),
        result(Record("w", "audio", text="we met at noon", uri="talk.wav", metadata={"start": 75.25, "end": 80})),
        result(Record("i", "image", uri=str(photo))),
    ]
    context = build_context(results)
    assert context.text.splitlines() == [
        "[1] text notes.md: Plums are purple. Very.",
        "[2] audio transcript talk.wav 01:15.2-01:20.0: we met at noon",
        f"[3] image {photo}",
    ]
    assert [(c.number, c.id, c.start) for c in context.citations] == [(1, "p", None), (2, "w", 75.25), (3, "i", None)]
    (image,) = context.images
    assert image.citation == 3 and image.mime_type == "image/jpeg"
    assert max(decoded(image.data).size) == 512  # downscaled, aspect kept
    assert decoded(image.data).size == (512, 288)


def test_token_budget_cuts_the_crossing_passage_and_drops_the_rest() -> None:
    words = " ".join(f"word{i}" for i in range(200))
    results = [result(Record(f"r{i}", "text", text=words, uri=f"doc{i}.txt")) for i in range(3)]
    context = build_context(results, max_tokens=300, count_tokens=lambda text: len(text.split()))
    lines = context.text.splitlines()
    assert len(lines) == 2 and lines[1].endswith(" …")
    assert sum(len(line.split()) for line in lines) <= 300
    assert [c.id for c in context.citations] == ["r0", "r1"]


def test_image_count_is_capped_and_missing_pictures_are_noted(photo: Path, tmp_path: Path) -> None:
    results = [result(Record("gone", "image", uri=str(tmp_path / "moved.jpg")))]
    results += [result(Record(f"i{n}", "image", uri=str(photo))) for n in range(5)]
    context = build_context(results, max_images=2)
    assert "picture unavailable" in context.text.splitlines()[0] and "moved.jpg" in context.text.splitlines()[0]
    assert [image.citation for image in context.images] == [2, 3]
    assert len(context.citations) == 6  # results without a picture still cite their source


def test_a_video_keyframe_brings_its_frame(tmp_path: Path) -> None:
    from fixtures.mediagen import Scene, write_video

    from mm_rag.embed.video import frame_at

    video = write_video(
        tmp_path / "clip.mp4", [Scene(0.0, (250, 10, 10)), Scene(1.0, (10, 10, 250))], duration=2.0, fps=10
    )
    late = frame_at(video, 1.5)
    assert late.getpixel((late.width // 2, late.height // 2))[2] > 200  # the blue scene
    keyframe = Record("k", "video", uri=str(video), metadata={"start": 1.5, "end": 2.0, "frame_time": 1.5})
    context = build_context([result(keyframe)])
    assert context.text == f"[1] video frame {video} 00:01.5-00:02.0"
    frame = decoded(context.images[0].data).convert("RGB")
    assert frame.getpixel((frame.width // 2, frame.height // 2))[2] > 200


def test_blocks_are_valid_for_langchain_llama_index_and_openai(photo: Path) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_core.messages.content import is_data_content_block
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
    from llama_index.tools.mm_rag import context_to_blocks

    context = build_context([result(Record("t", "text", text="sand")), result(Record("i", "image", uri=str(photo)))])
    blocks = context.to_langchain()
    assert blocks[0]["type"] == "text" and "[1] text t: sand" in blocks[0]["text"]
    assert blocks[1]["type"] == "image" and is_data_content_block(blocks[1])
    assert decoded(blocks[1]["base64"]).size == (512, 288)
    HumanMessage(content=blocks)  # accepted as message content

    llama = context_to_blocks(context)  # the LlamaIndex integration's conversion of the plain blocks
    assert isinstance(llama[0], TextBlock) and isinstance(llama[1], ImageBlock)
    assert Image.open(llama[1].resolve_image()).size == (512, 288)
    ChatMessage(role="user", blocks=llama)

    parts = context.to_openai()
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_bad_limits_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="max_image_side"):
        build_context([], max_image_side=0)
    with pytest.raises(InvalidInputError, match="max_tokens"):
        build_context([], max_tokens=-1)
    assert build_context([]).text == ""


# --------------------------------------------------------------------------------------------------------------
# transcript hits widened to their neighbouring windows (the store supplies them)
# --------------------------------------------------------------------------------------------------------------
SENTENCES = [f"Speaker {n} says fact number {n}." for n in range(8)]  # 4 s each: 0-3.5, 4-7.5, …


def window(first: int, doc: str = "talk", modality: str = "audio") -> Record:
    """The default transcript window over sentences `first` and `first + 1`, as ingestion stores it."""
    return Record(
        f"{doc}-{first}", modality, text=f"{SENTENCES[first]} {SENTENCES[first + 1]}", uri=f"/media/{doc}.wav",
        metadata={"start": 4.0 * first, "end": 4.0 * first + 7.5}, doc_id=doc,
    )  # fmt: skip


@pytest.fixture
def talk_store(tmp_path: Path) -> Any:
    from mm_rag import MultimodalStore

    store = MultimodalStore(tmp_path / "store")
    store.upsert([window(i) for i in range(7)] + [window(i, doc="other") for i in range(7)])
    keyframe = Record("frame", "audio", text="SLIDE TITLE", uri="/media/talk.wav", doc_id="talk",
                      metadata={"start": 12.0, "end": 14.0, "frame_time": 12.0})  # fmt: skip
    store.upsert([keyframe])  # a record with a time range that is no transcript window: never a neighbour
    store.save()
    yield store
    store.close()


def test_a_transcript_hit_is_widened_to_its_neighbours_without_repeating_them(talk_store: Any) -> None:
    context = build_context([result(window(3))], store=talk_store, widen_seconds=5.0)
    (line,) = context.text.splitlines()
    # windows 2 (8-15.5) and 4 (16-23.5) lie within 5 s of the hit (12-19.5); 1 and 5 reach further
    expected = " ".join([SENTENCES[2], f"**{SENTENCES[3]} {SENTENCES[4]}**", SENTENCES[5]])
    assert line == f"[1] audio transcript /media/talk.wav 00:08.0-00:23.5 (hit 00:12.0-00:19.5): {expected}"
    assert "SLIDE" not in line and "other" not in line  # no keyframe text, nothing of another recording
    assert [(c.number, c.id, c.start, c.end) for c in context.citations] == [(1, "talk-3", 12.0, 19.5)]
    wider = build_context([result(window(3))], store=talk_store).text  # the default reaches 10 s
    assert wider.startswith("[1] audio transcript /media/talk.wav 00:04.0-00:27.5") and SENTENCES[1] in wider
    assert all(wider.count(sentence) == 1 for sentence in SENTENCES[1:7])
    assert build_context([result(window(3))], store=talk_store, widen_seconds=0).text == build_context(
        [result(window(3))]
    ).text  # fmt: skip


def test_hits_whose_passages_touch_share_one_passage(talk_store: Any) -> None:
    results = [
        result(window(1)),
        result(window(2, doc="other")),
        result(window(4)),
        result(Record("t", "text", text="x")),
    ]
    context = build_context(results, store=talk_store, widen_seconds=4.0)
    lines = context.text.splitlines()
    assert len(lines) == 3
    # talk: windows 0-2 around the first hit and 3-5 around the third touch → one passage, both hits marked
    assert lines[0].startswith(
        "[1] audio transcript /media/talk.wav 00:00.0-00:27.5 (hit 00:04.0-00:11.5, 00:16.0-00:23.5): "
    )
    assert lines[0].count("**") == 4 and all(lines[0].count(sentence) == 1 for sentence in SENTENCES[:7])
    assert lines[1].startswith("[2] audio transcript /media/other.wav") and lines[2] == "[3] text t: x"
    assert [(c.number, c.id) for c in context.citations] == [(1, "talk-1"), (1, "talk-4"), (2, "other-2"), (3, "t")]
    # without a store the two hits do not touch (4-11.5, 16-23.5) and stay apart, unwidened
    alone = build_context(results).text.splitlines()
    assert alone[0] == f"[1] audio transcript /media/talk.wav 00:04.0-00:11.5: {SENTENCES[1]} {SENTENCES[2]}"


def test_overlapping_hits_merge_even_without_a_store() -> None:
    context = build_context([result(window(2)), result(window(3))])
    (line,) = context.text.splitlines()
    assert line == (
        "[1] audio transcript /media/talk.wav 00:08.0-00:19.5 (hit 00:08.0-00:15.5, 00:12.0-00:19.5): "
        f"**{SENTENCES[2]} {SENTENCES[3]} {SENTENCES[4]}**"
    )


def test_a_widened_passage_that_does_not_fit_falls_back_to_the_hit(talk_store: Any) -> None:
    hit = result(window(3))
    plain = build_context([hit]).text
    budget = len(plain.split()) + 2
    context = build_context([hit], store=talk_store, max_tokens=budget, count_tokens=lambda text: len(text.split()))
    assert context.text == plain


def test_widening_is_checked() -> None:
    with pytest.raises(InvalidInputError, match="widen_seconds"):
        build_context([], widen_seconds=-1.0)
    with pytest.raises(InvalidInputError, match="widen_seconds"):
        build_context([], widen_seconds=float("nan"))


def test_a_short_hit_keeps_its_nearest_neighbours_even_when_they_reach_past_the_widening(tmp_path: Path) -> None:
    from mm_rag import MultimodalStore

    def spoken(name: str, start: float, end: float, text: str) -> Record:
        return Record(name, "audio", text=text, uri="/m/t.wav", doc_id="t", metadata={"start": start, "end": end})

    hit = spoken("hit", 20.0, 23.0, "The hit is short.")
    around = [spoken("a", 2.0, 19.0, "A long sentence before it."), spoken("b", 24.0, 40.0, "A long one after it."),
              spoken("c", 41.0, 45.0, "Far away.")]  # fmt: skip
    with MultimodalStore(tmp_path / "s") as store:
        store.upsert([hit, *around])
        store.save()
        line = build_context([result(hit)], store=store, widen_seconds=3.0).text
    assert line.endswith(": A long sentence before it. **The hit is short.** A long one after it.")
    assert "00:02.0-00:40.0" in line


def test_the_core_builds_plain_blocks_without_importing_a_framework() -> None:
    """`Context.to_blocks` (and `to_langchain`, kept for earlier callers) are plain dicts; mm_rag.context and
    mm_rag.apps import neither LangChain nor LlamaIndex."""
    import subprocess
    import sys

    code = (
        "import sys, mm_rag.context, mm_rag.apps\n"
        "c = mm_rag.context.Context('[1] text', [mm_rag.context.ImagePart('QUJD', 'image/jpeg', 1)])\n"
        "assert c.to_blocks() == c.to_langchain() == [{'type': 'text', 'text': '[1] text'},"
        " {'type': 'image', 'base64': 'QUJD', 'mime_type': 'image/jpeg'}]\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'llama_index')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
