"""Every LlamaIndex `FilterOperator` and `FilterCondition` (nested too) through `MMRagVectorStore`, against a
plain-Python evaluation of the documented semantics, and against LlamaIndex's own filter function where the
two agree by definition (scalar fields)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_index.core.vector_stores.utils import build_metadata_filter_fn
from llama_index.vector_stores.mm_rag import MMRagVectorStore, translate_filters

from mm_rag import FilterError

F = FilterOperator
METADATA: dict[str, dict[str, Any]] = {
    "n0": {"year": 2020, "tags": ["cat", "dog"], "title": "Cats and Dogs", "score": 0.5},
    "n1": {"year": 2021, "tags": ["dog"], "title": "dogs only", "score": 1.5},
    "n2": {"year": 2019, "tags": [], "title": "", "score": -1.0},
    "n3": {"year": "2020", "tags": "cat", "title": None},
    "n4": {"tags": ["Cat", "bird"], "title": "The CAT sat", "score": 0},
    "n5": {"year": 2022.0, "tags": [""], "title": "Straße", "score": 2},
    "n6": {},
    "n8": {"year": None, "tags": [None, ""], "title": "  ", "score": None},
    "n7": {"year": [2018, 2023], "tags": ["dog", "dog"], "title": "cat", "score": 2.5},
}
IDS = sorted(METADATA)
VECTORS = np.random.default_rng(3).normal(size=(len(IDS), 8)) + 0.2
QUERY = np.ones(8).tolist()


# --- the plain-Python expectation ------------------------------------------------------------------------------
_MISSING = object()


def _values(value: Any) -> list[Any]:
    return [] if value is _MISSING else value if isinstance(value, list) else [value]


def _same(a: Any, b: Any) -> bool:
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return (numbers or type(a) is type(b)) and a == b


def _orders(a: Any, b: Any) -> bool:
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return numbers or (isinstance(a, str) and isinstance(b, str))


def _holds(operator: FilterOperator, field: Any, value: Any) -> bool:
    items, wanted = _values(field), value if isinstance(value, list) else [value]
    if operator == F.EQ:
        return any(_same(item, value) for item in items)
    if operator == F.NE:
        return not _holds(F.EQ, field, value)
    if operator in (F.IN, F.ANY):
        return any(_same(item, choice) for item in items for choice in wanted)
    if operator == F.NIN:
        return not _holds(F.IN, field, value)
    if operator == F.ALL:
        if not wanted:  # a positive test still: the field must hold a value (LlamaIndex's semantics too)
            return field is not _MISSING and not any(item is None for item in _values(field))
        return all(any(_same(item, choice) for item in items) for choice in wanted)
    if operator in (F.CONTAINS, F.TEXT_MATCH, F.TEXT_MATCH_INSENSITIVE):
        fold = (lambda s: s.casefold()) if operator == F.TEXT_MATCH_INSENSITIVE else (lambda s: s)
        if isinstance(field, list):
            return any(isinstance(item, str) and fold(item) == fold(value) for item in field) or (
                operator == F.CONTAINS and any(_same(item, value) for item in field)
            )
        return isinstance(field, str) and isinstance(value, str) and fold(value) in fold(field)
    if operator == F.IS_EMPTY:  # nothing but nulls and empty strings
        return all(item is None or item == "" or isinstance(item, (list, dict)) for item in _values(field))
    compare = {F.GT: lambda a: a > value, F.GTE: lambda a: a >= value, F.LT: lambda a: a < value,
               F.LTE: lambda a: a <= value}[operator]  # fmt: skip
    return any(_orders(item, value) and compare(item) for item in items)


def expected(filters: MetadataFilters, metadata: dict[str, Any]) -> bool:
    results = [
        expected(item, metadata)
        if isinstance(item, MetadataFilters)
        else _holds(item.operator, metadata.get(item.key, _MISSING), item.value)
        for item in filters.filters
    ]
    if not results:  # a group without filters restricts nothing, whatever its condition (as in LlamaIndex)
        return True
    if filters.condition == FilterCondition.OR:
        return any(results)
    if filters.condition == FilterCondition.NOT:
        return not any(results)
    return all(results)


# --- fixtures and helpers -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store() -> MMRagVectorStore:
    vector_store = MMRagVectorStore()
    nodes = [
        TextNode(id_=node_id, text=f"text of {node_id}", metadata=METADATA[node_id], embedding=vector.tolist())
        for node_id, vector in zip(IDS, VECTORS)
    ]
    vector_store.add(nodes)
    return vector_store


def found(store: MMRagVectorStore, filters: MetadataFilters, k: int = len(IDS)) -> list[str]:
    result = store.query(VectorStoreQuery(query_embedding=QUERY, similarity_top_k=k, filters=filters))
    return result.ids or []


def one(key: str, operator: FilterOperator, value: Any) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=operator)])


OPERATOR_CASES = [
    ("year", F.EQ, 2020), ("year", F.EQ, "2020"), ("year", F.EQ, 2022), ("year", F.EQ, 2023), ("title", F.EQ, ""),
    ("year", F.NE, 2020), ("tags", F.NE, "dog"),
    ("year", F.GT, 2020), ("year", F.GT, "2000"), ("score", F.GT, 0.5), ("title", F.GT, "a"),
    ("year", F.GTE, 2021), ("score", F.GTE, 0),
    ("year", F.LT, 2020), ("score", F.LT, 0), ("year", F.LTE, 2019), ("score", F.LTE, 1.5),
    ("year", F.IN, [2019, 2023]), ("year", F.IN, ["2020"]), ("tags", F.IN, ["bird"]), ("tags", F.IN, []), ("year", F.IN, 2021),
    ("year", F.NIN, [2019, 2020]), ("tags", F.NIN, ["cat", "dog"]), ("tags", F.NIN, []),
    ("tags", F.ANY, ["cat", "bird"]), ("tags", F.ANY, ["fish"]), ("tags", F.ANY, []),
    ("tags", F.ALL, ["cat", "dog"]), ("tags", F.ALL, ["dog"]), ("tags", F.ALL, []), ("tags", F.ALL, ["cat", "fish"]),
    ("tags", F.CONTAINS, "cat"), ("tags", F.CONTAINS, "ca"), ("title", F.CONTAINS, "og"), ("year", F.CONTAINS, 2018),
    ("title", F.TEXT_MATCH, "Cat"), ("title", F.TEXT_MATCH, "cat"), ("title", F.TEXT_MATCH, ""),
    ("tags", F.TEXT_MATCH, "dog"),
    ("title", F.TEXT_MATCH_INSENSITIVE, "cat"), ("title", F.TEXT_MATCH_INSENSITIVE, "STRASSE"),
    ("tags", F.TEXT_MATCH_INSENSITIVE, "CAT"), ("title", F.TEXT_MATCH_INSENSITIVE, "DOGS"),
    ("title", F.IS_EMPTY, None), ("tags", F.IS_EMPTY, None), ("year", F.IS_EMPTY, None), ("missing", F.IS_EMPTY, None),
]  # fmt: skip


def test_every_operator_is_covered():
    assert {operator for _, operator, _ in OPERATOR_CASES} == set(FilterOperator)


@pytest.mark.parametrize(
    "key, operator, value", OPERATOR_CASES, ids=[f"{k} {o.value} {v!r}" for k, o, v in OPERATOR_CASES]
)
def test_operator_matches_plain_python(store, key, operator, value):
    filters = one(key, operator, value)
    wanted = {node_id for node_id in IDS if expected(filters, METADATA[node_id])}
    assert set(found(store, filters)) == wanted
    assert {node.node_id for node in store.get_nodes(filters=filters)} == wanted
    # the filter runs before ranking: a small k still gets min(k, matches) hits, the best of the matches
    best = found(store, filters, k=2)
    assert len(best) == min(2, len(wanted))
    assert best == [node_id for node_id in found(store, MetadataFilters(filters=[])) if node_id in wanted][:2]


# LlamaIndex's own evaluator (SimpleVectorStore's) on fields where the semantics coincide: numbers and strings
# (no lists), whole-value membership.
AGREED = [
    ("score", operator, value)
    for operator, value in itertools.product([F.EQ, F.NE, F.GT, F.GTE, F.LT, F.LTE], [0, 0.5, 1.5, 2])
] + [
    ("score", F.IN, [0, 2]), ("score", F.NIN, [0, 2]), ("title", F.EQ, "cat"), ("title", F.NE, "cat"),
    ("title", F.TEXT_MATCH, "Dog"), ("title", F.TEXT_MATCH, "og"), ("title", F.TEXT_MATCH_INSENSITIVE, "cAt"),
    ("title", F.CONTAINS, "at"), ("title", F.IS_EMPTY, None),
    ("tags", F.ANY, ["dog", "bird"]), ("tags", F.ALL, ["cat", "dog"]), ("tags", F.CONTAINS, "dog"),
]  # fmt: skip


@pytest.mark.parametrize("key, operator, value", AGREED, ids=[f"{k} {o.value} {v!r}" for k, o, v in AGREED])
def test_operator_agrees_with_llama_index_where_semantics_coincide(store, key, operator, value):
    filters = one(key, operator, value)
    with_key = [node_id for node_id in IDS if key in METADATA[node_id] and METADATA[node_id][key] is not None]
    if operator in (F.IS_EMPTY, F.NE, F.NIN):
        with_key = IDS
    if key == "tags" and operator != F.IS_EMPTY:  # LlamaIndex looks into strings: compare on list fields only
        with_key = [node_id for node_id in IDS if isinstance(METADATA[node_id].get("tags"), list)]
    theirs = build_metadata_filter_fn(lambda node_id: METADATA[node_id], filters)
    assert {i for i in found(store, filters) if i in with_key} == {i for i in with_key if theirs(i)}


def _f(key: str, operator: FilterOperator, value: Any) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=operator)


CONDITIONS = [
    MetadataFilters(filters=[_f("year", F.GTE, 2020), _f("tags", F.CONTAINS, "dog")], condition=FilterCondition.AND),
    MetadataFilters(filters=[_f("year", F.EQ, 2019), _f("title", F.TEXT_MATCH, "CAT")], condition=FilterCondition.OR),
    MetadataFilters(filters=[_f("tags", F.ANY, ["cat"]), _f("score", F.GT, 1)], condition=FilterCondition.NOT),
    MetadataFilters(filters=[], condition=FilterCondition.AND),
    MetadataFilters(filters=[], condition=FilterCondition.OR),
    MetadataFilters(filters=[], condition=FilterCondition.NOT),
    MetadataFilters(  # nested: (year >= 2020 or title is empty) and not (tags contains dog)
        filters=[
            MetadataFilters(filters=[_f("year", F.GTE, 2020), _f("title", F.IS_EMPTY, None)], condition="or"),
            MetadataFilters(filters=[_f("tags", F.CONTAINS, "dog")], condition="not"),
        ],
        condition="and",
    ),
    MetadataFilters(  # three levels, with a NOT over an AND
        filters=[
            _f("score", F.LT, 1),
            MetadataFilters(
                filters=[
                    MetadataFilters(filters=[_f("tags", F.ALL, ["cat", "dog"]), _f("year", F.NIN, [2020])]),
                    _f("title", F.TEXT_MATCH_INSENSITIVE, "sat"),
                ],
                condition="not",
            ),
        ],
        condition="or",
    ),
]


@pytest.mark.parametrize("filters", CONDITIONS, ids=[str(i) for i in range(len(CONDITIONS))])
def test_conditions_and_nesting_match_plain_python(store, filters):
    wanted = {node_id for node_id in IDS if expected(filters, METADATA[node_id])}
    assert set(found(store, filters)) == wanted
    assert {node.node_id for node in store.get_nodes(filters=filters)} == wanted


def test_no_filter_is_none():
    assert translate_filters(None) is None


BAD = [
    (MetadataFilter.model_construct(key="year", value=1, operator="regex"), "unsupported filter operator 'regex'"),
    (_f("id", F.EQ, "n1"), "names an mm-rag record field"),
    (_f("doc_id", F.EQ, "d"), "node_ids / doc_ids"),
    (_f("_llama_index_node", F.IS_EMPTY, None), "reserved"),
    (_f("title", F.TEXT_MATCH, 3), "needs a string"),
    (_f("title", F.TEXT_MATCH_INSENSITIVE, ["a"]), "needs a string"),
    (_f("year", F.EQ, [1, 2]), "cannot compare"),
]


@pytest.mark.parametrize("bad, message", BAD, ids=[message for _, message in BAD])
def test_bad_filters_raise_clear_errors_and_change_nothing(store, bad, message):
    filters = MetadataFilters(filters=[_f("year", F.GT, 0), MetadataFilters(filters=[bad], condition="or")])
    with pytest.raises(FilterError, match=message):
        found(store, filters)
    with pytest.raises(FilterError, match=message):
        store.delete_nodes(filters=filters)
    assert store.client.count() == len(IDS)


def test_unknown_condition_is_refused(store):
    filters = MetadataFilters.model_construct(filters=[_f("year", F.GT, 0)], condition="xor")
    with pytest.raises(FilterError, match="unsupported filter condition"):
        found(store, filters)


# --- random nested filters against the plain-Python expectation -----------------------------------------------
_STRINGS = ["cat", "dog", "Cat", "", "2020", "Straße", "STRASSE", "og", "a"]
_NUMBERS = [2020, 2019, 0, 2, 2023, 1.5, -1.0, 2022.0]


@st.composite
def _random_filters(draw, depth: int = 0) -> MetadataFilters:
    def leaf() -> MetadataFilter:
        operator = draw(st.sampled_from(list(FilterOperator)))
        key = draw(st.sampled_from(["year", "tags", "title", "score", "missing"]))
        strings, numbers = st.sampled_from(_STRINGS), st.sampled_from(_NUMBERS)
        if operator == F.IS_EMPTY:
            value = None
        elif operator in (F.TEXT_MATCH, F.TEXT_MATCH_INSENSITIVE):
            value = draw(strings)
        elif operator in (F.IN, F.NIN, F.ANY, F.ALL):
            value = draw(
                st.lists(strings, max_size=3) | st.lists(st.sampled_from([2020, 2019, 0, 2, 2023]), max_size=3)
            )
        else:
            value = draw(strings | numbers)
        return MetadataFilter(key=key, value=value, operator=operator)

    items = [
        draw(_random_filters(depth + 1)) if depth < 2 and draw(st.integers(0, 3)) == 0 else leaf()
        for _ in range(draw(st.integers(0, 3)))
    ]
    return MetadataFilters(filters=items, condition=draw(st.sampled_from(list(FilterCondition))))


def test_random_nested_filters_match_plain_python(store):
    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(filters=_random_filters())
    def check(filters: MetadataFilters) -> None:
        wanted = {node_id for node_id in IDS if expected(filters, METADATA[node_id])}
        assert set(found(store, filters)) == wanted
        assert len(found(store, filters, k=3)) == min(3, len(wanted))

    check()


def test_modality_filters_on_what_a_node_is():
    """``modality`` names the record field (image nodes: ``image``, others ``text``): no metadata key says it."""
    from llama_index.core.schema import ImageNode

    store = MMRagVectorStore()
    store.add([
        TextNode(id_="t", text="a note", embedding=[1.0, 0.0]),
        ImageNode(id_="i", image_path="photo.png", embedding=[0.0, 1.0]),
    ])  # fmt: skip
    images = MetadataFilters(filters=[MetadataFilter(key="modality", value="image")])
    query = VectorStoreQuery(query_embedding=[1.0, 0.0], similarity_top_k=2, filters=images)
    assert store.query(query).ids == ["i"]
    assert translate_filters(images) == {"modality": {"$eq": "image"}}
