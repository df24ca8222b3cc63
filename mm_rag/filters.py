"""The metadata filter language, compiled to one SQL condition over the catalog.

A filter is a dict. Keys are record fields (``id``, ``modality``, ``text``, ``uri``, ``doc_id``, ``content_hash``)
or metadata keys; values are either a plain value (equality) or a dict of operators::

    {"modality": "image", "year": {"$gte": 2020}, "$or": [{"tags": {"$contains": "cat"}}, {"lang": "en"}]}

Operators: ``$eq $ne $gt $gte $lt $lte $in $nin $exists $contains $icontains`` on a field, ``$and $or $not`` to
combine.
Several keys in one dict must all hold. Semantics follow MongoDB where it has them:

- a list-valued field matches a comparison when *any* element matches (so ``$in``/``$eq`` find list members);
- ``$contains`` matches a list element equal to the value, or a substring of a string field;
- ``$icontains`` is ``$contains`` for a string operand with both sides case-folded (``str.casefold``, so
  Unicode-aware: "STRASSE" is found in "straße");
- comparisons are typed: a number never equals or orders against a string, ``True`` is not ``1``;
- a missing field fails every positive test and therefore passes ``$ne``, ``$nin`` and ``$not``.

Every value is bound as an SQL parameter; field names are checked and also bound (as JSON paths), so a
filter can never change the shape of the SQL it compiles to.

By default a metadata test compiles to a lookup in the catalog's typed value index (`INDEX_TABLE`: one row per
scalar value or scalar list element of each metadata field, see `mm_rag.store.catalog`), so SQLite answers it
from an index range instead of parsing every record's JSON. ``compile_filter(..., indexed=False)`` gives the
same condition evaluated on the JSON text (the scan the index replaces; kept for catalogs without the index
and as the oracle and baseline of the tests and benchmarks).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from typing import Any

from mm_rag.errors import FilterError
from mm_rag.records import RECORD_COLUMNS

Filter = Mapping[str, Any]

_FIELD_OPERATORS = frozenset(
    {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$contains", "$icontains", "$not"}
)
_LOGICAL_OPERATORS = frozenset({"$and", "$or", "$not"})
_ORDER_SQL = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_NUMBER_TYPES = "('integer','real')"
_FIELD_NAME = re.compile(r"[\w .:/@#+~-]+")
# Nesting of dicts and lists a filter may have: deeper ones would exhaust the compiler's (recursive) stack.
MAX_DEPTH = 64
# The SQL function `$icontains` folds case with; `register_sql_functions` installs it on a connection.
CASEFOLD_FUNCTION = "mm_rag_casefold"
# The catalog's typed value index: (field, kind, value, elem, rec). `kind` is one of the codes below, `elem`
# is 1 for an element of a list value and 0 for a scalar value; a field holding a list or an object also gets
# one PRESENT row, so `$exists` finds fields that have no scalar value to index.
INDEX_TABLE = "meta_values"
KIND_NULL, KIND_FALSE, KIND_TRUE, KIND_NUMBER, KIND_TEXT, KIND_PRESENT = range(6)


def register_sql_functions(connection: sqlite3.Connection) -> None:
    """Install on `connection` the SQL functions that compiled filters call (case folding for `$icontains`)."""
    connection.create_function(CASEFOLD_FUNCTION, 1, _casefold, deterministic=True)


def _casefold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def compile_filter(
    filter: Filter | None, table: str = "r", indexed: bool = True, source: str = "filter"
) -> tuple[str, list[Any]]:
    """Compile `filter` to ``(sql_condition, parameters)`` over the catalog table alias `table`.

    With `indexed` (the default) metadata tests look keys up in `INDEX_TABLE`; without, they read the JSON.
    Errors locate the mistake by a path from `source` (``filter.year.$gte``).

    Raises:
        FilterError: the filter is not a dict, uses an unknown operator, a bad key, or a value of the wrong type.
    """
    if filter is None:
        return "1", []
    _check_depth(filter)
    params: list[Any] = []
    compiler = IndexCompiler(table, params) if indexed else _Compiler(table, params)
    return compiler.document(filter, source), params


def check_filter(filter: Filter | None, source: str = "filter") -> None:
    """Raise the `FilterError` `filter` would raise when searched, its path starting at `source`.

    For code that combines a user's filter with its own conditions (``{"$and": [filter, …]}``) before
    searching: checked first, a mistake is reported where the user made it (``filter.year``), not inside a
    wrapper the user never wrote (``filter.$and[0].year``).
    """
    compile_filter(filter, source=source)


def parse_filter(text: str | None, source: str = "filter") -> dict[str, Any] | None:
    """A filter written as JSON text (a command-line option, a form field); None when `text` is empty.

    Raises:
        FilterError: naming `source`: not JSON (or nested too deeply to parse), or not a JSON object.
    """
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deeply for the parser
        raise FilterError(f"{source} is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise FilterError(f'{source} must be a JSON object such as {{"modality": "image"}}, got {text!r}')
    return value


def canonical_filter(filter: Filter | None) -> str:
    """A stable text form of a filter, usable as a cache key."""
    return json.dumps(filter, sort_keys=True, separators=(",", ":"), default=repr)


class _Compiler:
    def __init__(self, table: str, params: list[Any]) -> None:
        self.table = table
        self.params = params

    def document(self, node: Any, where: str) -> str:
        if not isinstance(node, Mapping):
            raise FilterError(f"{where}: a filter must be a dict, got {type(node).__name__}")
        if not node:
            raise FilterError(f"{where}: an empty filter dict; pass None for no filter")
        parts = []
        for key, value in node.items():
            if not isinstance(key, str):
                raise FilterError(f"{where}: keys must be strings, got {key!r}")
            if key.startswith("$"):
                parts.append(self.logical(key, value, where))
            else:
                parts.append(self.field(key, value, f"{where}.{key}"))
        return _join(parts, "AND")

    def logical(self, operator: str, value: Any, where: str) -> str:
        if operator not in _LOGICAL_OPERATORS:
            raise FilterError(
                f"{where}: unknown operator {operator!r} at the top level; expected one of {sorted(_LOGICAL_OPERATORS)}"
                " or a field name"
            )
        if operator == "$not":
            return f"NOT ({self.document(value, f'{where}.$not')})"
        if not isinstance(value, (list, tuple)) or not value:
            raise FilterError(f"{where}.{operator}: needs a non-empty list of filters, got {value!r}")
        joiner = "AND" if operator == "$and" else "OR"
        return _join([self.document(item, f"{where}.{operator}[{i}]") for i, item in enumerate(value)], joiner)

    def field(self, key: str, spec: Any, where: str) -> str:
        _check_key(key, where)
        if isinstance(spec, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in spec):
            if not spec:
                raise FilterError(f"{where}: an empty operator dict")
            parts = []
            for operator, operand in spec.items():
                if operator not in _FIELD_OPERATORS:
                    raise FilterError(
                        f"{where}: unknown operator {operator!r}; expected one of {sorted(_FIELD_OPERATORS)}"
                    )
                parts.append(self.operator(key, operator, operand, f"{where}.{operator}"))
            return _join(parts, "AND")
        return self.operator(key, "$eq", spec, where)

    def operator(self, key: str, operator: str, operand: Any, where: str) -> str:
        if operator == "$not":
            if isinstance(operand, Mapping):
                return f"NOT ({self.field(key, operand, where)})"
            return f"NOT ({self.operator(key, '$eq', operand, where)})"
        if operator == "$ne":
            return f"NOT ({self.operator(key, '$eq', operand, where)})"
        if operator == "$nin":
            return f"NOT ({self.operator(key, '$in', operand, where)})"
        if operator == "$exists":
            if not isinstance(operand, bool):
                raise FilterError(f"{where}: $exists takes true or false, got {operand!r}")
            present = self.presence(key)
            return present if operand else f"NOT ({present})"
        return self.positive(key, operator, operand, where)

    def positive(self, key: str, operator: str, operand: Any, where: str) -> str:
        """A condition true when any value of the field passes `operator` (the tests negations are built on)."""
        return self.any_value(key, lambda value, kind, index: self.test(operator, operand, value, kind, index, where))

    def presence(self, key: str) -> str:
        if key in RECORD_COLUMNS:
            return f"({self.table}.{key} IS NOT NULL)"
        self.params.append(_json_path(key))
        return f"(json_type({self.table}.metadata, ?) IS NOT NULL)"

    def any_value(self, key: str, test) -> str:
        """A condition true when the field's value, or any element of a list value, passes `test`."""
        if key in RECORD_COLUMNS:
            column = f"{self.table}.{key}"
            kind = f"(CASE WHEN {column} IS NULL THEN 'null' ELSE 'text' END)"
            return f"COALESCE(({test(column, kind, 'NULL')}), 0)"
        self.params.append(_json_path(key))
        # json_each yields the value itself for a scalar (key NULL) and one row per element for an array
        # (integer key); object members (text key) are not values of the field and are skipped.
        body = test("j.value", "j.type", "j.key")
        return f"EXISTS (SELECT 1 FROM json_each({self.table}.metadata, ?) AS j WHERE typeof(j.key) != 'text' AND ({body}))"

    def test(self, operator: str, operand: Any, value: str, kind: str, index: str, where: str) -> str:
        if operator == "$eq":
            return self.equals(operand, value, kind, where)
        if operator == "$in":
            if not isinstance(operand, (list, tuple, set, frozenset)):
                raise FilterError(f"{where}: $in/$nin take a list, got {type(operand).__name__}")
            if not operand:
                return "0"
            return _join([self.equals(item, value, kind, f"{where}[{i}]") for i, item in enumerate(operand)], "OR")
        if operator == "$contains":
            element = self.equals(operand, value, kind, where)
            if isinstance(operand, str):
                self.params.append(operand)
                substring = f"({index} IS NULL AND {kind} = 'text' AND instr({value}, ?) > 0)"
                return f"((typeof({index}) = 'integer' AND {element}) OR {substring})"
            return f"(typeof({index}) = 'integer' AND {element})"
        if operator == "$icontains":
            if not isinstance(operand, str):
                raise FilterError(f"{where}: $icontains takes a string, got {operand!r}")
            folded = f"{CASEFOLD_FUNCTION}({value})"
            self.params.extend([operand.casefold(), operand.casefold()])
            element = f"(typeof({index}) = 'integer' AND {folded} = ?)"
            substring = f"({index} IS NULL AND instr({folded}, ?) > 0)"
            return f"({kind} = 'text' AND ({element} OR {substring}))"
        symbol = _ORDER_SQL[operator]
        if isinstance(operand, bool) or not isinstance(operand, (int, float, str)):
            raise FilterError(f"{where}: {operator} compares numbers or strings, got {operand!r}")
        _check_integer_range(operand, where)
        self.params.append(operand)
        if isinstance(operand, str):
            return f"({kind} = 'text' AND {value} {symbol} ?)"
        return f"({kind} IN {_NUMBER_TYPES} AND {value} {symbol} ?)"

    def equals(self, operand: Any, value: str, kind: str, where: str) -> str:
        if operand is None:
            return f"({kind} = 'null')"
        if isinstance(operand, bool):
            return f"({kind} = '{'true' if operand else 'false'}')"
        if isinstance(operand, (int, float)):
            _check_integer_range(operand, where)
            self.params.append(operand)
            return f"({kind} IN {_NUMBER_TYPES} AND {value} = ?)"
        if isinstance(operand, str):
            self.params.append(operand)
            return f"({kind} = 'text' AND {value} = ?)"
        raise FilterError(
            f"{where}: cannot compare with {type(operand).__name__} {operand!r}; use a string, number, bool or None"
            + (" (use $in to match any of several values)" if isinstance(operand, (list, tuple)) else "")
        )


