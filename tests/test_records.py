"""`encode_records`, the batch check-and-encode of `store.add`, answers exactly as `encode_record` does record by
record: the same JSON text for good batches, the same error for the first bad record of a bad one."""

from __future__ import annotations

import dataclasses
import datetime
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mm_rag import InvalidInputError, Record
from mm_rag.records import encode_record, encode_records, metadata_json

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)  # past 64 bits too: JSON numbers of any size
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)  # any code point: the encoder escapes non-ASCII
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
METADATA = st.dictionaries(st.text(max_size=6), VALUES, max_size=4)
OPTIONAL_TEXT = st.none() | st.text(max_size=6)
RECORDS = st.builds(
    Record,
    id=st.text(min_size=1, max_size=6),
    modality=st.sampled_from(["text", "image", "audio", "video"]),
    text=OPTIONAL_TEXT,
    uri=OPTIONAL_TEXT,
    metadata=METADATA,
    doc_id=OPTIONAL_TEXT,
    content_hash=OPTIONAL_TEXT,
)


class Named(str):
    pass


class Tagged(Record):
    __slots__ = ()


@dataclasses.dataclass
class Point:
    x: int
    y: int


def _circular() -> dict:
    loop: dict = {}
    loop["self"] = loop
    return loop


BAD = [
    ("not a record", lambda: {"id": "x"}),
    ("non-string id", lambda: Record(5, "text")),  # type: ignore[arg-type]
    ("empty id", lambda: Record("", "text")),
    ("bad modality", lambda: Record("x", "pdf")),  # type: ignore[arg-type]
    ("unhashable modality", lambda: Record("x", ["text"])),  # type: ignore[arg-type]
    ("non-string uri", lambda: Record("x", "image", uri=b"a.png")),  # type: ignore[arg-type]
    ("metadata not a dict", lambda: Record("x", "text", metadata=[1])),  # type: ignore[arg-type]
    ("non-string key", lambda: Record("x", "text", metadata={1: "a"})),
    ("None key", lambda: Record("x", "text", metadata={None: "a"})),
    ("NaN", lambda: Record("x", "text", metadata={"a": [1.0, float("nan")]})),
    ("infinity", lambda: Record("x", "text", metadata={"a": {"b": float("-inf")}})),
    ("a set", lambda: Record("x", "text", metadata={"a": {1}})),
    ("circular", lambda: Record("x", "text", metadata=_circular())),
]


def _error(call) -> str:
    with pytest.raises(InvalidInputError) as error:
        call()
    return str(error.value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RECORDS, max_size=12))
def test_a_good_batch_encodes_to_the_same_text(records):
    assert encode_records(records) == [encode_record(record) for record in records]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RECORDS, min_size=1, max_size=8), st.data())
def test_a_bad_record_anywhere_gets_the_error_it_gets_alone(records, data):
    name, make = data.draw(st.sampled_from(BAD))
    bad = make()
    records.insert(data.draw(st.integers(0, len(records))), bad)
    alone = _error(lambda: encode_record(bad))
    assert _error(lambda: encode_records(records)) == alone, name


@pytest.mark.parametrize("name, make", BAD, ids=[name for name, _ in BAD])
def test_every_bad_record_is_refused_naming_its_problem(name, make):
    good = [Record(f"g{i}", "text", metadata={"i": i}) for i in range(3)]
    assert _error(lambda: encode_records([*good, make()])) == _error(lambda: encode_record(make()))


def test_subclasses_take_the_record_by_record_path_and_are_accepted_as_before():
    records = [Tagged("t", "text", metadata={"a": 1}), Record(Named("n"), "image", text=Named("caption"))]
    assert encode_records(records) == [encode_record(record) for record in records] == ['{"a":1}', "{}"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(METADATA)
def test_the_stored_text_reads_back_as_the_same_metadata(metadata):
    assert json.loads(metadata_json(metadata)) == metadata


def test_what_orjson_cannot_write_the_standard_encoder_writes():
    deep: list = []
    for _ in range(300):  # orjson stops at 254 levels
        deep = [deep]
    metadata = {"big": 2**70, "deep": deep, "nested key": {1: "a"}}
    text = metadata_json(metadata)
    assert json.loads(text) == {"big": 2**70, "deep": deep, "nested key": {"1": "a"}}
    assert encode_records([Record("x", "text", metadata=metadata)]) == [text]


@pytest.mark.parametrize(
    "value",
    [datetime.datetime(2026, 12, 4), Point(1, 2), float("nan"), [float("inf")]],
    ids=["datetime", "dataclass", "NaN", "infinity in a list"],
)
def test_values_orjson_would_write_but_json_refuses_are_refused(value):
    with pytest.raises((TypeError, ValueError)):
        metadata_json({"a": value})
    assert "metadata" in _error(lambda: encode_records([Record("x", "text", metadata={"a": value})]))


def test_an_empty_batch_encodes_to_nothing():
    assert encode_records([]) == []
