"""`OpenCLIPEmbedding` and `TextEmbedding`: one embedder call per batch, plain float lists, async variants, and a
real `VectorStoreIndex` on `MMRagVectorStore` with MiniLM finding semantic neighbours (persisted and reloaded)."""

from __future__ import annotations

import asyncio
import io
import math
from pathlib import Path

import numpy as np
import pytest
from fixtures.tiny_clip import draw_shape
from llama_index.core import StorageContext, VectorStoreIndex, load_index_from_storage
from llama_index.core.schema import Document
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters
from llama_index.embeddings.mm_rag import OpenCLIPEmbedding, TextEmbedding
from llama_index.vector_stores.mm_rag import MMRagVectorStore

from mm_rag import InvalidInputError, OpenCLIPEmbedder, TextEmbedder


class Counting:
    """Wraps an embedder method and records the size of every call."""

    def __init__(self, method):
        self.method, self.calls = method, []

    def __call__(self, items, *args, **kwargs):
        self.calls.append(len(items))
        return self.method(items, *args, **kwargs)


@pytest.fixture(scope="module")
def clip(tiny_clip) -> OpenCLIPEmbedding:
    return OpenCLIPEmbedding(tiny_clip, embed_batch_size=4)


@pytest.fixture(scope="module")
def minilm(minilm_dir) -> TextEmbedding:
    return TextEmbedding(model_name=minilm_dir, device="cpu", embed_batch_size=3)


def is_unit_float_list(vector, dim: int) -> bool:
    return (
        isinstance(vector, list)
        and len(vector) == dim
        and all(type(x) is float for x in vector)
        and math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-4)
    )


def test_clip_text_batches_are_one_embedder_call_each(clip, tiny_clip, monkeypatch):
    counter = Counting(tiny_clip.embed_texts)
    monkeypatch.setattr(clip.embedder, "embed_texts", counter)
    texts = [f"a red circle number {i}" for i in range(10)]
    vectors = clip.get_text_embedding_batch(texts)
    assert counter.calls == [4, 4, 2]
    assert all(is_unit_float_list(vector, tiny_clip.dim) for vector in vectors)
    np.testing.assert_allclose(vectors, tiny_clip.embed_texts(texts), atol=1e-5)
    assert clip.get_query_embedding("a red circle") == pytest.approx(clip.get_text_embedding("a red circle"), abs=1e-6)
    assert counter.calls[-2:] == [1, 1]


def test_clip_image_batches_are_one_embedder_call_each(clip, tiny_clip, tmp_path, monkeypatch):
    paths = []
    for i, (colour, shape) in enumerate([("red", "circle"), ("blue", "square"), ("green", "cross")] * 2):
        path = tmp_path / f"{i}.png"
        draw_shape(colour, shape, seed=i).save(path)
        paths.append(str(path))
    counter = Counting(tiny_clip.embed_images)
    monkeypatch.setattr(clip.embedder, "embed_images", counter)
    vectors = clip.get_image_embedding_batch(paths)
    assert counter.calls == [4, 2]
    assert all(is_unit_float_list(vector, tiny_clip.dim) for vector in vectors)
    np.testing.assert_allclose(vectors, tiny_clip.embed_images(paths), atol=1e-5)
    inline = io.BytesIO(Path(paths[0]).read_bytes())  # an ImageNode with inline data resolves to a BytesIO
    assert clip.get_image_embedding(inline) == pytest.approx(vectors[0], abs=1e-5)


def test_clip_async_variants_match(clip, tmp_path):
    path = tmp_path / "x.png"
    draw_shape("yellow", "triangle").save(path)

    async def run():
        return (
            await clip.aget_text_embedding_batch(["a yellow triangle", "a blue cross"]),
            await clip.aget_query_embedding("a yellow triangle"),
            await clip.aget_image_embedding(str(path)),
            await clip.aget_image_embedding_batch([str(path)]),
        )

    texts, query, image, images = asyncio.run(run())
    assert texts[0] == pytest.approx(clip.get_text_embedding("a yellow triangle"), abs=1e-5)
    assert query == pytest.approx(texts[0], abs=1e-5)
    assert image == pytest.approx(images[0], abs=1e-5)
    assert image == pytest.approx(clip.get_image_embedding(str(path)), abs=1e-5)


