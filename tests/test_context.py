"""`build_context`: citations, time ranges, token budget, downscaled images valid for LangChain and LlamaIndex."""

from __future__ import annotations

import base64
import io
from pathlib import Path

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

    video = write_video(tmp_path / "clip.mp4", [Scene(0.0, (250, 10, 10)), Scene(1.0, (10, 10, 250))], duration=2.0, fps=10)
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

    context = build_context([result(Record("t", "text", text="sand")), result(Record("i", "image", uri=str(photo)))])
    blocks = context.to_langchain()
    assert blocks[0]["type"] == "text" and "[1] text t: sand" in blocks[0]["text"]
    assert blocks[1]["type"] == "image" and is_data_content_block(blocks[1])
    assert decoded(blocks[1]["base64"]).size == (512, 288)
    HumanMessage(content=blocks)  # accepted as message content

    llama = context.to_llama_index()
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
