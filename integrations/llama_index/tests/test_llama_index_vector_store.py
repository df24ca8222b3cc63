"""`MMRagVectorStore` with hand-made embeddings: exact node round-trips, id restrictions, deletes, MMR, async,
records written by mm-rag itself, and bad input that must leave the store as it was."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from llama_index.core.schema import (
    Document,
    ImageNode,
    IndexNode,
    NodeRelationship,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.types import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.vector_stores.mm_rag import NODE_KEY, MMRagVectorStore

from mm_rag import InvalidInputError, MultimodalStore, Record, UnknownSpaceError

DIM = 4


def unit(*values: float) -> list[float]:
    vector = np.asarray(values, dtype=np.float64)
    return (vector / np.linalg.norm(vector)).tolist()


def text_node(node_id: str, doc: str | None, vector: list[float], **metadata) -> TextNode:
    relationships = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc)} if doc else {}
    return TextNode(
        id_=node_id, text=f"passage {node_id}", metadata=metadata, embedding=vector, relationships=relationships
    )


def query(store: MMRagVectorStore, vector: list[float], k: int = 10, **options) -> list[str]:
    return store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=k, **options)).ids or []


def dump(node) -> dict:
    data = node.model_dump()
    data["embedding"] = None
    return data


@pytest.fixture
def store() -> MMRagVectorStore:
    vector_store = MMRagVectorStore()
    vector_store.add(
        [
            text_node("a1", "docA", unit(1, 0, 0, 0), kind="x"),
            text_node("a2", "docA", unit(1, 1, 0, 0), kind="y"),
            text_node("b1", "docB", unit(0, 1, 0, 0), kind="x"),
            text_node("b2", "docB", unit(0, 0, 1, 0), kind="y"),
            text_node("c1", None, unit(0, 0, 0, 1), kind="x"),
        ]
    )
    return vector_store


def test_nodes_round_trip_exactly(tmp_path):
    image_file = tmp_path / "pic.png"
    image_file.write_bytes(b"\x89PNG\r\n\x1a\n")
    source = RelatedNodeInfo(node_id="doc-1", metadata={"page": 2}, hash="h")
    nodes = [
        TextNode(
            id_="t1",
            text="Some text\nwith lines",
            metadata={"author": "Ann", "year": 2021, "tags": ["a", "b"], "nested": {"x": [1, 2.5]}, "none": None},
            excluded_embed_metadata_keys=["year"],
            excluded_llm_metadata_keys=["author", "tags"],
            relationships={
                NodeRelationship.SOURCE: source,
                NodeRelationship.NEXT: RelatedNodeInfo(node_id="t2"),
                NodeRelationship.CHILD: [RelatedNodeInfo(node_id="c1"), RelatedNodeInfo(node_id="c2")],
            },
            start_char_idx=3,
            end_char_idx=40,
            metadata_template="{key}={value}",
            metadata_separator=" | ",
            text_template="{metadata_str}::{content}",
            embedding=unit(1, 2, 3, 4),
        ),
        ImageNode(
            id_="i1",
            text="a caption",
            image_path=str(image_file),
            image_mimetype="image/png",
            metadata={"colour": "red"},
            relationships={NodeRelationship.SOURCE: source},
            embedding=unit(4, 3, 2, 1),
        ),
        ImageNode(id_="i2", image_url="https://example.org/x.jpg", embedding=unit(1, 1, 1, 1)),
        ImageNode(id_="i3", image="aGVsbG8=", image_mimetype="image/gif", text="", embedding=unit(1, 0, 1, 0)),
        IndexNode(id_="x1", text="see index", index_id="other-index", embedding=unit(0, 1, 0, 1)),
        Document(id_="d1", text="a whole document", metadata={"k": "v"}, embedding=unit(0, 0, 1, 1)),
    ]
    store = MMRagVectorStore()
    assert store.add(nodes) == [node.node_id for node in nodes]
    for got, original in zip(store.get_nodes([node.node_id for node in nodes]), nodes):
        assert type(got) is type(original)
        assert dump(got) == dump(original)
    hits = store.query(VectorStoreQuery(query_embedding=unit(4, 3, 2, 1), similarity_top_k=1))
    assert isinstance(hits.nodes[0], ImageNode) and dump(hits.nodes[0]) == dump(nodes[1])
    assert hits.similarities[0] == pytest.approx(1.0, abs=1e-5)
    # user metadata stays filterable and apart from the reserved node key; records are readable by mm-rag
    record = store.client.get(["t1"])[0]
    assert record.text == "Some text\nwith lines" and record.doc_id == "doc-1" and record.modality == "text"
    assert {key: value for key, value in record.metadata.items() if key != NODE_KEY} == nodes[0].metadata
    image = store.client.get(["i1"])[0]
    assert (image.modality, image.uri) == ("image", str(image_file))


def test_delete_by_ref_doc_id(store):
    store.delete("docA")
    assert set(query(store, unit(1, 1, 1, 1))) == {"b1", "b2", "c1"}
    store.delete("no-such-doc")
    assert store.client.count() == 3


def test_node_and_doc_id_restrictions(store):
    assert set(query(store, unit(1, 0, 0, 0), node_ids=["b2", "c1"])) == {"b2", "c1"}
    assert set(query(store, unit(1, 0, 0, 0), doc_ids=["docB"])) == {"b1", "b2"}
    assert query(store, unit(1, 0, 0, 0), k=1, doc_ids=["docB"]) == ["b1"]  # the best of docB, not an empty list
    filters = MetadataFilters(filters=[MetadataFilter(key="kind", value="x")])
    assert set(query(store, unit(1, 0, 0, 0), doc_ids=["docA", "docB"], filters=filters)) == {"a1", "b1"}
    assert set(query(store, unit(1, 0, 0, 0), node_ids=["a1", "a2", "b1"], doc_ids=["docA"])) == {"a1", "a2"}
    # empty lists do not restrict (MultiModalVectorStoreIndex passes node_ids=[] for stores that keep text)
    assert len(query(store, unit(1, 0, 0, 0), node_ids=[], doc_ids=[])) == 5


def test_get_and_delete_nodes_with_filters(store):
    kind_y = MetadataFilters(filters=[MetadataFilter(key="kind", value="y")])
    assert [node.node_id for node in store.get_nodes(filters=kind_y)] == ["a2", "b2"]
    assert [node.node_id for node in store.get_nodes(["c1", "a1", "zz"])] == ["c1", "a1"]
    assert [node.node_id for node in store.get_nodes(["a1", "a2"], filters=kind_y)] == ["a2"]
    assert store.get_nodes([]) == []
    assert len(store.get_nodes()) == 5
    store.delete_nodes(["a1", "a2", "b1"], filters=kind_y)
    assert sorted(node.node_id for node in store.get_nodes()) == ["a1", "b1", "b2", "c1"]
    store.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="kind", value="x", operator="!=")]))
    assert sorted(node.node_id for node in store.get_nodes()) == ["a1", "b1", "c1"]
    store.delete_nodes(["c1"])
    store.delete_nodes([])
    assert sorted(node.node_id for node in store.get_nodes()) == ["a1", "b1"]
    with pytest.raises(InvalidInputError, match="clear"):
        store.delete_nodes()


def test_clear_keeps_the_space(store):
    store.clear()
    assert store.get_nodes() == [] and query(store, unit(1, 0, 0, 0)) == []
    assert store.client.spaces[store.space].dim == DIM
    store.add([text_node("new", None, unit(0, 1, 0, 0))])
    assert query(store, unit(0, 1, 0, 0)) == ["new"]


def test_readding_a_node_replaces_it(store):
    store.add([text_node("a1", "docZ", unit(0, 0, 0, 1), kind="z")])
    assert store.client.count() == 5
    assert store.get_nodes(["a1"])[0].metadata == {"kind": "z"}
    assert query(store, unit(0, 0, 0, 1), k=2)[0] in {"a1", "c1"}


def test_mmr_trades_relevance_for_diversity():
    store = MMRagVectorStore()
    store.add(
        [
            text_node("near", None, unit(1, 0.05, 0, 0)),
            text_node("near-copy", None, unit(1, 0.06, 0, 0)),
            text_node("other", None, unit(0.6, 0, 0.8, 0)),
            text_node("far", None, unit(0, 0, 0, 1)),
        ]
    )
    q = unit(1, 0, 0.1, 0)
    assert query(store, q, k=2) == ["near", "near-copy"]
    mmr = {"mode": VectorStoreQueryMode.MMR}
    assert query(store, q, k=2, mmr_threshold=0.5, **mmr) == ["near", "other"]
    assert query(store, q, k=2, mmr_threshold=1.0, **mmr) == ["near", "near-copy"]  # relevance only
    # the threshold may also come through vector_store_kwargs, as retrievers pass it
    result = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=2, **mmr), mmr_threshold=0.5)
    assert result.ids == ["near", "other"]
    assert result.similarities[0] > result.similarities[1]  # similarities stay the query similarities
    assert query(store, q, k=2, mmr_threshold=0.5, node_ids=["near-copy", "far"], **mmr) == ["near-copy", "far"]
    with pytest.raises(InvalidInputError, match="mmr_threshold"):
        query(store, q, k=2, mmr_threshold=1.5, **mmr)
    # a prefetch of 2 only sees the two nearest, so diversity cannot reach "other"
    small = store.query(
        VectorStoreQuery(query_embedding=q, similarity_top_k=2, mmr_threshold=0.5, **mmr), mmr_prefetch_k=2
    )
    assert small.ids == ["near", "near-copy"]


def test_async_variants_give_the_sync_results(store):
    async def run():
        q = VectorStoreQuery(query_embedding=unit(1, 0, 0, 0), similarity_top_k=2)
        result = await store.aquery(q)
        await store.async_add([text_node("d1", "docD", unit(1, 0, 0, 0.01))])
        nodes = await store.aget_nodes(["d1"])
        await store.adelete_nodes(["a1"])
        await store.adelete("docB")
        remaining = await store.aget_nodes()
        await store.aclear()
        return result.ids, [n.node_id for n in nodes], sorted(n.node_id for n in remaining), await store.aget_nodes()

    ids, added, remaining, cleared = asyncio.run(run())
    assert ids == ["a1", "a2"] and added == ["d1"] and remaining == ["a2", "c1", "d1"] and cleared == []


def test_records_written_by_mm_rag_come_back_as_nodes():
    core = MultimodalStore()
    core.create_space("clip", 2)
    core.upsert(
        [
            Record(
                "t", "audio", text="hello there", uri="/a.wav", metadata={"start": 1.0, "end": 2.5}, doc_id="/a.wav"
            ),
            Record("i", "image", uri="/p.png", metadata={"width": 3}, doc_id="/p.png"),
            Record("k", "video", uri="/v.mp4", metadata={"start": 0.0}, doc_id="/v.mp4"),
        ],
        {"clip": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]},
    )
    store = MMRagVectorStore(core, space="clip")
    nodes = {node.node_id: node for node in store.get_nodes()}
    assert type(nodes["t"]) is TextNode and nodes["t"].text == "hello there" and nodes["t"].ref_doc_id == "/a.wav"
    assert nodes["t"].metadata == {"start": 1.0, "end": 2.5}
    assert type(nodes["i"]) is ImageNode and nodes["i"].image_path == "/p.png"
    assert nodes["k"].metadata["video_path"] == "/v.mp4"
    assert query(store, [0.0, 1.0], k=1) == ["i"]


def test_persistent_store_at_a_path(tmp_path):
    store = MMRagVectorStore(path=tmp_path / "s", space="vectors")
    store.add([text_node("p", "doc", unit(1, 2, 3, 4))])
    store.client.save()
    reopened = MMRagVectorStore(MultimodalStore.open(tmp_path / "s"), space="vectors")
    assert query(reopened, unit(1, 2, 3, 4)) == ["p"]
    with pytest.raises(InvalidInputError, match="not both"):
        MMRagVectorStore(store.client, path=tmp_path / "s")


def test_missing_embedding_is_named_and_nothing_is_stored(store):
    good, bad = text_node("ok", None, unit(1, 0, 0, 0)), TextNode(id_="no-vector", text="x")
    with pytest.raises(InvalidInputError, match="node 'no-vector' has no embedding"):
        store.add([good, bad])
    assert store.client.count() == 5 and store.get_nodes(["ok"]) == []


def test_wrong_dimension_is_refused_and_store_unchanged(store):
    with pytest.raises(InvalidInputError, match="dim"):
        store.add([text_node("wide", None, [1.0, 0.0, 0.0, 0.0, 1.0])])
    with pytest.raises(InvalidInputError, match="dimensional"):
        store.add([text_node("m1", None, unit(1, 0, 0, 0)), text_node("m2", None, [1.0, 2.0])])
    with pytest.raises(InvalidInputError, match="dim"):
        query(store, [1.0, 0.0])
    assert store.client.count() == 5 and store.client.count(store.space) == 5


def test_a_failed_first_batch_leaves_no_space_behind():
    store = MMRagVectorStore()
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        store.add([text_node("nan", None, [float("nan"), 1.0])])
    assert store.client.spaces == {} and store.client.count() == 0
    with pytest.raises(InvalidInputError, match="reserved"):
        store.add([text_node("r", None, [1.0, 1.0], **{NODE_KEY: 1})])
    assert store.client.spaces == {}


def test_query_errors(store):
    with pytest.raises(InvalidInputError, match="query mode 'sparse'"):
        query(store, unit(1, 0, 0, 0), mode=VectorStoreQueryMode.SPARSE)
    with pytest.raises(InvalidInputError, match="'hybrid' needs a query_str"):
        query(store, unit(1, 0, 0, 0), mode=VectorStoreQueryMode.HYBRID)
    with pytest.raises(InvalidInputError, match="alpha must be in"):
        query(store, unit(1, 0, 0, 0), mode=VectorStoreQueryMode.HYBRID, query_str="x", alpha=1.5)
    with pytest.raises(InvalidInputError, match="query_embedding"):
        store.query(VectorStoreQuery(query_str="text only", similarity_top_k=2))
    with pytest.raises(InvalidInputError, match="similarity_top_k"):
        query(store, unit(1, 0, 0, 0), k=0)
    assert MMRagVectorStore().query(VectorStoreQuery(query_embedding=[1.0], similarity_top_k=3)).ids == []
    with pytest.raises(UnknownSpaceError):
        store.client.vectors("nope", ["a1"])
    bad_filter = MetadataFilters(filters=[MetadataFilter(key="kind", value=1, operator=FilterOperator.TEXT_MATCH)])
    with pytest.raises(InvalidInputError, match="needs a string"):
        query(store, unit(1, 0, 0, 0), filters=bad_filter)
    with pytest.raises(InvalidInputError, match="needs a string"):
        store.query(VectorStoreQuery(query_str="x", mode=VectorStoreQueryMode.TEXT_SEARCH, filters=bad_filter))
    with pytest.raises(InvalidInputError, match="'text_search' needs a query_str"):
        store.query(VectorStoreQuery(query_str=" ", mode=VectorStoreQueryMode.TEXT_SEARCH, similarity_top_k=2))
    assert store.client.count() == 5


_OTHER_WORKER = """
import sys
from llama_index.core.schema import TextNode
from llama_index.vector_stores.mm_rag import MMRagVectorStore

