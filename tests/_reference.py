"""A plain-Python evaluator of the filter language, the oracle that store searches are checked against.

It follows the semantics documented in `mm_rag.filters` (MongoDB-like):

- keys ``id modality text uri doc_id content_hash`` address the record's own fields, every other key a
  metadata key (taken literally: no dotted paths);
- a field's *values* are its elements when it holds a list, nothing when it holds an object (a nested dict
  is present but has no values to compare), nothing when it is missing, otherwise the value itself;
- a positive test (``$eq $in $gt $gte $lt $lte``) holds when any value passes it, so a missing field fails
  every positive test and passes ``$ne``, ``$nin`` and ``$not`` (which are the negations of ``$eq``,
  ``$in`` and the wrapped test);
- comparisons are typed: ``None`` equals only ``None``, a bool only a bool (``True`` is not ``1``), numbers
  compare with numbers (``1 == 1.0``) and strings with strings, never across;
- ``$contains`` holds for a list with an element equal to the operand, or for a string field of which a
  string operand is a substring;
- ``$icontains`` is ``$contains`` with a string operand and strings compared case-folded (``str.casefold``);
- ``$exists`` asks whether a metadata key is present (even with a null value); a record field exists when
  it is not None. A None record field still *equals* None (``{"text": None}`` finds records without text).
"""

from __future__ import annotations

import operator
from typing import Any

from mm_rag import Record
from mm_rag.records import RECORD_COLUMNS

_ORDER = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
_MISSING = object()


def matches(filter: dict, record: Record) -> bool:
    """Whether `record` satisfies `filter` (every key of the dict must hold)."""
    return all(_clause(key, spec, record) for key, spec in filter.items())


def _clause(key: str, spec: Any, record: Record) -> bool:
    if key == "$and":
        return all(matches(item, record) for item in spec)
    if key == "$or":
        return any(matches(item, record) for item in spec)
    if key == "$not":
        return not matches(spec, record)
    if key in RECORD_COLUMNS:
        value = getattr(record, key)
        return _field(spec, value, exists=value is not None)
    value = record.metadata.get(key, _MISSING)
    return _field(spec, value, exists=value is not _MISSING)


def _field(spec: Any, value: Any, exists: bool) -> bool:
    if isinstance(spec, dict) and any(key.startswith("$") for key in spec):
        return all(_operator(op, operand, value, exists) for op, operand in spec.items())
    return _operator("$eq", spec, value, exists)


def _values(value: Any) -> list:
    if value is _MISSING or isinstance(value, dict):
        return []
    if isinstance(value, list):
        return value
    return [value]


def _operator(op: str, operand: Any, value: Any, exists: bool) -> bool:
    if op == "$exists":
        return exists == operand
    if op == "$ne":
        return not _operator("$eq", operand, value, exists)
    if op == "$nin":
        return not _operator("$in", operand, value, exists)
    if op == "$not":
        return not _field(operand, value, exists)
    if op == "$eq":
        return any(_equal(item, operand) for item in _values(value))
    if op == "$in":
        return any(_equal(item, choice) for item in _values(value) for choice in operand)
    if op == "$contains":
        if isinstance(value, list):
            return any(_equal(item, operand) for item in value)
        return isinstance(value, str) and isinstance(operand, str) and operand in value
    if op == "$icontains":
        folded = operand.casefold()
        if isinstance(value, list):
            return any(isinstance(item, str) and item.casefold() == folded for item in value)
        return isinstance(value, str) and folded in value.casefold()
    compare = _ORDER[op]
    return any(_comparable(item, operand) and compare(item, operand) for item in _values(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _comparable(a: Any, b: Any) -> bool:
    return (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))


def _equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return _comparable(a, b) and a == b
