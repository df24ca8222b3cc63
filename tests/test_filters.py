"""The metadata filter language: every operator against a hand-made store, random filters against the
reference evaluator in `_reference.py`, and the errors a malformed filter raises."""

from __future__ import annotations

import numpy as np
import pytest
from _reference import matches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mm_rag import FilterError, InvalidInputError, MultimodalStore, Record
from mm_rag.filters import canonical_filter, compile_filter

DIM = 8


def _plain(i: int) -> Record:
    return Record(
        f"r{i:02d}",
        "text",
        text=f"plain {i}",
        doc_id="d3" if i % 2 else "d4",
        metadata={"year": 2000 + (i - 13), "lang": "de", "score": i / 4, "tags": [f"t{i % 3}"]},
    )


RECORDS = [
    Record(
        "r00",
        "text",
        "a cat sat on the mat",
        None,
        {"year": 2020, "tags": ["cat", "dog"], "lang": "en", "score": 0.5, "flag": True, "title": "Cats"},
        "d1",
        "h0",
    ),
    Record(
        "r01",
        "text",
        "dogs bark",
        None,
        {"year": 2021, "tags": ["dog"], "lang": "en", "score": 1.5, "flag": False, "title": "Dogs"},
        "d1",
        "h1",
    ),
    Record("r02", "image", None, "img/2.png", {"year": 2019, "tags": [], "lang": "fr", "score": -1.0, "flag": 1}, "d2"),
    Record("r03", "image", None, "img/3.png", {"year": "2020", "tags": "cat", "lang": None, "flag": 0}, "d2"),
    Record("r04", "audio", "hello there", None, {"year": 2020.0, "tags": ["Cat"], "start": 0.0, "end": 2.5}),
    Record(
        "r05", "audio", "general kenobi", None, {"year": 2020.5, "tags": [1, "cat", None, True], "start": 2.5, "end": 5}
    ),
    Record("r06", "video", None, "v.mp4", {"year": None, "tags": [["cat"]], "nested": {"year": 2020}}),
    Record("r07", "video", None, "v.mp4", {"year": True, "tags": ["bird", "cat"], "a.b": 1}),
    Record("r08", "text", "", None, {}),
    Record("r09", "text", None, None, {"year": 2023, "lang": "en", "nested": {"a": [1, 2]}}),
    Record("r10", "text", "the concatenation", None, {"year": 2022, "tags": ["concat"], "score": 2, "title": "cat"}),
    Record("r11", "image", None, "img/11.jpg", {"year": [2018, 2024], "tags": ["dog", "dog"], "score": 0}),
    Record("r12", "text", "Cat in caps", None, {"year": 1999, "lang": "EN", "score": -0.0, "flag": None}),
] + [_plain(i) for i in range(13, 30)]

ALL = {r.id for r in RECORDS}
PLAIN = {f"r{i:02d}" for i in range(13, 30)}


def ids(*numbers: int) -> set[str]:
    return {f"r{n:02d}" for n in numbers}


