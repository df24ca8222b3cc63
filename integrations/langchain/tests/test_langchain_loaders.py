"""Loaders on real media: Whisper transcript windows (tiny.en), images, videos (keyframes + soundtrack)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from langchain_core.document_loaders import Blob
from langchain_mm_rag import (
    ImageLoader,
    MMRagVectorStore,
    OpenCLIPEmbeddings,
    TextEmbeddings,
    VideoLoader,
    WhisperSegmentLoader,
    WhisperSegmentParser,
    create_multimodal_retriever_tool,
)

from mm_rag import MediaError, WhisperTranscriber

SLACK = 0.5  # seconds between a window's start/end and where its sentence is audible


@pytest.fixture(scope="module")
def transcriber(whisper_ct2_dir: Path) -> WhisperTranscriber:
    return WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu")


@pytest.fixture(scope="module")
def sentence_windows(spoken_sentences, transcriber) -> list[Any]:
    return WhisperSegmentLoader(spoken_sentences.path, transcriber, window_seconds=4.0, overlap_seconds=0.0).load()


@pytest.mark.slow  # real Whisper (and MiniLM) models
def test_one_window_per_sentence_with_numeric_times(sentence_windows, spoken_sentences) -> None:
    assert len(sentence_windows) == len(spoken_sentences.sentences) == 3
    for document, (first, last), sentence in zip(sentence_windows, spoken_sentences.spans, spoken_sentences.sentences):
        metadata = document.metadata
        assert type(metadata["start"]) is float and type(metadata["end"]) is float
        assert abs(metadata["start"] - first) <= SLACK and abs(metadata["end"] - last) <= SLACK, (metadata, first, last)
        assert metadata["language"] == "en" and 0.0 <= metadata["confidence"] <= 1.0
        assert metadata["source"] == metadata["uri"] == str(spoken_sentences.path)
        assert metadata["modality"] == "audio" and metadata["doc_id"] == str(spoken_sentences.path.absolute())
        assert sentence.split()[1].lower() in document.page_content.lower() and document.id


@pytest.mark.slow  # real Whisper (and MiniLM) models
def test_the_parser_reads_bytes_blobs_the_same_way(spoken_sentences, transcriber, sentence_windows) -> None:
    data = spoken_sentences.path.read_bytes()
    parser = WhisperSegmentParser(transcriber, window_seconds=4.0, overlap_seconds=0.0)
    documents = list(parser.lazy_parse(Blob.from_data(data)))
    assert [d.page_content for d in documents] == [d.page_content for d in sentence_windows]
    assert [d.id for d in documents] == [d.id for d in sentence_windows]  # ids derive from content and time
    assert all(d.metadata["doc_id"] == hashlib.sha256(data).hexdigest() and "uri" not in d.metadata for d in documents)


@pytest.mark.slow  # real Whisper (and MiniLM) models
def test_a_spoken_question_finds_its_window(sentence_windows, spoken_sentences, minilm_dir: Path) -> None:
    store = MMRagVectorStore(embedding=TextEmbeddings(model=str(minilm_dir), device="cpu"))
    store.add_documents(sentence_windows)
    assert store.space == "text" and store.store.spaces["text"].dim == 384
    found = store.similarity_search("What is the capital of France?", k=1, filter={"modality": "audio"})
    first, last = spoken_sentences.spans[1]
    assert "paris" in found[0].page_content.lower()
    assert found[0].metadata["start"] <= first + SLACK and found[0].metadata["end"] >= last - SLACK
    late = store.similarity_search("anything", k=3, filter={"start": {"$gte": spoken_sentences.spans[2][0] - SLACK}})
    assert [d.id for d in late] == [sentence_windows[2].id]


def test_image_loader_reads_every_format(media_corpus) -> None:
    formats = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
               "bmp": "image/bmp", "tiff": "image/tiff"}  # fmt: skip
    documents = ImageLoader([media_corpus[name].path for name in formats]).load()
    for document, (name, mime_type) in zip(documents, formats.items()):
        path = str(media_corpus[name].path)
        assert document.page_content == "" and document.id
        assert document.metadata == {
            "modality": "image", "uri": path, "source": path, "doc_id": str(Path(path).absolute()),
            "mime_type": mime_type, "width": 48, "height": 32, "file_name": Path(path).name,
        }  # fmt: skip


def test_image_loader_names_a_broken_file(bad_corpus) -> None:
    path = bad_corpus["truncated_jpeg"].path
    with pytest.raises(MediaError, match=path.name):
        ImageLoader(path).load()


@pytest.mark.slow  # real Whisper (and MiniLM) models
def test_video_loader_links_keyframes_and_speech(media_corpus, transcriber, tiny_clip, tmp_path: Path) -> None:
    video = media_corpus["video"].path
    documents = VideoLoader(video, transcriber=transcriber, frames_dir=tmp_path / "frames", window_seconds=10.0).load()
    keyframes = [d for d in documents if not d.page_content]
    windows = [d for d in documents if d.page_content]
    assert len(keyframes) >= 3 and windows
    assert {d.metadata["doc_id"] for d in documents} == {str(video.absolute())}
    assert all(d.metadata["modality"] == "video" and d.metadata["uri"] == str(video) for d in documents)
    starts = [d.metadata["start"] for d in keyframes]
    assert starts == sorted(starts) and starts[0] == 0.0
    assert any(abs(start - 2.3) < 0.2 for start in starts) and any(abs(start - 5.0) < 0.2 for start in starts)
    for document in keyframes:
        assert Path(document.metadata["frame_uri"]).is_file() and document.metadata["end"] > document.metadata["start"]
    for document in windows:
        assert 0.0 <= document.metadata["start"] < document.metadata["end"] <= 7.5
    assert "scene" in " ".join(d.page_content.lower() for d in windows)
    store = MMRagVectorStore(embedding=OpenCLIPEmbeddings(tiny_clip))
    store.add_documents(documents)
    frame = keyframes[0]
    assert store.store.vectors("clip", [frame.id])[frame.id].tolist() == pytest.approx(
        store.embeddings.embed_image([frame.metadata["frame_uri"]])[0], abs=1e-5
    )
    message = create_multimodal_retriever_tool(store, k=len(documents), max_images=len(documents)).invoke(
        {"type": "tool_call", "name": "multimodal_search", "id": "1", "args": {"query": "the green scene"}}
    )
    assert sum(block["type"] == "image" for block in message.content) == len(keyframes)


def test_keyframes_without_saved_frames_are_embedded_from_the_video(media_corpus, tiny_clip) -> None:
    from mm_rag.embed.video import frame_at

    video = media_corpus["silent_video"].path
    documents = VideoLoader(video, every_seconds=1.0).load()
    assert len(documents) >= 3 and all(not d.page_content and "frame_uri" not in d.metadata for d in documents)
    store = MMRagVectorStore(embedding=OpenCLIPEmbeddings(tiny_clip))
    store.add_documents(documents)
    last = documents[-1]
    expected = store.embeddings.embed_image([frame_at(video, last.metadata["frame_time"])])[0]
    assert store.store.vectors("clip", [last.id])[last.id].tolist() == pytest.approx(expected, abs=1e-5)
