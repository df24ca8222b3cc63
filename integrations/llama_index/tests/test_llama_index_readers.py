"""The readers on real media: espeak sentences through Whisper tiny.en, generated images and videos."""

from __future__ import annotations

import base64
import io
import re

import pytest
from fixtures.mediagen import Scene, write_image, write_video
from fsspec.implementations.memory import MemoryFileSystem
from llama_index.core import SimpleDirectoryReader
from llama_index.core.schema import Document, ImageDocument, MetadataMode
from llama_index.readers.mm_rag import ImageReader, VideoReader, WhisperReader
from PIL import Image

from mm_rag import InvalidInputError, WhisperTranscriber
from mm_rag.embed.media import MediaError

SLACK = 0.5  # seconds between a window's start/end and where its sentence is audible


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def overlap(expected: str, heard: str) -> float:
    wanted = words(expected)
    return len(wanted & words(heard)) / len(wanted)


@pytest.fixture(scope="module")
def transcriber(whisper_ct2_dir) -> WhisperTranscriber:
    return WhisperTranscriber(whisper_ct2_dir, device="cpu")


def check_sentences(documents: list[Document], spoken) -> None:
    assert len(documents) == len(spoken.sentences)
    for document, sentence, (first, last) in zip(documents, spoken.sentences, spoken.spans):
        assert overlap(sentence, document.text) >= 0.5, (sentence, document.text)
        start, end = document.metadata["start"], document.metadata["end"]
        assert type(start) is float and type(end) is float
        assert abs(start - first) <= SLACK and abs(end - last) <= SLACK, (document.text, start, end, first, last)


@pytest.mark.slow  # a real model
def test_whisper_reader_windows_match_the_spoken_sentences(transcriber, spoken_sentences):
    reader = WhisperReader(transcriber, window_seconds=4.0, overlap_seconds=0.0)
    documents = reader.load_data(spoken_sentences.path, extra_info={"speaker": "espeak"})
    check_sentences(documents, spoken_sentences)
    for document in documents:
        assert type(document) is Document
        assert document.metadata["language"] == "en" and document.metadata["speaker"] == "espeak"
        assert document.metadata["source"] == str(spoken_sentences.path)
        assert document.metadata["media_id"] == str(spoken_sentences.path)
        assert "start" not in document.get_content(MetadataMode.EMBED)  # bookkeeping stays out of the vector
        assert "speaker" in document.get_content(MetadataMode.EMBED)
    again = reader.load_data(str(spoken_sentences.path))
    assert [d.id_ for d in again] == [d.id_ for d in documents]  # ids are stable
    whole = WhisperReader(transcriber, window_seconds=60.0, max_sentences=None).load_data(spoken_sentences.path)
    assert len(whole) == 1 and overlap(" ".join(spoken_sentences.sentences), whole[0].text) >= 0.6


@pytest.mark.slow  # a real model
def test_video_reader_links_keyframes_and_transcript(transcriber, spoken_sentences):
    video = spoken_sentences.variants["mp4"]
    documents = VideoReader(transcriber, every_seconds=5.0, window_seconds=4.0, overlap_seconds=0.0).load_data(video)
    frames = [d for d in documents if isinstance(d, ImageDocument)]
    speech = [d for d in documents if not isinstance(d, ImageDocument)]
    assert frames and documents[: len(frames)] == frames  # keyframes first
    check_sentences(speech, spoken_sentences)
    assert {d.metadata["media_id"] for d in documents} == {str(video)}
    assert [f.metadata["start"] for f in frames] == sorted(f.metadata["start"] for f in frames)
    assert frames[0].metadata["start"] == 0.0 and frames[-1].metadata["end"] >= speech[-1].metadata["end"] - 1.0
    for window in speech:  # every window lies within the span of some keyframes: joinable by time
        covering = [f for f in frames if f.metadata["start"] <= window.metadata["end"]]
        assert covering and covering[-1].metadata["end"] >= window.metadata["start"]


def test_video_reader_keyframes_follow_the_scenes(tmp_path):
    scenes = (Scene(0.0, (200, 30, 30)), Scene(2.3, (30, 200, 60)), Scene(5.0, (20, 40, 180)))
    video = write_video(tmp_path / "scenes.mp4", scenes, 7.0)
    inline = VideoReader(every_seconds=10.0).load_data(video, extra_info={"album": "tests"})
    assert all(isinstance(d, ImageDocument) for d in inline)  # no transcriber: keyframes only
    assert [d.metadata["scene_change"] for d in inline] == [False, True, True]
    assert [d.metadata["start"] for d in inline] == pytest.approx([0.0, 2.3, 5.0], abs=0.11)
    colours = []
    for document in inline:
        assert document.image_mimetype == "image/png" and document.image_path is None
        assert document.metadata["album"] == "tests" and document.metadata["mime_type"] == "video/mp4"
        image = Image.open(io.BytesIO(base64.b64decode(document.image))).convert("RGB")
        colours.append(max(range(3), key=lambda channel: image.getpixel((5, 5))[channel]))
    assert colours == [0, 1, 2]  # red, green, blue
    files = VideoReader(every_seconds=10.0, frames_dir=tmp_path / "frames").load_data(video)
    assert [d.id_ for d in files] == [d.id_ for d in inline]
    for document in files:
        assert document.image is None and Image.open(document.image_path).size == (160, 120)


def test_image_reader(tmp_path):
    jpeg = write_image(tmp_path / "photo.jpg", "JPEG", size=(48, 32))
    document = ImageReader().load_data(jpeg, extra_info={"owner": "me"})[0]
    assert isinstance(document, ImageDocument)
    assert document.image_path == str(jpeg) and document.image_mimetype == "image/jpeg"
    assert document.metadata == {
        "owner": "me",
        "width": 48,
        "height": 32,
        "file_name": "photo.jpg",
        "source": str(jpeg),
        "media_id": str(jpeg),
    }
    renamed = write_image(tmp_path / "really-a-png.dat", "PNG", size=(10, 20))
    assert ImageReader().load_data(renamed)[0].image_mimetype == "image/png"
    assert ImageReader().load_data(jpeg)[0].id_ == document.id_


def test_readers_plug_into_simple_directory_reader(tmp_path):
    write_image(tmp_path / "a.png", "PNG", size=(12, 8))
    write_image(tmp_path / "b.png", "PNG", size=(8, 12), seed=1)
    documents = SimpleDirectoryReader(str(tmp_path), file_extractor={".png": ImageReader()}).load_data()
    assert sorted((d.metadata["file_name"], d.metadata["width"]) for d in documents) == [("a.png", 12), ("b.png", 8)]
    assert all(isinstance(d, ImageDocument) and d.metadata["file_type"] == "image/png" for d in documents)


def test_bad_media_raise_media_errors_naming_the_file(tmp_path, transcriber):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(MediaError, match="broken.png"):
        ImageReader().load_data(broken)
    with pytest.raises(MediaError, match="broken.png"):
        VideoReader().load_data(broken)
    with pytest.raises(MediaError, match="broken.png"):
        WhisperReader(transcriber).load_data(broken)
    with pytest.raises(InvalidInputError, match="window_seconds"):
        WhisperReader(transcriber, window_seconds=0)
    with pytest.raises(InvalidInputError, match="local files only"):
        ImageReader().load_data("memory://x.png", fs=MemoryFileSystem())
