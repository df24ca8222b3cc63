"""A real `MultiModalVectorStoreIndex` with `MMRagVectorStore` as text and image store and the tiny CLIP model:
aligned text → image retrieval, persistence and reload, two indices side by side, the retriever and the tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.tiny_clip import CLASSES, caption, draw_shape
from fsspec.implementations.memory import MemoryFileSystem
from llama_index.core import StorageContext, load_index_from_storage
from llama_index.core.indices import MultiModalVectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import Document, ImageDocument, ImageNode
from llama_index.embeddings.mm_rag import OpenCLIPEmbedding
from llama_index.retrievers.mm_rag import MMRagRetriever
from llama_index.tools.mm_rag import SearchResults, make_query_engine_tool, make_search_tool
from llama_index.vector_stores.mm_rag import MMRagVectorStore

from mm_rag import InvalidInputError, StoreFormatError

HELD_OUT_SEED = 1_000_000  # the tiny model never saw these drawings


@pytest.fixture(scope="module")
def clip(tiny_clip) -> OpenCLIPEmbedding:
    return OpenCLIPEmbedding(tiny_clip, embed_batch_size=8)


def shape_documents(folder: Path, classes=CLASSES) -> list[Document]:
    folder.mkdir(parents=True, exist_ok=True)
    documents: list[Document] = []
    for index, (colour, shape) in enumerate(classes):
        path = folder / f"{colour}-{shape}.png"
        draw_shape(colour, shape, seed=HELD_OUT_SEED + index).save(path)
        documents.append(ImageDocument(image_path=str(path), metadata={"colour": colour, "shape": shape}))
    documents.append(
        Document(text="Notes: the workshop has a red circle painted on its door.", metadata={"kind": "note"})
    )
    documents.append(Document(text="The blue square is the logo of the sailing club.", metadata={"kind": "note"}))
    return documents


def build(clip: OpenCLIPEmbedding, documents: list[Document]) -> MultiModalVectorStoreIndex:
    context = StorageContext.from_defaults(vector_store=MMRagVectorStore(), image_store=MMRagVectorStore())
    return MultiModalVectorStoreIndex.from_documents(
        documents, storage_context=context, embed_model=clip, image_embed_model=clip
    )


def reload(clip: OpenCLIPEmbedding, folder: Path) -> MultiModalVectorStoreIndex:
    context = StorageContext.from_defaults(
        vector_store=MMRagVectorStore.from_persist_dir(folder, namespace="default"),
        image_store=MMRagVectorStore.from_persist_dir(folder, namespace="image"),
        persist_dir=str(folder),
    )
    index = load_index_from_storage(context, embed_model=clip, image_embed_model=clip)
    assert isinstance(index, MultiModalVectorStoreIndex)
    return index


def answers(index, query: str, k: int = 3) -> list[tuple[str, str, float]]:
    hits = index.as_retriever(similarity_top_k=1, image_similarity_top_k=k).retrieve(query)
    return [(type(hit.node).__name__, hit.node.node_id, round(hit.score, 5)) for hit in hits]


@pytest.fixture(scope="module")
def index(clip, tmp_path_factory) -> MultiModalVectorStoreIndex:
    return build(clip, shape_documents(tmp_path_factory.mktemp("shapes")))


def test_a_caption_finds_its_image(index):
    retriever = index.as_retriever(similarity_top_k=1, image_similarity_top_k=1)
    for colour, shape in CLASSES:
        images = [hit for hit in retriever.retrieve(caption(colour, shape)) if isinstance(hit.node, ImageNode)]
        assert len(images) == 1
        assert (images[0].node.metadata["colour"], images[0].node.metadata["shape"]) == (colour, shape)
        assert Path(images[0].node.image_path).name == f"{colour}-{shape}.png"


def test_text_store_and_image_store_hold_their_own_nodes(index):
    text_store, image_store = index.vector_store, index.image_vector_store
    assert isinstance(text_store, MMRagVectorStore) and isinstance(image_store, MMRagVectorStore)
    assert text_store.client is not image_store.client
    assert image_store.client.count() == len(CLASSES)
    assert {record.modality for record in image_store.client} == {"image"}
    assert text_store.client.count() == 2


def test_persist_and_reload_give_the_same_answers(clip, index, tmp_path):
    before = {query: answers(index, query) for query in ("a red circle", "a blue square", "a yellow cross")}
    index.storage_context.persist(persist_dir=str(tmp_path))
    names = {path.name for path in tmp_path.iterdir()}
    assert {"default__vector_store.json", "default__vector_store.mmrag", "image__vector_store.json",
            "image__vector_store.mmrag"} <= names  # fmt: skip
    described = json.loads((tmp_path / "image__vector_store.json").read_text())
    assert described["store_dir"] == "image__vector_store.mmrag" and described["space"] == "llama_index"
    reloaded = reload(clip, tmp_path)
    assert reloaded.image_vector_store.client.path == (tmp_path / "image__vector_store.mmrag").resolve()
    assert {query: answers(reloaded, query) for query in before} == before


def test_two_indices_in_two_folders_do_not_collide(clip, tmp_path):
    red = [c for c in CLASSES if c[0] == "red"]
    blue = [c for c in CLASSES if c[0] == "blue"]
    build(clip, shape_documents(tmp_path / "red-images", red)).storage_context.persist(str(tmp_path / "red"))
    build(clip, shape_documents(tmp_path / "blue-images", blue)).storage_context.persist(str(tmp_path / "blue"))
    red_index, blue_index = reload(clip, tmp_path / "red"), reload(clip, tmp_path / "blue")
    red_hits = red_index.as_retriever(image_similarity_top_k=10).text_to_image_retrieve("a blue circle")
    blue_hits = blue_index.as_retriever(image_similarity_top_k=10).text_to_image_retrieve("a blue circle")
    assert {hit.node.metadata["colour"] for hit in red_hits} == {"red"} and len(red_hits) == 4
    assert {hit.node.metadata["colour"] for hit in blue_hits} == {"blue"} and len(blue_hits) == 4
    assert blue_hits[0].node.metadata["shape"] == "circle"


def test_persisting_again_replaces_the_saved_store(clip, tmp_path):
    first = build(clip, shape_documents(tmp_path / "images", CLASSES[:2]))
    first.storage_context.persist(str(tmp_path / "index"))
    reloaded = reload(clip, tmp_path / "index")
    reloaded.insert(ImageDocument(image_path=str(_draw(tmp_path, "green", "cross")), metadata={"colour": "green"}))
    reloaded.storage_context.persist(str(tmp_path / "index"))  # saved in place: the store was opened there
    assert reload(clip, tmp_path / "index").image_vector_store.client.count() == 3
    first.storage_context.persist(str(tmp_path / "index"))  # a copy replaces the folder's store
    assert reload(clip, tmp_path / "index").image_vector_store.client.count() == 2


def _draw(folder: Path, colour: str, shape: str) -> Path:
    path = folder / f"extra-{colour}-{shape}.png"
    draw_shape(colour, shape, seed=HELD_OUT_SEED + 99).save(path)
    return path


def test_persistence_errors(tmp_path):
    store = MMRagVectorStore()
    (tmp_path / "default__vector_store.mmrag").mkdir()
    (tmp_path / "default__vector_store.mmrag" / "precious.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="other than an mm-rag store"):
        store.persist(str(tmp_path / "default__vector_store.json"))
    assert (tmp_path / "default__vector_store.mmrag" / "precious.txt").read_text() == "keep me"
    with pytest.raises(StoreFormatError, match="no persisted MMRagVectorStore"):
        MMRagVectorStore.from_persist_dir(tmp_path / "nowhere", namespace="image")
    (tmp_path / "image__vector_store.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(StoreFormatError, match="not written by MMRagVectorStore"):
        MMRagVectorStore.from_persist_dir(tmp_path, namespace="image")
    memory = MemoryFileSystem()
    with pytest.raises(InvalidInputError, match="local filesystem only"):
        store.persist("/x/default__vector_store.json", fs=memory)


def test_retriever_matches_the_index_retriever(index):
    ours = MMRagRetriever.from_index(index, similarity_top_k=1, image_similarity_top_k=3)
    theirs = index.as_retriever(similarity_top_k=1, image_similarity_top_k=3)
    for query in ("a green triangle", "a red circle"):
        assert [(h.node.node_id, round(h.score, 5)) for h in ours.retrieve(query)] == [
            (h.node.node_id, round(h.score, 5)) for h in theirs.retrieve(query)
        ]
    images = ours.text_to_image_retrieve("a yellow square")
    assert len(images) == 3 and images[0].node.metadata == {"colour": "yellow", "shape": "square"}
    assert [hit.node.metadata["kind"] for hit in ours.text_retrieve("red circle door")] == ["note"]
    same = ours.image_to_image_retrieve(images[0].node.image_path)
    assert same[0].node.node_id == images[0].node.node_id and same[0].score == pytest.approx(1.0, abs=1e-4)


def test_retriever_validates_its_arguments(index):
    with pytest.raises(InvalidInputError, match="needs a vector_store, an image_store or both"):
        MMRagRetriever()
    with pytest.raises(InvalidInputError, match="embed_model"):
        MMRagRetriever(index.vector_store)
    with pytest.raises(InvalidInputError, match="similarity_top_k"):
        MMRagRetriever.from_index(index, similarity_top_k=0)


def test_search_tool_returns_passages_and_image_paths(index):
    tool = make_search_tool(MMRagRetriever.from_index(index, similarity_top_k=1, image_similarity_top_k=2))
    assert tool.metadata.name == "multimodal_search"
    output = tool.call(query="a red circle")
    results = output.raw_output
    assert isinstance(results, SearchResults)
    assert results.images[0].location.endswith("red-circle.png")
    assert "red circle painted on its door" in results.passages[0].text
    assert "red-circle.png" in output.content and "painted on its door" in output.content
    assert "Text passages:" in output.content and "Images:" in output.content


def test_search_tool_async_and_query_engine_tool(index):
    import asyncio

    retriever = MMRagRetriever.from_index(index, similarity_top_k=1, image_similarity_top_k=1)
    output = asyncio.run(make_search_tool(retriever, name="find").acall(query="a blue square"))
    assert output.raw_output.images[0].location.endswith("blue-square.png")
    engine_tool = make_query_engine_tool(retriever, llm=MockLLM(max_tokens=8), name="answer")
    response = engine_tool.call(input="a blue square").raw_output
    kinds = {type(node.node).__name__ for node in response.source_nodes}
    assert kinds == {"TextNode", "ImageNode"} and engine_tool.metadata.name == "answer"