VECTORS = np.random.default_rng(7).normal(size=(len(RECORDS), DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def store():
    with MultimodalStore() as s:
        s.create_space("v", DIM)
        s.upsert(RECORDS, {"v": VECTORS})
        yield s


QUERY = np.linspace(-1, 1, DIM, dtype=np.float32)


def search_ids(store: MultimodalStore, f) -> set[str]:
    hits = store.search("v", QUERY, k=100, filter=f)
    found = [h.record.id for h in hits]
    assert len(found) == len(set(found)), "a record was returned twice"
    return set(found)


def catalog_ids(store: MultimodalStore, f) -> set[str]:
    keys = store._generations.catalog.matching_keys(*compile_filter(f))
    return {r.id for r in store._generations.catalog.records_by_keys(keys.tolist()).values()}


def reference_ids(f, records=RECORDS) -> set[str]:
    return {r.id for r in records if matches(f, r)}


# Each case: a filter and the ids it must find, worked out by hand from RECORDS above.
CASES = [
    # plain equality is typed: 2020 finds 2020 and 2020.0, not "2020", True, a nested value or null
    ({"lang": "en"}, ids(0, 1, 9)),
    ({"year": 2020}, ids(0, 4)),
    ({"year": 2020.0}, ids(0, 4)),
    ({"year": "2020"}, ids(3)),
    ({"year": {"$eq": 2018}}, ids(11)),  # a list element
    ({"year": None}, ids(6)),  # explicit null only, not missing
    ({"flag": True}, ids(0)),  # True is not 1
    ({"flag": 1}, ids(2)),
    ({"flag": False}, ids(1)),
    ({"flag": 0}, ids(3)),
    ({"flag": None}, ids(12)),
    ({"score": 0}, ids(11, 12)),  # 0 == -0.0
    ({"end": 5.0}, ids(5)),
    ({"lang": "EN"}, ids(12)),  # case-sensitive
    # $ne / $nin / $not pass missing fields
    ({"year": {"$ne": 2020}}, ALL - ids(0, 4)),
    ({"lang": {"$ne": "en"}}, ALL - ids(0, 1, 9)),
    ({"lang": {"$not": "en"}}, ALL - ids(0, 1, 9)),
    ({"tags": {"$nin": ["cat", "dog"]}}, ALL - ids(0, 1, 3, 5, 7, 11)),
    ({"year": {"$not": {"$gte": 2020}}}, ALL - ids(0, 1, 4, 5, 9, 10, 11)),
    ({"$not": {"lang": "en"}}, ALL - ids(0, 1, 9)),
    ({"$not": {"$or": [{"lang": "en"}, {"lang": "de"}]}}, ALL - ids(0, 1, 9) - PLAIN),
    # ordering: numbers against numbers (any list element), strings against strings
    ({"year": {"$gt": 2020}}, ids(1, 5, 9, 10, 11)),
    ({"year": {"$gte": 2020, "$lt": 2022}}, ids(0, 1, 4, 5, 11)),  # each operator on any element
    ({"year": {"$lt": 2000}}, ids(12)),
    ({"year": {"$lte": 2000}}, ids(12, 13)),
    ({"year": {"$gte": 2023.0}}, ids(9, 11)),
    ({"lang": {"$gt": "en"}}, ids(2)),  # "fr"; "EN" and "de" sort before "en"
    ({"lang": {"$lte": "EN"}}, ids(12)),
    ({"score": {"$gt": 2}}, PLAIN),
    ({"score": {"$lt": 0}}, ids(2)),  # -0.0 is not below 0
    ({"year": {"$gt": "2019"}}, ids(3)),  # the only string year
    # $in
    ({"tags": {"$in": ["bird", "Cat"]}}, ids(4, 7)),
    ({"year": {"$in": [2020, "2020", True]}}, ids(0, 3, 4, 7)),
    ({"year": {"$in": []}}, set()),
    ({"year": {"$nin": []}}, ALL),
    ({"id": {"$in": ["r01", "r05", "nope"]}}, ids(1, 5)),
    # list fields: equality finds members; a nested list is not searched into
    ({"tags": "cat"}, ids(0, 3, 5, 7)),
    ({"tags": "dog"}, ids(0, 1, 11)),
    # $contains: a list element, or a substring of a string field
    ({"tags": {"$contains": "cat"}}, ids(0, 3, 5, 7)),
    ({"tags": {"$contains": "ca"}}, ids(3)),  # substring of the scalar "cat", not of list elements
    ({"tags": {"$contains": 1}}, ids(5)),
    ({"tags": {"$contains": None}}, ids(5)),
    ({"year": {"$contains": 2018}}, ids(11)),
    ({"year": {"$contains": 2020}}, set()),  # a scalar number contains nothing
    ({"text": {"$contains": "cat"}}, ids(0, 10)),
    ({"title": {"$contains": "at"}}, ids(0, 10)),
    ({"text": {"$contains": ""}}, {r.id for r in RECORDS if r.text is not None}),
    # $icontains: $contains with case-folded strings
    ({"tags": {"$icontains": "CAT"}}, ids(0, 3, 4, 5, 7)),  # "Cat" too; not the number 1 or nested ["cat"]
    ({"tags": {"$icontains": "ca"}}, ids(3)),  # substring of the scalar "cat" only
    ({"text": {"$icontains": "CAT"}}, ids(0, 10, 12)),
    ({"lang": {"$icontains": "N"}}, ids(0, 1, 9, 12)),
    ({"title": {"$not": {"$icontains": "DOG"}}}, ALL - ids(1)),
    # $exists: metadata keys (null counts as present) and record fields (None is absent)
    ({"year": {"$exists": False}}, ids(8)),
    ({"year": {"$exists": True}}, ALL - ids(8)),
    ({"flag": {"$exists": True}}, ids(0, 1, 2, 3, 12)),
    ({"nested": {"$exists": True}}, ids(6, 9)),
    ({"uri": {"$exists": True}}, ids(2, 3, 6, 7, 11)),
    ({"text": {"$exists": False}}, ids(2, 3, 6, 7, 9, 11)),
    ({"text": None}, ids(2, 3, 6, 7, 9, 11)),
    ({"text": ""}, ids(8)),
    # nested objects are present but hold no comparable values; keys are literal (no dotted paths)
    ({"nested": 2020}, set()),
    ({"nested.year": 2020}, set()),
    ({"a.b": 1}, ids(7)),
    # record fields
    ({"modality": "image"}, ids(2, 3, 11)),
    ({"modality": {"$in": ["audio", "video"]}}, ids(4, 5, 6, 7)),
    ({"doc_id": "d1"}, ids(0, 1)),
    ({"doc_id": None}, ids(*range(4, 13))),
    ({"doc_id": {"$exists": False}}, ids(*range(4, 13))),
    ({"content_hash": "h1"}, ids(1)),
    ({"id": "r07"}, ids(7)),
    ({"id": {"$gte": "r28"}}, ids(28, 29)),
    ({"doc_id": 3}, set()),  # typed: a number never equals a string column
    # combinations
    ({"$and": [{"lang": "en"}, {"year": {"$gt": 2020}}]}, ids(1, 9)),
    ({"$or": [{"lang": "fr"}, {"tags": {"$contains": "bird"}}]}, ids(2, 7)),
    ({"lang": "en", "flag": {"$exists": True}}, ids(0, 1)),
    (
        {"$or": [{"$and": [{"modality": "audio"}, {"start": {"$gte": 2}}]}, {"$not": {"year": {"$exists": True}}}]},
        ids(5, 8),
    ),
    (
        {"$and": [{"year": {"$gte": 2019}}, {"$not": {"tags": "cat"}}], "modality": {"$ne": "video"}},
        ids(1, 2, 4, 9, 10, 11),
    ),
    ({"$or": [{"id": "r00"}], "$and": [{"id": "r01"}]}, set()),
    ({"missing_key": {"$ne": 1}, "lang": "fr"}, ids(2)),
    ({"missing_key": 1}, set()),
]


@pytest.mark.parametrize("f, expected", CASES, ids=[canonical_filter(f) for f, _ in CASES])
def test_filter_finds_hand_worked_records(store, f, expected):
    assert reference_ids(f) == expected, "the reference evaluator disagrees with the hand-worked answer"
    assert search_ids(store, f) == expected
    assert catalog_ids(store, f) == expected


def test_every_operator_is_covered_by_the_cases():
    used = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key.startswith("$"):
                    used.add(key)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for f, _ in CASES:
        walk(f)
    assert used == {
        "$eq",
        "$ne",
        "$gt",
        "$gte",
        "$lt",
        "$lte",
        "$in",
        "$nin",
        "$exists",
        "$contains",
        "$icontains",
        "$and",
        "$or",
        "$not",
    }


@pytest.mark.parametrize("f, _", CASES[::5], ids=[canonical_filter(f) for f, _ in CASES[::5]])
def test_filtered_search_returns_the_exact_top_k_of_the_matches(store, f, _):
    allowed = sorted(reference_ids(f))
    vectors = {r.id: v for r, v in zip(RECORDS, VECTORS)}
    q = QUERY / np.linalg.norm(QUERY)
    scores = {i: float(vectors[i] @ q / np.linalg.norm(vectors[i])) for i in allowed}
    best = sorted(allowed, key=lambda i: -scores[i])[:3]
    hits = store.search("v", QUERY, k=3, filter=f)
    assert [h.record.id for h in hits] == best
    assert [h.rank for h in hits] == list(range(len(best)))
    assert [h.score for h in hits] == pytest.approx([scores[i] for i in best], abs=1e-5)


def test_filter_results_follow_writes(store):
    """The store caches compiled filter matches; a write must not leave a stale answer behind."""
    f = {"lang": "en"}
    assert search_ids(store, f) == ids(0, 1, 9)
    extra = Record("extra", "text", metadata={"lang": "en"})
    store.upsert([extra], {"v": np.ones((1, DIM), dtype=np.float32)})
    try:
        assert search_ids(store, f) == ids(0, 1, 9) | {"extra"}
        store.upsert([Record("extra", "text", metadata={"lang": "fr"})], {"v": np.ones((1, DIM))})
        assert search_ids(store, f) == ids(0, 1, 9)
    finally:
        assert store.delete(["extra"]) == 1
    assert search_ids(store, {"lang": "fr"}) == ids(2)


def test_filters_that_differ_only_in_type_are_not_confused(store):
    # one after the other, so a cache keyed too loosely would return the first answer twice
    assert search_ids(store, {"flag": True}) == ids(0)
    assert search_ids(store, {"flag": 1}) == ids(2)
    assert search_ids(store, {"flag": 1.0}) == ids(2)
    assert search_ids(store, {"year": "2020"}) == ids(3)
    assert search_ids(store, {"year": 2020}) == ids(0, 4)


def test_filter_on_an_empty_result_returns_no_hits(store):
    assert store.search("v", QUERY, k=5, filter={"lang": "xx"}) == []
    assert store.search_batch("v", [QUERY, -QUERY], k=5, filter={"lang": "xx"}) == [[], []]


def test_search_batch_applies_the_filter_to_every_query(store):
    f = {"modality": {"$in": ["image", "video"]}}
    for hits in store.search_batch("v", [QUERY, -QUERY, QUERY[::-1]], k=100, filter=f):
        assert {h.record.id for h in hits} == ids(2, 3, 6, 7, 11)


# --- random filters over random metadata --------------------------------------------------------------

_words = st.sampled_from(["", "a", "b", "ab", "ba", "A", "é", "a b"])
_free_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=4)
_numbers = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([-1.5, -0.0, 0.5, 2.0, 1e300]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 2**63 - 1),
)
# Values that are easily confused: 1 / 1.0 / True / "1", 0 / False / None / "".
_tricky = st.sampled_from([None, True, False, 0, 1, 2, -1, 0.0, 1.0, 1.5, "", "a", "b", "ab", "1", "A"])
_scalars = st.one_of(_tricky, st.none(), st.booleans(), _numbers, _words, _free_text)
_OPERATORS = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$contains", "$icontains", "$not"]
_METADATA_KEYS = ["a", "b", "c"]
_FIELD_KEYS = _METADATA_KEYS + ["text", "id", "modality", "uri", "doc_id", "content_hash"]