store = MMRagVectorStore(path=sys.argv[1], space="vectors")
store.add([TextNode(id_=f"w{i}", text=f"from the other worker {i}", embedding=[0.0, 0.0, 1.0, float(i)]) for i in range(3)])
store.delete_nodes(["p"])
store.client.save()
"""


def test_two_app_workers_on_one_path_see_each_others_commits(tmp_path):
    """Workers of one app (separate processes) share a store: each sees the other's saved nodes and deletes."""
    import subprocess
    import sys

    path = tmp_path / "shared"
    store = MMRagVectorStore(path=path, space="vectors")
    store.add([text_node("p", "doc", unit(1, 0, 0, 0)), text_node("q", "doc", unit(0, 1, 0, 0))])
    store.client.save()
    assert query(store, unit(0, 0, 1, 0), k=1) in (["p"], ["q"])
    worker = subprocess.run(
        [sys.executable, "-c", _OTHER_WORKER, str(path)], check=False, capture_output=True, text=True, timeout=300
    )
    assert worker.returncode == 0, worker.stderr
    assert query(store, unit(0, 0, 1, 0), k=1) == ["w0"]  # the next query sees the other worker's commit
    assert sorted(node.node_id for node in store.get_nodes()) == ["q", "w0", "w1", "w2"]
    store.add([text_node("r", "doc", unit(1, 1, 0, 0))])  # and writes on top of it, losing nothing
    store.client.save()
    reopened = MMRagVectorStore(MultimodalStore.open(path), space="vectors")
    assert sorted(node.node_id for node in reopened.get_nodes()) == ["q", "r", "w0", "w1", "w2"]
    assert query(reopened, unit(0, 0, 1, 2), k=1) == ["w2"]
