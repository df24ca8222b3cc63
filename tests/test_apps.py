"""QA, captioning and labelling with the tiny CLIP, through LangChain and LlamaIndex chat models (real framework
classes, scripted answers) and an OpenAI-compatible endpoint served over loopback."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from fixtures.tiny_clip import caption as class_caption
from fixtures.tiny_clip import draw_shape
from PIL import Image

from mm_rag import InvalidInputError, MultimodalRetriever, MultimodalStore, Record
from mm_rag.apps import LLMError, LLMNotConfiguredError, OpenAIChat, answer, caption, label
from mm_rag.apps.llm import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL

SHOWN = [("red", "circle"), ("blue", "square"), ("green", "triangle")]


@pytest.fixture(scope="module")
def collection(tmp_path_factory, tiny_clip):
    """Three drawn pictures and their captions as passages, all in the tiny CLIP space."""
    folder = tmp_path_factory.mktemp("apps")
    store = MultimodalStore()
    store.create_space(tiny_clip.space, tiny_clip.dim)
    images, passages = [], []
    for colour, shape in SHOWN:
        path = folder / f"{colour}-{shape}.png"
        draw_shape(colour, shape, size=96).save(path)
        images.append(Record(f"img-{colour}", "image", uri=str(path)))
        passages.append(Record(f"txt-{colour}", "text", text=class_caption(colour, shape), doc_id="notes.md"))
    store.upsert(images, {tiny_clip.space: tiny_clip.embed_images([r.uri for r in images])})
    store.upsert(passages, {tiny_clip.space: tiny_clip.embed_texts([r.text for r in passages])})
    yield store, folder
    store.close()


def scripted_langchain_model(reply: str):
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class Scripted(BaseChatModel):
        """A real LangChain chat model that answers `reply` and keeps what it was sent."""

        seen: ClassVar[list[Any]] = []

        @property
        def _llm_type(self) -> str:
            return "scripted"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
            self.seen.append(messages)
            return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])

    return Scripted()


def scripted_llama_index_model(reply: str):
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, LLMMetadata
    from llama_index.core.llms import CustomLLM

    class Scripted(CustomLLM):
        seen: ClassVar[list[Any]] = []

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(is_chat_model=True)

        def chat(self, messages, **kwargs) -> ChatResponse:
            self.seen.append(list(messages))
            return ChatResponse(message=ChatMessage(role="assistant", content=reply))

        def complete(self, prompt, formatted=False, **kwargs) -> CompletionResponse:
            return CompletionResponse(text=reply)

        def stream_complete(self, prompt, formatted=False, **kwargs):
            yield CompletionResponse(text=reply, delta=reply)

    return Scripted()


# --- answer ------------------------------------------------------------------------------------------------
def test_answer_through_a_langchain_chat_model_sends_cited_text_and_the_pictures(collection, tiny_clip) -> None:
    store, _ = collection
    model = scripted_langchain_model("It is red [1].")
    retriever = MultimodalRetriever(store, clip=tiny_clip, text_k=2, image_k=2)
    result = answer("what colour is the circle?", retriever, model)
    assert result.text == "It is red [1]."
    system, human = model.seen[0]
    assert "Cite the numbers" in system.content
    blocks = human.content
    assert blocks[0]["type"] == "text" and "[1]" in blocks[0]["text"]
    assert blocks[-1] == {"type": "text", "text": "Question: what colour is the circle?"}
    pictures = [b for b in blocks if b["type"] == "image"]
    assert len(pictures) == 2 and all(b["mime_type"] == "image/jpeg" for b in pictures)
    Image.open(io.BytesIO(base64.b64decode(pictures[0]["base64"]))).verify()
    assert [c.id for c in result.context.citations] == [r.record.id for r in result.results]


def test_answer_through_a_llama_index_llm(collection, tiny_clip) -> None:
    from llama_index.core.base.llms.types import ImageBlock, TextBlock

    store, _ = collection
    model = scripted_llama_index_model("A blue square [2].")
    result = answer("the blue one?", MultimodalRetriever(store, clip=tiny_clip), model, filter={"modality": "image"})
    assert result.text == "A blue square [2]."
    system, user = model.seen[0]
    assert system.role.value == "system"
    assert isinstance(user.blocks[0], TextBlock) and isinstance(user.blocks[-1], TextBlock)
    assert sum(isinstance(block, ImageBlock) for block in user.blocks) == 3
    assert all(r.modality == "image" for r in result.results)


def test_answer_through_an_openai_compatible_endpoint_from_the_environment(
    collection, tiny_clip, chat_endpoint, monkeypatch
) -> None:
    store, _ = collection
    chat_endpoint.reply = "Green [3]."
    monkeypatch.setenv(ENV_BASE_URL, chat_endpoint.url)
    monkeypatch.setenv(ENV_MODEL, "local-vlm")
    monkeypatch.setenv(ENV_API_KEY, "secret")
    result = answer("which is green?", MultimodalRetriever(store, clip=tiny_clip))
    assert result.text == "Green [3]."
    ((headers, body),) = chat_endpoint.requests
    assert headers["Authorization"] == "Bearer secret" and body["model"] == "local-vlm"
    system, user = body["messages"]
    assert system["role"] == "system"
    kinds = [part["type"] for part in user["content"]]
    assert kinds[0] == "text" and kinds[-1] == "text" and "image_url" in kinds
    chat_endpoint.status = 503
    with pytest.raises(LLMError, match="503"):
        answer("again?", MultimodalRetriever(store, clip=tiny_clip), OpenAIChat(chat_endpoint.url, "local-vlm"))


def test_without_any_llm_configured_the_error_says_what_to_set(collection, tiny_clip, monkeypatch) -> None:
    for name in (ENV_BASE_URL, ENV_MODEL, ENV_API_KEY, "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(LLMNotConfiguredError, match=ENV_BASE_URL):
        answer("anything?", MultimodalRetriever(collection[0], clip=tiny_clip))
    monkeypatch.setenv(ENV_BASE_URL, "http://127.0.0.1:9/v1")
    with pytest.raises(LLMNotConfiguredError, match=ENV_MODEL):
        OpenAIChat.from_env()
    with pytest.raises(LLMError, match="cannot reach"):
        OpenAIChat("http://127.0.0.1:9/v1", "m", timeout=5).chat("s", [{"type": "text", "text": "hi"}])
    with pytest.raises(InvalidInputError, match="unsupported llm"):
        answer("anything?", MultimodalRetriever(collection[0], clip=tiny_clip), llm=object())


# --- captioning and labelling ------------------------------------------------------------------------------
@pytest.mark.parametrize(("colour", "shape"), SHOWN)
def test_caption_without_llm_is_the_nearest_collection_text(collection, tiny_clip, colour, shape) -> None:
    store, _ = collection
    result = caption(draw_shape(colour, shape, size=96, seed=42), tiny_clip, store=store)
    assert result.text == class_caption(colour, shape)
    assert result.candidates[0].record_id == f"txt-{colour}"
    assert [c.score for c in result.candidates] == sorted((c.score for c in result.candidates), reverse=True)


def test_caption_ranks_given_candidates_and_a_video_by_its_keyframes(tmp_path: Path, tiny_clip) -> None:
    import av

    video = tmp_path / "shapes.mp4"
    with av.open(str(video), "w") as output:
        stream = output.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 96, 96, "yuv420p"
        for index in range(15):
            frame = av.VideoFrame.from_image(draw_shape("yellow", "cross", size=96, seed=index // 5))
            frame.pts = index
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    texts = [class_caption(c, s) for c, s in [("red", "circle"), ("yellow", "cross"), ("blue", "triangle")]]
    result = caption(video, tiny_clip, candidates=texts, k=2)
    assert result.text == "a yellow cross" and len(result.candidates) == 2
    with pytest.raises(InvalidInputError, match="store"):
        caption(video, tiny_clip)


def test_caption_with_an_llm_sends_the_picture_and_the_hints(collection, tiny_clip) -> None:
    store, _ = collection
    model = scripted_langchain_model("A red circle on grey.")
    result = caption(draw_shape("red", "circle", size=96, seed=3), tiny_clip, store=store, llm=model)
    assert result.text == "A red circle on grey." and result.candidates[0].text == "a red circle"
    (_, human), = model.seen
    assert "a red circle" in human.content[0]["text"] and human.content[1]["type"] == "image"


def test_zero_shot_labels_of_an_image_a_record_and_a_text(collection, tiny_clip) -> None:
    store, folder = collection
    labels = ["a red circle", "a blue square", "a green triangle"]
    scores = label(folder / "blue-square.png", labels, tiny_clip)
    assert scores[0][0] == "a blue square" and scores[0][1] > 0.5
    assert sum(p for _, p in scores) == pytest.approx(1.0)
    stored = store.get(["img-green"])[0]
    assert label(stored, labels, tiny_clip, store=store)[0][0] == "a green triangle"
    assert label("red circle", [f"{x} thing" for x in ("red circle", "blue square")], tiny_clip)[0][0] == "red circle thing"
    with pytest.raises(InvalidInputError, match="two labels"):
        label(stored, ["only one"], tiny_clip, store=store)
    with pytest.raises(InvalidInputError, match="store"):
        label(stored, labels, tiny_clip)
    assert np.isfinite(tiny_clip.logit_scale) and tiny_clip.logit_scale > 1