def test_clip_from_model_paths(tiny_clip_paths, tiny_clip):
    built = OpenCLIPEmbedding(model_name=tiny_clip_paths.config, pretrained=tiny_clip_paths.checkpoint, device="cpu")
    assert built.model_name == tiny_clip.model_name and built.pretrained == str(tiny_clip_paths.checkpoint)
    assert built.get_text_embedding("a red circle") == pytest.approx(
        tiny_clip.embed_texts(["a red circle"])[0].tolist(), abs=1e-5
    )
    with pytest.raises(InvalidInputError, match="OpenCLIPEmbedder"):
        OpenCLIPEmbedding(TextEmbedder("x"))
    with pytest.raises(InvalidInputError, match="unknown open_clip model"):
        OpenCLIPEmbedding(model_name="No-Such-Model")


@pytest.mark.slow  # a real model
def test_text_embedding_batches_and_query_prompt(minilm, minilm_dir, monkeypatch):
    counter = Counting(minilm.embedder.embed_texts)
    monkeypatch.setattr(minilm.embedder, "embed_texts", counter)
    vectors = minilm.get_text_embedding_batch([f"sentence {i}" for i in range(7)])
    assert counter.calls == [3, 3, 1]
    assert all(is_unit_float_list(vector, 384) for vector in vectors)
    prompted = TextEmbedding(TextEmbedder(minilm_dir, device="cpu", query_prompt="query: "))
    assert prompted.query_prompt == "query: "
    plain, with_prompt = minilm.get_query_embedding("cats"), prompted.get_query_embedding("cats")
    assert plain != pytest.approx(with_prompt, abs=1e-4)
    assert with_prompt == pytest.approx(minilm.get_text_embedding("query: cats"), abs=1e-5)
    assert asyncio.run(minilm.aget_query_embedding("cats")) == pytest.approx(plain, abs=1e-5)
    with pytest.raises(InvalidInputError, match="TextEmbedder"):
        TextEmbedding(object())


TOPICS = {
    "cats": "Cats are small furry pets that purr and chase mice.",
    "rockets": "The rocket launched into orbit carrying a weather satellite.",
    "baking": "Knead the dough, let it rise, then bake the bread for forty minutes.",
    "football": "The striker scored a goal in the final minute of the match.",
    "rain": "Heavy rain and thunderstorms are expected across the region tomorrow.",
}
QUESTIONS = {
    "which animal meows and is kept at home?": "cats",
    "spacecraft going to space": "rockets",
    "how do I make a loaf?": "baking",
    "soccer game result": "football",
    "weather forecast with storms": "rain",
}


@pytest.mark.slow  # a real model
def test_vector_store_index_finds_semantic_neighbours_and_reloads(minilm, tmp_path):
    documents = [Document(text=text, metadata={"topic": topic}, id_=f"doc-{topic}") for topic, text in TOPICS.items()]
    store = MMRagVectorStore(space="minilm")
    index = VectorStoreIndex.from_documents(
        documents, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=minilm
    )
    retriever = index.as_retriever(similarity_top_k=1)
    for question, topic in QUESTIONS.items():
        assert retriever.retrieve(question)[0].node.metadata["topic"] == topic
    only_rain = MetadataFilters(filters=[MetadataFilter(key="topic", value="rain")])
    filtered = index.as_retriever(similarity_top_k=3, filters=only_rain).retrieve("a cat")
    assert [hit.node.metadata["topic"] for hit in filtered] == ["rain"]

    index.delete_ref_doc("doc-cats")
    assert retriever.retrieve("which animal meows and is kept at home?")[0].node.metadata["topic"] != "cats"
    index.storage_context.persist(str(tmp_path))
    assert (tmp_path / "default__vector_store.mmrag").is_dir()
    context = StorageContext.from_defaults(
        vector_store=MMRagVectorStore.from_persist_dir(tmp_path), persist_dir=str(tmp_path)
    )
    reloaded = load_index_from_storage(context, embed_model=minilm)
    assert reloaded.vector_store.space == "minilm"
    hit = reloaded.as_retriever(similarity_top_k=1).retrieve("how do I make a loaf?")[0]
    assert hit.node.metadata["topic"] == "baking" and hit.node.ref_doc_id == "doc-baking"
    assert reloaded.vector_store.client.count() == len(TOPICS) - 1


def test_clip_embedder_is_the_mm_rag_one(clip, tiny_clip):
    assert isinstance(clip.embedder, OpenCLIPEmbedder) and clip.embedder is tiny_clip
