"""LlamaIndex `MetadataFilters` → one mm-rag filter dict (see `mm_rag.filters`), by one recursive translator.

Every `FilterOperator` and `FilterCondition` has an exact counterpart, so the store applies the whole filter
in SQL before ranking and a search returns ``min(k, matches)`` hits. Semantics (mm-rag's, Mongo-like):

- ``==``, ``>``, ``in``… on a list field hold when any element passes; comparisons are typed (a number
  never equals a string); a missing field fails every positive test and passes ``!=`` and ``nin``;
- ``any``: the field (or one of its elements) equals one of the values; ``all``: every value is the field or
  one of its elements (``all`` of no values: the field holds a non-null value); ``contains``: a list element
  equals the value, or a string field contains it;
- ``text_match``: a string field contains the value (case-sensitive); ``text_match_insensitive`` the same
  ignoring case (Unicode case folding); on a list field, an element equals it (ignoring case);
- ``is_empty``: the field holds nothing but nulls and empty strings: missing, ``None``, ``""``, ``[]``,
  ``[None, ""]``… (an object or a list of lists holds no comparable value either, so it counts as empty);
- condition ``not`` holds when none of its filters does;
- a group without filters holds for every node, whatever its condition (``or`` too), as in LlamaIndex.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters
from llama_index.vector_stores.mm_rag._convert import NODE_KEY

from mm_rag import FilterError
from mm_rag.records import RECORD_COLUMNS

MMRagFilter = dict[str, Any]

# Constant filters: a record's id is never null.
ALWAYS: MMRagFilter = {"id": {"$exists": True}}
NEVER: MMRagFilter = {"id": {"$exists": False}}
# A value that is not empty: a non-empty string (every string but "" is > ""), a number (>= 0 or < 0), a bool.
_HAS_CONTENT = ({"$gt": ""}, {"$gte": 0}, {"$lt": 0}, {"$eq": True}, {"$eq": False})


def translate_filters(filters: MetadataFilters | None) -> MMRagFilter | None:
    """The mm-rag filter equivalent to `filters` (None for no filter).

    Raises:
        FilterError: an unknown operator or condition, a value of the wrong kind, or a key that names an
            mm-rag record field (``id``, ``text``, ``doc_id``… — use the query's ``node_ids``/``doc_ids``) or
            the reserved node key.
    """
    if filters is None:
        return None
    return _group(filters, "filters")


def _group(filters: MetadataFilters, where: str) -> MMRagFilter:
    condition = filters.condition or FilterCondition.AND
    if condition not in (FilterCondition.AND, FilterCondition.OR, FilterCondition.NOT):
        raise FilterError(f"{where}: unsupported filter condition {condition!r}; expected and, or or not")
    parts = [_translate(item, f"{where}[{index}]") for index, item in enumerate(filters.filters)]
    if not parts:  # no filters restrict nothing, whatever the condition (as in LlamaIndex's SimpleVectorStore)
        return ALWAYS
    if condition == FilterCondition.AND:
        return _all(parts)
    if condition == FilterCondition.OR:
        return _any(parts)
    return {"$not": _any(parts)}


def _translate(item: MetadataFilter | MetadataFilters, where: str) -> MMRagFilter:
    if isinstance(item, MetadataFilters):
        return _group(item, where)
    if not isinstance(item, MetadataFilter):
        raise FilterError(f"{where}: expected a MetadataFilter or MetadataFilters, got {type(item).__name__}")
    key = _checked_key(item.key, where)
    try:
        operator: FilterOperator | None = FilterOperator(item.operator)
    except ValueError:  # a MetadataFilter built without validation, or an operator newer than this module
        operator = None
    build = _OPERATORS.get(operator) if operator is not None else None
    if operator is None or build is None:
        raise FilterError(
            f"{where}: unsupported filter operator {item.operator!r}; expected one of {[op.value for op in _OPERATORS]}"
        )
    return build(key, item.value, f"{where} ({key} {operator.value})")


# Record fields a filter may name: `modality` is what a node is (``image`` for image nodes, else ``text``; and
# ``audio``/``video`` for records `mm-rag ingest` wrote), which no metadata key says and no query argument
# restricts. The other fields have query arguments (node_ids, doc_ids) or are the node's own text.
FILTERABLE_FIELDS = frozenset({"modality"})


def _checked_key(key: str, where: str) -> str:
    if key in RECORD_COLUMNS and key not in FILTERABLE_FIELDS:
        raise FilterError(
            f"{where}: metadata key {key!r} cannot be filtered on: it names an mm-rag record field"
            f" ({', '.join(sorted(RECORD_COLUMNS - FILTERABLE_FIELDS))}); restrict by node or document with the"
            " query's node_ids / doc_ids instead"
        )
    if key == NODE_KEY:
        raise FilterError(f"{where}: key {NODE_KEY!r} is reserved by MMRagVectorStore")
    return key


def _all(parts: list[MMRagFilter]) -> MMRagFilter:
    return ALWAYS if not parts else parts[0] if len(parts) == 1 else {"$and": parts}


def _any(parts: list[MMRagFilter]) -> MMRagFilter:
    return NEVER if not parts else parts[0] if len(parts) == 1 else {"$or": parts}


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise FilterError(f"{where}: needs a string, got {value!r}")
    return value


def _is_empty(key: str, value: Any, where: str) -> MMRagFilter:
    return {"$not": {"$or": [{key: test} for test in _HAS_CONTENT]}}


def _every(key: str, values: list[Any]) -> MMRagFilter:
    if not values:  # still a positive test: a missing or null field fails it (as in LlamaIndex)
        return {"$and": [{key: {"$exists": True}}, {"$not": {key: {"$eq": None}}}]}
    return _all([{key: {"$eq": item}} for item in values])


_Builder = Callable[[str, Any, str], MMRagFilter]
_OPERATORS: dict[FilterOperator, _Builder] = {
    FilterOperator.EQ: lambda key, value, where: {key: {"$eq": value}},
    FilterOperator.NE: lambda key, value, where: {key: {"$ne": value}},
    FilterOperator.GT: lambda key, value, where: {key: {"$gt": value}},
    FilterOperator.GTE: lambda key, value, where: {key: {"$gte": value}},
    FilterOperator.LT: lambda key, value, where: {key: {"$lt": value}},
    FilterOperator.LTE: lambda key, value, where: {key: {"$lte": value}},
    FilterOperator.IN: lambda key, value, where: {key: {"$in": _values(value)}},
    FilterOperator.NIN: lambda key, value, where: {key: {"$nin": _values(value)}},
    FilterOperator.ANY: lambda key, value, where: {key: {"$in": _values(value)}},
    FilterOperator.ALL: lambda key, value, where: _every(key, _values(value)),
    FilterOperator.CONTAINS: lambda key, value, where: {key: {"$contains": value}},
    FilterOperator.TEXT_MATCH: lambda key, value, where: {key: {"$contains": _text(value, where)}},
    FilterOperator.TEXT_MATCH_INSENSITIVE: lambda key, value, where: {key: {"$icontains": _text(value, where)}},
    FilterOperator.IS_EMPTY: _is_empty,
}