@st.composite
def _cases(draw):
    """Random records and a random filter over them, drawing values from one small palette per example so
    that filters and records often share values (a filter over unrelated values would match nothing)."""
    palette = draw(st.lists(_scalars, min_size=1, max_size=4)) + draw(st.lists(_tricky, min_size=2, max_size=3))
    value = st.sampled_from(palette)
    strings = [v for v in palette if isinstance(v, str)] or [""]
    text = st.one_of(st.none(), st.sampled_from(strings), _words)

    def chance(percent: int) -> bool:
        return draw(st.integers(0, 99)) < percent

    def metadata_value():
        shape = draw(st.integers(0, 9))
        if shape <= 4:
            return draw(value)
        if shape <= 7:
            return draw(st.lists(value, max_size=3))
        if shape == 8:
            return [draw(value), draw(st.lists(value, max_size=2))]
        return {draw(st.sampled_from(["a", "x"])): draw(value)}

    records = [
        Record(
            f"id{i}",
            draw(st.sampled_from(["text", "image", "audio", "video"])),
            text=draw(text),
            uri=draw(st.sampled_from([None, "u", "a"])),
            metadata={key: metadata_value() for key in _METADATA_KEYS if chance(75)},
            doc_id=draw(st.sampled_from([None, "a", "b", "id1"])),
            content_hash=draw(st.sampled_from([None, "a", "ab"])),
        )
        for i in range(draw(st.integers(3, 12)))
    ]

    def operand(op: str):
        if op in ("$gt", "$gte", "$lt", "$lte"):
            orderable = [v for v in palette if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
            return draw(st.sampled_from(orderable) if orderable and chance(80) else _words)
        if op in ("$in", "$nin"):
            return draw(st.lists(st.one_of(value, _scalars), max_size=3))
        if op == "$exists":
            return draw(st.booleans())
        if op == "$not" and chance(60):
            return operators(_OPERATORS[:-1])
        if op == "$contains" and chance(50):
            return draw(st.sampled_from(strings))
        if op == "$icontains":  # a string, often another case of one in the palette
            word = draw(st.sampled_from(strings) if chance(70) else _free_text)
            return word.swapcase() if chance(50) else word
        return draw(value) if chance(85) else draw(_scalars)

    def operators(choices):
        spec = {}
        for _ in range(1 + chance(30)):
            op = draw(st.sampled_from(choices))
            spec[op] = operand(op)
        return spec

    def field():
        key = draw(st.sampled_from(_FIELD_KEYS))
        return {key: operand("$eq") if chance(25) else operators(_OPERATORS)}

    def tree(depth: int):
        if depth >= 3 or chance(55):
            return field()
        children = [tree(depth + 1) for _ in range(draw(st.integers(1, 3)))]
        kind = draw(st.sampled_from(["$and", "$or", "$not", "keys"]))
        if kind == "$not":
            return {"$not": children[0]}
        if kind == "keys":  # several keys in one dict, all of which must hold
            merged = field()
            for child in children:
                merged.update(child)
            return merged
        return {kind: children}

    return records, tree(0)


def test_random_filters_agree_with_the_reference():
    rng = np.random.default_rng(0)
    with MultimodalStore() as random_store:
        random_store.create_space("v", 4)

        @settings(
            max_examples=250,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(case=_cases())
        def check(case):
            records, f = case
            random_store.clear()
            random_store.upsert(records, {"v": rng.normal(size=(len(records), 4)) + 0.1})
            expected = reference_ids(f, records)
            assert catalog_ids(random_store, f) == expected
            assert search_ids_in(random_store, f, len(records)) == expected

        check()


def search_ids_in(store: MultimodalStore, f, k: int) -> set[str]:
    hits = store.search("v", np.ones(4, dtype=np.float32), k=k, filter=f)
    found = [h.record.id for h in hits]
    assert len(found) == len(set(found))
    return set(found)


# --- malformed filters --------------------------------------------------------------------------------

BAD_FILTERS = [
    ({"$foo": 1}, "$foo"),
    ({"a": {"$neq": 1}}, "$neq"),
    ({"a": {"$regex": "x.*"}}, "$regex"),
    ({"a": {"$gt": 1, "b": 2}}, "'b'"),
    ({"$and": [{"a": {"$size": 2}}]}, "$size"),
    ([("a", 1)], "must be a dict"),
    ("a = 1", "must be a dict"),
    (5, "must be a dict"),
    ({}, "empty"),
    ({"$and": []}, "non-empty list"),
    ({"$or": []}, "non-empty list"),
    ({"$and": {"a": 1}}, "non-empty list"),
    ({"$or": "a"}, "non-empty list"),
    ({"$and": [{}]}, "empty"),
    ({"$and": [5]}, "must be a dict"),
    ({"$not": [{"a": 1}]}, "must be a dict"),
    ({"a": {"$in": 5}}, "take a list"),
    ({"a": {"$in": "abc"}}, "take a list"),
    ({"a": {"$nin": None}}, "take a list"),
    ({"a": {"$gt": [1]}}, "compares numbers or strings"),
    ({"a": {"$gt": None}}, "compares numbers or strings"),
    ({"a": {"$lte": True}}, "compares numbers or strings"),
    ({"a": {"$lt": {"x": 1}}}, "compares numbers or strings"),
    ({"a": {"$exists": 1}}, "$exists"),
    ({"a": {"$exists": "yes"}}, "$exists"),
    ({"a": [1, 2]}, "$in"),  # equality with a list: the message points at $in
    ({"a": {"b": 1}}, "cannot compare"),
    ({"a": {}}, "cannot compare"),
    ({"a": {"$in": [1, [2]]}}, "cannot compare"),
    ({"a": {"$contains": {"x": 1}}}, "cannot compare"),
    ({"a": {"$icontains": 1}}, "$icontains takes a string"),
    ({"a": {"$icontains": ["x"]}}, "$icontains takes a string"),
    ({"a": object()}, "cannot compare"),
    ({"a": 2**64}, "64-bit"),
    ({"a": {"$gt": -(2**63) - 1}}, "64-bit"),
    ({1: "a"}, "keys must be strings"),
    ({"": 1}, "invalid field name"),
    ({'a"b': 1}, "invalid field name"),
    ({'a" OR 1=1 --': 1}, "invalid field name"),
    ({"a\\b": 1}, "invalid field name"),
    ({"a\nb": 1}, "invalid field name"),
    ({"a\x00": 1}, "invalid field name"),
    ({"a\tb": {"$exists": True}}, "invalid field name"),
    ({"$or": [{"ok": 1}, {'bad"key': 1}]}, "invalid field name"),
    ({"a') OR 1=1 --": 1}, "invalid field name"),
    ({"x'; DROP TABLE records; --": 1}, "invalid field name"),
    ({"a=b": 1}, "invalid field name"),
]


@pytest.mark.parametrize("f, message", BAD_FILTERS, ids=[repr(f)[:40] for f, _ in BAD_FILTERS])
def test_malformed_filter_raises_filter_error(store, f, message):
    with pytest.raises(FilterError) as error:
        compile_filter(f)
    assert message in str(error.value)
    assert isinstance(error.value, ValueError) and isinstance(error.value, InvalidInputError)
    with pytest.raises(FilterError):
        store.search("v", QUERY, k=3, filter=f)
    assert len(store) == len(RECORDS)


def test_filter_error_names_where_the_problem_is():
    with pytest.raises(FilterError, match=r"filter\.\$or\[1\]\.b\.\$gt"):
        compile_filter({"$or": [{"a": 1}, {"b": {"$gt": None}}]})


def test_no_filter_compiles_to_true():
    assert compile_filter(None) == ("1", [])


def test_values_are_bound_never_pasted():
    sql, params = compile_filter({"a": "x'); DROP TABLE records; --", "b": {"$gt": 3}})
    assert "DROP" not in sql and "x'" not in sql
    assert "x'); DROP TABLE records; --" in params and 3 in params


SQL_KEY = "a'); DROP TABLE records; --"
SQL_VALUE = "' OR 1=1 --"


def test_sql_looking_values_are_taken_literally_and_such_keys_refused():
    records = [
        Record("plain", "text", metadata={"a": 1}),
        Record("tricky-key", "text", metadata={SQL_KEY: "v", "a": 2}),
        Record("tricky-value", "text", text=SQL_VALUE, metadata={"a": SQL_VALUE}),
        Record("percent", "text", metadata={"a": "%", "a.b": "x"}),
    ]
    with MultimodalStore() as s:
        s.create_space("v", 2)
        s.upsert(records, {"v": np.eye(2)[[0, 1, 0, 1]] + 0.5})
        q = [1.0, 1.0]

        def found(f):
            return {h.record.id for h in s.search("v", q, k=10, filter=f)}

        for condition in ("v", {"$exists": True}, {"$ne": "v"}):  # stored fine, but no filter may name it
            with pytest.raises(FilterError, match="invalid field name"):
                found({SQL_KEY: condition})
        assert found({"a": SQL_VALUE}) == {"tricky-value"}
        assert found({"text": SQL_VALUE}) == {"tricky-value"}
        assert found({"a": {"$in": [SQL_VALUE, "' OR '1'='1"]}}) == {"tricky-value"}
        assert found({"a": {"$contains": "OR 1=1"}}) == {"tricky-value"}
        assert found({"a": {"$contains": "%"}}) == {"percent"}  # no LIKE wildcards
        assert found({"a": {"$contains": "_"}}) == set()
        assert found({"a": {"$icontains": "or 1=1"}}) == {"tricky-value"}
        assert found({"a": {"$icontains": "%"}}) == {"percent"}
        assert found({"a.b": "x"}) == {"percent"}  # a literal key, not a path
        assert found({"id": "plain' OR 'a'='a"}) == set()
        for f in ({'a" = 1 OR "1': 1}, {"a\\": 1}, {"1=1 OR a": {"$exists": False}}):
            with pytest.raises(FilterError):
                found(f)
        assert len(s) == len(records)
        assert [r.id for r in s] == [r.id for r in records]
        assert s.get(["tricky-key"])[0].metadata == {SQL_KEY: "v", "a": 2}
        assert s.count("v") == len(records)


def test_icontains_folds_unicode_case_like_python():
    records = [
        Record("street", "text", text="Hauptstraße 5", metadata={"city": "KÖLN", "tags": ["Ärger", "x"]}),
        Record("other", "text", text="Main street", metadata={"city": "Bonn", "tags": ["ärgerlich"]}),
    ]
    with MultimodalStore() as s:
        s.create_space("v", 2)
        s.upsert(records, {"v": np.eye(2)})
        for f, expected in [
            ({"text": {"$icontains": "STRASSE"}}, {"street"}),  # ß folds to ss
            ({"city": {"$icontains": "köln"}}, {"street"}),
            ({"tags": {"$icontains": "ärger"}}, {"street"}),  # a list element equal once folded, not a prefix
            ({"text": {"$icontains": "STREET"}}, {"other"}),
        ]:
            assert reference_ids(f, records) == expected
            assert {h.record.id for h in s.search("v", [1.0, 1.0], k=5, filter=f)} == expected


def test_filters_written_as_json_text_are_parsed_or_refused_naming_their_source():
    from mm_rag.filters import parse_filter

    assert parse_filter('{"year": {"$gte": 2020}}') == {"year": {"$gte": 2020}}
    assert parse_filter(None) is None and parse_filter("  ") is None
    with pytest.raises(FilterError, match="--filter is not valid JSON"):
        parse_filter("{", "--filter")
    with pytest.raises(FilterError, match="filter must be a JSON object"):
        parse_filter("[1, 2]")
    with pytest.raises(FilterError, match="not valid JSON"):
        parse_filter('{"$and": [' * 5000 + "{}" + "]}" * 5000)


def test_a_retriever_reports_a_bad_filter_where_the_user_wrote_it(store):
    """The retriever wraps filters in ``$and`` with its own conditions; the error path must not show that."""
    from mm_rag.retrieval import MultimodalRetriever

    retriever = MultimodalRetriever(store, mode="lexical")
    with pytest.raises(FilterError) as raised:
        retriever.retrieve("cat", filter={"year": {"$near": 2020}})
    message = str(raised.value)
    assert message.startswith("filter.year: ") and "$near" in message and "$and" not in message
    own = MultimodalRetriever(store, mode="lexical", filter={"lang": {"$bad": "en"}})
    with pytest.raises(FilterError, match=r"^MultimodalRetriever\.filter\.lang: "):
        own.retrieve("cat")