class IndexCompiler(_Compiler):
    """Metadata tests as key lookups in `INDEX_TABLE`; record columns and the logic as in `_Compiler`.

    `lookup` is the one place a lookup's SQL is written: `mm_rag.store.planner` overrides it to check one record.

    Each positive test becomes ``key IN (SELECT rec ... UNION ALL SELECT rec ...)``, one branch per kind of
    operand, each branch an equality or range on the index's leading columns (field, kind, value), so SQLite
    seeks instead of scanning. Negations stay ``NOT (...)`` of the positive test: keys outside the looked-up
    set, which is the scan a condition matching most records needs anyway.
    """

    def presence(self, key: str) -> str:
        if key in RECORD_COLUMNS:
            return super().presence(key)
        return self.lookup(key, ["1"], [[]])

    def positive(self, key: str, operator: str, operand: Any, where: str) -> str:
        if key in RECORD_COLUMNS:
            strings = [operand] if operator == "$eq" else operand if operator == "$in" else None
            if isinstance(strings, (list, tuple)) and strings and all(isinstance(s, str) for s in strings):
                # A plain comparison lets SQLite use the column's index (id, doc_id, content_hash); IS NOT NULL
                # keeps the condition two-valued under NOT, as COALESCE does in the general form.
                column = f"{self.table}.{key}"
                self.params.extend(strings)
                return f"({column} IN ({', '.join('?' * len(strings))}) AND {column} IS NOT NULL)"
            return super().positive(key, operator, operand, where)
        branches: list[str] = []
        values: list[list[Any]] = []

        def branch(sql: str, *params: Any) -> None:
            branches.append(sql)
            values.append(list(params))

        if operator == "$eq":
            branch(*self.kind_equals(operand, where))
        elif operator == "$in":
            if not isinstance(operand, (list, tuple, set, frozenset)):
                raise FilterError(f"{where}: $in/$nin take a list, got {type(operand).__name__}")
            by_kind: dict[int, list[Any]] = {}
            for i, item in enumerate(operand):
                kind, params = self.kind_of(item, f"{where}[{i}]")
                by_kind.setdefault(kind, []).extend(params)
            for kind, params in by_kind.items():  # one seek per value: `value IN (...)` on the index
                placeholders = f" AND value IN ({', '.join('?' * len(params))})" if params else ""
                branch(f"kind = {kind}{placeholders}", *params)
        elif operator == "$contains":
            sql, *params = self.kind_equals(operand, where)
            branch(f"{sql} AND elem = 1", *params)
            if isinstance(operand, str):
                branch(f"kind = {KIND_TEXT} AND elem = 0 AND instr(value, ?) > 0", operand)
        elif operator == "$icontains":
            if not isinstance(operand, str):
                raise FilterError(f"{where}: $icontains takes a string, got {operand!r}")
            folded = f"{CASEFOLD_FUNCTION}(value)"
            branch(
                f"kind = {KIND_TEXT} AND ((elem = 1 AND {folded} = ?) OR (elem = 0 AND instr({folded}, ?) > 0))",
                operand.casefold(),
                operand.casefold(),
            )
        else:
            if isinstance(operand, bool) or not isinstance(operand, (int, float, str)):
                raise FilterError(f"{where}: {operator} compares numbers or strings, got {operand!r}")
            _check_integer_range(operand, where)
            kind = KIND_TEXT if isinstance(operand, str) else KIND_NUMBER
            branch(f"kind = {kind} AND value {_ORDER_SQL[operator]} ?", operand)
        return self.lookup(key, branches, values) if branches else "0"

    def kind_equals(self, operand: Any, where: str) -> tuple[Any, ...]:
        """``(condition, *params)`` on (kind, value) for index rows equal to `operand` (typed, as `equals`)."""
        kind, params = self.kind_of(operand, where)
        return (f"kind = {kind} AND value = ?", *params) if params else (f"kind = {kind}",)

    def kind_of(self, operand: Any, where: str) -> tuple[int, list[Any]]:
        """The index kind of `operand`, and the value to match within it (none for null and the booleans)."""
        if operand is None:
            return KIND_NULL, []
        if isinstance(operand, bool):
            return (KIND_TRUE if operand else KIND_FALSE), []
        if isinstance(operand, (int, float)):
            _check_integer_range(operand, where)
            return KIND_NUMBER, [operand]
        if isinstance(operand, str):
            return KIND_TEXT, [operand]
        self.equals(operand, "", "", where)  # raises the error naming what cannot be compared
        raise AssertionError("unreachable")

    def lookup(self, key: str, branches: list[str], values: list[list[Any]]) -> str:
        selects = []
        for sql, params in zip(branches, values):
            selects.append(f"SELECT rec FROM {INDEX_TABLE} WHERE field = ? AND {sql}")
            self.params.append(key)
            self.params.extend(params)
        return f"({self.table}.key IN ({' UNION ALL '.join(selects)}))"


