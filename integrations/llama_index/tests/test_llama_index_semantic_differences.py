"""Where `MMRagVectorStore` deliberately differs from LlamaIndex's `SimpleVectorStore`, shown side by side.

`test_llama_index_conformance.py` keeps its shared cases to inputs on which the two agree. Each test here puts
one documented difference (README, "Filters") on both stores: the reference's answer is read from its source
(``build_metadata_filter_fn`` in ``llama_index/core/vector_stores/utils.py`` applies Python's ``==``, ``<``,
``in`` to the whole metadata value), ours follows mm-rag's typed, list-aware filter semantics.
"""

from __future__ import annotations

import numpy as np
import pytest
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.vector_stores.mm_rag import MMRagVectorStore

from mm_rag import FilterError, InvalidInputError

F = FilterOperator
METADATA = {
    "int": {"year": 2020, "flag": True, "tags": ["cat", "dog"], "title": "Straße", "labels": ["x"]},
    "str": {"year": "2020", "flag": 1, "tags": ["dog"], "title": "cat", "labels": [""]},
    "list": {"year": [2018, 2023], "tags": ["bird"], "title": "concat", "labels": [None]},
}
IDS = list(METADATA)
VECTORS = np.random.default_rng(11).normal(size=(len(IDS), 4)).tolist()
QUERY = [1.0, 0.5, -0.25, 0.1]


def nodes() -> list[TextNode]:
    source = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id="doc")}
    return [
        TextNode(
            id_=node_id,
            text=node_id,
            metadata=dict(METADATA[node_id]),
            embedding=list(vector),
            relationships=source if node_id == "int" else {},
        )
        for node_id, vector in zip(IDS, VECTORS, strict=True)
    ]


@pytest.fixture
def simple() -> SimpleVectorStore:
    store = SimpleVectorStore()
    store.add(nodes())
    return store


@pytest.fixture
def ours() -> MMRagVectorStore:
    store = MMRagVectorStore()
    store.add(nodes())
    return store


def found(store, key: str | None = None, operator: FilterOperator | None = None, value=None, **options) -> set[str]:
    filters = (
        None if key is None else MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=operator)])
    )
    result = store.query(VectorStoreQuery(query_embedding=QUERY, similarity_top_k=10, filters=filters, **options))
    return set(result.ids or [])


def test_comparisons_are_typed(simple, ours):
    # both: 2020 is not "2020"
    assert found(simple, "year", F.EQ, 2020) == found(ours, "year", F.EQ, 2020) == {"int"}
    # the reference orders mixed types with Python's `>`, which raises; ours skips values of another type
    with pytest.raises(TypeError):
        found(simple, "year", F.GT, 2000)
    assert found(ours, "year", F.GT, 2000) == {"int", "list"}
    # Python's True == 1; ours never equates a bool with a number
    assert found(simple, "flag", F.EQ, 1) == {"int", "str"}
    assert found(ours, "flag", F.EQ, 1) == {"str"}


def test_a_list_field_matches_when_any_element_matches(simple, ours):
    # the reference compares the whole list with the value
    assert found(simple, "tags", F.EQ, "dog") == set() and found(ours, "tags", F.EQ, "dog") == {"int", "str"}
    assert found(simple, "tags", F.IN, ["dog"]) == set() and found(ours, "tags", F.IN, ["dog"]) == {"int", "str"}
    assert found(simple, "tags", F.NE, "dog") == set(IDS) and found(ours, "tags", F.NE, "dog") == {"list"}
    with pytest.raises(TypeError):  # a list against a number
        found(simple, "year", F.LT, 2019)
    assert found(ours, "year", F.LT, 2019) == {"list"}


def test_is_empty_counts_lists_of_nulls_and_empty_strings(simple, ours):
    assert found(simple, "labels", F.IS_EMPTY) == set()
    assert found(ours, "labels", F.IS_EMPTY) == {"str", "list"}  # [""] and [None]


def test_text_operators(simple, ours):
    # any: the reference tests `value in field`, a substring test on a string field; ours wants the value itself
    assert found(simple, "title", F.ANY, ["cat"]) == {"str", "list"}
    assert found(ours, "title", F.ANY, ["cat"]) == {"str"}
    # text_match on a list field: the reference raises; ours matches an element equal to the text
    with pytest.raises(TypeError):
        found(simple, "tags", F.TEXT_MATCH, "dog")
    assert found(ours, "tags", F.TEXT_MATCH, "dog") == {"int", "str"}
    # text_match_insensitive: str.lower() in the reference, Unicode case folding (str.casefold()) in ours
    assert found(simple, "title", F.TEXT_MATCH_INSENSITIVE, "STRASSE") == set()
    assert found(ours, "title", F.TEXT_MATCH_INSENSITIVE, "STRASSE") == {"int"}


def test_empty_node_ids_do_not_restrict_our_query(simple, ours):
    # MultiModalVectorStoreIndex passes node_ids=[] when it means "all"; the reference reads it as "none"
    assert found(simple, node_ids=[]) == set()
    assert found(ours, node_ids=[]) == set(IDS)


def test_node_bookkeeping_is_not_metadata(simple, ours):
    # the reference adds doc_id / ref_doc_id / document_id to each node's metadata, so they can be filtered on;
    # ours keeps the node's metadata as it is and restricts by document with doc_ids
    assert found(simple, "doc_id", F.EQ, "doc") == {"int"}
    with pytest.raises(FilterError, match="doc_ids"):
        found(ours, "doc_id", F.EQ, "doc")
    assert found(ours, doc_ids=["doc"]) == {"int"}
    # the reference records a node without a source as the document "None", so delete("None") removes it
    simple.delete("None")
    ours.delete("None")
    assert found(simple) == {"int"}
    assert found(ours) == set(IDS)


def test_delete_nodes_needs_ids_or_filters(simple, ours):
    simple.delete_nodes()  # the reference deletes everything
    assert found(simple) == set()
    with pytest.raises(InvalidInputError, match="clear"):
        ours.delete_nodes()
    assert found(ours) == set(IDS)


def test_mmr_reports_similarities(simple, ours):
    # both pick the nearest node first; the reference then reports threshold × similarity, ours the similarity
    query = VectorStoreQuery(query_embedding=QUERY, similarity_top_k=2, mode=VectorStoreQueryMode.MMR)
    theirs, mine = simple.query(query, mmr_threshold=0.5), ours.query(query, mmr_threshold=0.5)
    plain = ours.query(VectorStoreQuery(query_embedding=QUERY, similarity_top_k=1))
    assert theirs.ids[0] == mine.ids[0] == plain.ids[0]
    assert mine.similarities[0] == pytest.approx(plain.similarities[0], abs=1e-5)
    assert theirs.similarities[0] == pytest.approx(0.5 * plain.similarities[0], abs=1e-5)
