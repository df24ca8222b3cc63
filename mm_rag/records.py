"""Plain data types shared by every layer: what a retrievable item is, and what a search returns."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson

Modality = Literal["text", "image", "audio", "video"]
MODALITIES: frozenset[str] = frozenset(get_args(Modality))

# The optional text fields of a record: a string or None each.
OPTIONAL_TEXT_FIELDS: tuple[str, ...] = ("text", "uri", "doc_id", "content_hash")
# Record fields that filters address directly; every other filter key is looked up in `metadata`.
RECORD_COLUMNS: frozenset[str] = frozenset({"id", "modality", *OPTIONAL_TEXT_FIELDS})


@dataclass(frozen=True, slots=True)
class Record:
    """One retrievable item: a text chunk, an image, a transcript window, a video keyframe.

    Attributes:
        id: Stable, caller-chosen identifier (see `make_id` for a derived one). Re-adding an id replaces it.
        modality: What the item is: ``"text"``, ``"image"``, ``"audio"`` or ``"video"``.
        text: The chunk text, caption or transcript, if any.
        uri: Where the media lives (path or URL), if any.
        metadata: JSON-serialisable user fields, e.g. ``start``/``end`` seconds of a transcript window.
        doc_id: The source document this item came from, so a whole document can be deleted or replaced.
        content_hash: Hash of the content, used to skip re-embedding unchanged items.
    """

    id: str
    modality: Modality
    text: str | None = None
    uri: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    doc_id: str | None = None
    content_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """A record found by a search.

    Attributes:
        record: The record found.
        space: The embedding space that found it, or `LEXICAL` for the keyword (BM25) index.
        score: Higher is better, comparable within one space: cosine similarity (``cosine``), inner product
            (``ip``) or the negated Euclidean distance (``l2``); for `LEXICAL`, the BM25 score (within one query).
        rank: 0-based position in the result list.
    """

    record: Record
    space: str
    score: float
    rank: int


# The name under which keyword (BM25) results appear beside the embedding spaces; no space may take it.
LEXICAL = "lexical"


def make_id(content: bytes | str, locator: str = "") -> str:
    """Derive a stable record id from content and where it sits (e.g. ``"page=3"`` or ``"t=12.5"``)."""
    data = content.encode() if isinstance(content, str) else content
    return hashlib.sha256(data + b"\0" + locator.encode()).hexdigest()[:32]


_STRICT_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode
# Types orjson would write itself but json refuses: sent to `_NOT_JSON` instead, so both accept the same values.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def metadata_json(metadata: dict[str, Any]) -> str:
    """The stored text of a record's metadata: compact JSON, NaN and infinities refused.

    orjson writes it, 6-8x faster than `json`'s encoder called per record (benchmarks/README.md). It writes NaN
    and infinities as null: a text holding ``null`` has its numbers checked. `json` writes what orjson cannot
    (integers beyond 64 bits, nesting past 254 levels).

    Raises:
        TypeError: a value that is not JSON (named by `encode_record`).
        ValueError: NaN or an infinity.
    """
    try:
        text = orjson.dumps(metadata, default=_NOT_JSON, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError, also raised for what `json` can write
        return _STRICT_JSON(metadata)
    if "null" in text and not _finite(metadata):
        raise ValueError("Out of range float values are not JSON compliant")
    return text


def _finite(value: Any) -> bool:
    """Whether every float inside `value` is finite (a walk of its dicts and lists: cheaper than encoding)."""
    kind = type(value)
    if kind is dict:
        return all(map(_finite, value.values()))
    if kind is list or kind is tuple:
        return all(map(_finite, value))
    return math.isfinite(value) if isinstance(value, float) else True


def encode_record(record: Record) -> str:
    """Check a record can be stored and return its metadata as JSON.

    Raises:
        InvalidInputError: naming the record and the problem (bad id, modality, field type, metadata value).
    """
    from mm_rag.errors import InvalidInputError

    if not isinstance(record, Record):
        raise InvalidInputError(f"expected a Record, got {type(record).__name__}")
    if not isinstance(record.id, str) or not record.id:
        raise InvalidInputError(f"record id must be a non-empty string, got {record.id!r}")
    if not isinstance(record.modality, str) or record.modality not in MODALITIES:  # a list is unhashable
        raise InvalidInputError(
            f"record {record.id!r}: unknown modality {record.modality!r}; expected one of {sorted(MODALITIES)}"
        )
    for name in OPTIONAL_TEXT_FIELDS:
        value = getattr(record, name)
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"record {record.id!r}: {name} must be a string or None, got {type(value).__name__}")
    if not isinstance(record.metadata, dict):
        raise InvalidInputError(f"record {record.id!r}: metadata must be a dict, got {type(record.metadata).__name__}")
    try:
        if not all(type(key) is str for key in record.metadata):
            raise TypeError
        return metadata_json(record.metadata)
    except (TypeError, ValueError) as error:  # find the offending value to name it
        try:
            _check_json(record.metadata, f"record {record.id!r}: metadata")
        except RecursionError:
            raise InvalidInputError(f"record {record.id!r}: metadata contains itself (circular reference)") from error
        raise InvalidInputError(f"record {record.id!r}: metadata is not JSON-serialisable: {error}") from error


_OPTIONAL_TEXT_TYPES = frozenset({str, type(None)})


def encode_records(records: Sequence[Record]) -> list[str]:
    """`encode_record` for a batch: the same checks and the same JSON, the checks made column by column.

    Checking 100k records one at a time in Python cost 0.35 s of a 1.3 s `store.add`; the type sets of each
    column are built at C speed instead. A batch the sets do not clear (a subclass, a bad value) goes through
    `encode_record` record by record, which names the first bad record.

    Raises:
        InvalidInputError: as `encode_record`, for the first bad record.
    """
    if _plainly_valid(records):
        try:
            return list(map(metadata_json, [record.metadata for record in records]))
        except (TypeError, ValueError, RecursionError):
            pass  # an unencodable value: encode_record below names it
    return [encode_record(record) for record in records]


_NOT_JSON = json.JSONEncoder().default  # raises TypeError naming the type


def _plainly_valid(records: Sequence[Record]) -> bool:
    """Whether every record passes `encode_record`'s checks of types and values (metadata JSON aside).

    Exact types only: anything unusual (a subclass, an unhashable modality) answers False, never a wrong True.
    """
    try:
        if set(map(type, records)) != {Record}:
            return False
        ids = [record.id for record in records]
        if set(map(type, ids)) != {str} or not all(ids):
            return False
        if not {record.modality for record in records} <= MODALITIES:
            return False
        for name in OPTIONAL_TEXT_FIELDS:
            if not set(map(type, [getattr(record, name) for record in records])) <= _OPTIONAL_TEXT_TYPES:
                return False
        metadata = [record.metadata for record in records]
        if set(map(type, metadata)) != {dict}:
            return False
        # The encoder would turn int, float, bool and None keys into strings without a word.
        return set(map(type, itertools.chain.from_iterable(metadata))) <= {str}
    except TypeError:  # e.g. an unhashable modality
        return False


def _check_json(value: Any, where: str) -> None:
    from mm_rag.errors import InvalidInputError

    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"{where}: keys must be strings, got {key!r}")
            _check_json(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{where}: {value!r} is not a finite number")
    elif value is not None and not isinstance(value, (str, int, bool)):
        raise InvalidInputError(f"{where}: {type(value).__name__} is not JSON-serialisable")