def _check_depth(filter: Any) -> None:
    """Refuse a filter nested more than `MAX_DEPTH` levels (checked without recursion)."""
    pending = [(filter, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise FilterError(f"filter: nested more than {MAX_DEPTH} levels deep")
        children = node.values() if isinstance(node, Mapping) else node if isinstance(node, (list, tuple)) else ()
        pending.extend((child, depth + 1) for child in children)


def _check_key(key: str, where: str) -> None:
    # Keys are bound as parameters, so no key could change the SQL; the whitelist still refuses what only an
    # injection attempt or a mistake would contain (quotes, ';', '=', brackets…), with a clear error.
    if not _FIELD_NAME.fullmatch(key):
        raise FilterError(f"{where}: invalid field name {key!r} (letters, digits, spaces and _ . : / @ # + ~ - only)")


def _check_integer_range(operand: Any, where: str) -> None:
    # SQLite integers are 64-bit; binding a larger Python int raises OverflowError instead of FilterError.
    if isinstance(operand, int) and not -(2**63) <= operand < 2**63:
        raise FilterError(f"{where}: integer {operand} is outside the 64-bit range filters support")


def _json_path(key: str) -> str:
    return f'$."{key}"'


def _join(parts: list[str], joiner: str) -> str:
    return parts[0] if len(parts) == 1 else "(" + f" {joiner} ".join(parts) + ")"
