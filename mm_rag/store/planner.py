"""Filters planned by cost: the selective terms of a conjunction find the candidates, the broad ones check them.

`mm_rag.filters.compile_filter` turns every metadata term into a lookup in the catalog's value index
(``key IN (SELECT rec ...)``). For one term that is the best plan; for ``{"user": 200, "year": {"$gte": 2000}}``
SQLite materialises *both* lookups, and the broad one (every record since 2000) costs as much as a scan. The
planner estimates each term of the filter's top-level conjunction with a capped count on the same index (a
count stops at its cap, so estimating costs no more than the smallest term's matches), then:

- the terms within `DRIVER_RATIO` of the smallest stay lookups: they drive, and SQLite intersects them;
- a broader lookup becomes a per-record check (``EXISTS`` on the index's ``rec`` column): a few index rows
  read for each candidate instead of every match read and materialised;
- a term the value index cannot answer (a negation, a record column, a JSON scan) is a check as before.

An ``$or`` whose branches are all lookups counts as one term (their union). The plan changes how the matching
keys are found, never which: `compile_filter`'s condition is the reference, and the tests compare the two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mm_rag.filters import INDEX_TABLE, Filter, IndexCompiler, compile_filter
from mm_rag.records import RECORD_COLUMNS

# A term is looked up (drives) while its estimate is at most this many times the smallest term's; a broader
# one is checked per candidate. Measured on 100k records: a check reads one record's index rows through one
# seek, ~0.85 us per candidate; a lookup materialises its matches, ~0.5 us per match: checking pays once a term
# matches about twice as many records as the candidates.
DRIVER_RATIO = 2
FIRST_CAP = 1024  # the first estimates count at most this many matches each
CAP_GROWTH = 4  # while every term reaches the cap, the next counts go this many times further

_LOOKUP_OPERATORS = frozenset({"$eq", "$in", "$gt", "$gte", "$lt", "$lte", "$contains", "$icontains"})

Counter = Callable[[str, list[Any], int], int]  # (select, parameters, cap) -> min(rows, cap)


def plan_filter(filter: Filter | None, count: Counter) -> tuple[str, list[Any]]:
    """``(select, parameters)``: a ``SELECT`` of the keys (column ``key``, each once, in no order) of the records
    ``compile_filter(filter)`` matches, planned by cost.

    `count` runs a capped count of a ``SELECT`` on the value index (`mm_rag.store.catalog.Catalog.count_rows`).
    When every term is a lookup, one driving lookup of a single test is the ``FROM`` itself: its index rows give
    the keys without visiting the records table.

    Raises:
        FilterError: as `compile_filter` (which checks the filter first, so errors name the user's own path).
    """
    reference = compile_filter(filter)
    terms = _conjuncts(filter) if filter is not None else []
    lookups = [term for term in terms if _is_lookup(term)]
    broad: list[dict[str, Any]] = []  # lookups checked per candidate instead
    driver = lookups[0] if lookups else None
    if len(lookups) > 1:
        estimates = _estimates(lookups, count)
        smallest = min(estimates)
        broad = [term for term, estimate in zip(lookups, estimates) if estimate > DRIVER_RATIO * smallest]
        driver = lookups[estimates.index(smallest)]
    # No record column or negation to read: the driver's index rows are the keys, the records table unvisited.
    source = _single_lookup(driver) if driver is not None and len(lookups) == len(terms) else None
    if source is None and not broad:
        return f"SELECT r.key FROM records AS r WHERE {reference[0]}", reference[1]
    parts: list[str] = []
    params: list[Any] = [] if source is None else list(source[1])
    for term in terms:
        if source is not None and term is driver:
            continue
        sql, term_params = _per_record(term) if any(term is b for b in broad) else compile_filter(term)
        parts.append(sql)
        params.extend(term_params)
    where = f" WHERE {' AND '.join(parts)}" if parts else ""
    if source is None:
        return f"SELECT r.key FROM records AS r{where}", params
    return f"SELECT DISTINCT r.key FROM ({source[0]}) AS r{where}", params


def check_each(filter: Filter) -> tuple[str, list[Any]]:
    """``(condition, parameters)`` on ``r`` that tests one record at a time: every lookup is a seek into that
    record's own rows of the value index, so checking a few candidate keys never reads a term's other matches.

    Raises:
        FilterError: as `compile_filter`.
    """
    compile_filter(filter)
    return _per_record(filter)


def keys_from_index(filter: Filter) -> bool:
    """Whether `plan_filter` reads the keys straight from the value index: one test of one field, whose index
    rows are the keys (no other term to check, the records table unvisited: the cheapest keys to collect)."""
    terms = _conjuncts(filter)
    return len(terms) == 1 and _is_lookup(terms[0]) and _single_lookup(terms[0]) is not None


def _single_lookup(term: dict[str, Any]) -> tuple[str, list[Any]] | None:
    """The keys of a term that is one test of one field, as a ``SELECT`` of its index rows; else None."""
    ((key, spec),) = term.items()
    if key.startswith("$") or (isinstance(spec, Mapping) and len(spec) != 1):
        return None
    recorder = _LookupRecorder("r", [])
    recorder.document(term, "filter")
    if len(recorder.lookups) != 1:
        return None
    field, branches, values = recorder.lookups[0]
    selects = [f"SELECT rec AS key FROM {INDEX_TABLE} WHERE field = ? AND {sql}" for sql in branches]
    return " UNION ALL ".join(selects), [p for params in values for p in (field, *params)]


def _estimates(terms: list[dict[str, Any]], count: Counter) -> list[int]:
    """Each term's matches, exact up to `DRIVER_RATIO` times the smallest (a larger count is only "more")."""
    cap = FIRST_CAP
    estimates = [_estimate(term, count, cap) for term in terms]
    while min(estimates) >= cap:  # every term is broad: raise the cap until one is counted
        cap *= CAP_GROWTH
        estimates = [_estimate(term, count, cap) for term in terms]
    limit = DRIVER_RATIO * min(estimates) + 1
    if limit > cap:  # the counts that stopped at the cap may still be within the drivers' ratio
        estimates = [_estimate(t, count, limit) if e >= cap else e for t, e in zip(terms, estimates)]
    return estimates


def _estimate(term: Mapping[str, Any], count: Counter, cap: int) -> int:
    """Index rows matching `term`, at most `cap`: the least of its tests (and), the sum of its branches (or)."""
    found = []
    for key, spec in term.items():
        if key == "$and":
            found.append(min(_estimate(item, count, cap) for item in spec))
        elif key == "$or":
            found.append(min(cap, sum(_estimate(item, count, cap) for item in spec)))
        else:
            recorder = _LookupRecorder("r", [])
            recorder.document({key: spec}, "filter")
            found.extend(count(select, params, cap) for select, params in recorder.selects)
            if not recorder.selects:  # nothing to look up (``$in: []``): the test matches nothing
                found.append(0)
    return min(found)


def _conjuncts(filter: Filter) -> list[dict[str, Any]]:
    """The terms of the top-level conjunction, one key each (nested ``$and`` lists flattened)."""
    terms: list[dict[str, Any]] = []
    for key, value in filter.items():
        if key == "$and" and isinstance(value, list):
            for item in value:
                terms.extend(_conjuncts(item))
        else:
            terms.append({key: value})
    return terms


def _is_lookup(term: Any) -> bool:
    """Whether every test of `term` is a positive metadata test the value index answers (joined by and/or)."""
    if not isinstance(term, Mapping) or not term:
        return False
    for key, spec in term.items():
        if key in ("$and", "$or"):
            if not (isinstance(spec, list) and spec and all(_is_lookup(item) for item in spec)):
                return False
        elif key.startswith("$") or key in RECORD_COLUMNS:
            return False
        elif isinstance(spec, Mapping):
            for operator, operand in spec.items():
                if operator not in _LOOKUP_OPERATORS and not (operator == "$exists" and operand is True):
                    return False
        elif not (spec is None or isinstance(spec, (bool, int, float, str))):
            return False
    return True


def _per_record(term: Filter) -> tuple[str, list[Any]]:
    params: list[Any] = []
    return _PerRecordCompiler("r", params).document(term, "filter"), params


class _LookupRecorder(IndexCompiler):
    """Collects each lookup of a term: (field, branches, their parameters), and as a ``SELECT`` of its index
    rows (for a capped count)."""

    def __init__(self, table: str, params: list[Any]) -> None:
        super().__init__(table, params)
        self.lookups: list[tuple[str, list[str], list[list[Any]]]] = []
        self.selects: list[tuple[str, list[Any]]] = []

    def lookup(self, key: str, branches: list[str], values: list[list[Any]]) -> str:
        self.lookups.append((key, branches, values))
        selects = [f"SELECT 1 FROM {INDEX_TABLE} WHERE field = ? AND {sql}" for sql in branches]
        self.selects.append((" UNION ALL ".join(selects), [p for params in values for p in (key, *params)]))
        return "1"


class _PerRecordCompiler(IndexCompiler):
    """Lookups as checks of one record: its rows in the value index, found through the ``rec`` index."""

    def lookup(self, key: str, branches: list[str], values: list[list[Any]]) -> str:
        self.params.append(key)
        for params in values:
            self.params.extend(params)
        tests = " OR ".join(f"({sql})" for sql in branches)
        return (
            f"EXISTS (SELECT 1 FROM {INDEX_TABLE} INDEXED BY {INDEX_TABLE}_rec"
            f" WHERE rec = {self.table}.key AND field = ? AND +({tests}))"
        )
