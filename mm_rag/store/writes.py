"""Changes to a store's records and vectors: what a change must pass before anything changes (records, vectors,
a space's configuration, keyword settings), and the changes themselves, made on a store's `Generations`
inside its ``writing()`` block."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mm_rag.errors import InvalidInputError, UnknownSpaceError
from mm_rag.records import Record, encode_records
from mm_rag.store.committed import Generations
from mm_rag.store.config import SpaceConfig, describe_model, same_model
from mm_rag.store.lexical import STEMMINGS, Stemming
from mm_rag.store.overlap import both
from mm_rag.store.space import Space
from mm_rag.store.stopwords import STOP_WORDS

# A space's configuration, and vectors checked against it with their squared norms (see `Space.check`).
Checked = tuple[SpaceConfig, np.ndarray, np.ndarray]


def lookup(spaces: Mapping[str, Space], name: str) -> Space:
    try:
        return spaces[name]
    except KeyError:
        raise UnknownSpaceError(f"unknown space {name!r}; this store has {sorted(spaces)}") from None


def check_vectors(spaces: Mapping[str, Space], vectors: Mapping[str, Any], count: int) -> dict[str, Checked]:
    """Each space's vectors checked (not yet normalised), with the configuration they were checked against."""
    checked = {}
    for name, array in vectors.items():
        space = lookup(spaces, name)
        checked[name] = (space.config, *space.check(array, count, "upsert"))
    return checked


def check_records(records: list[Record]) -> tuple[list[str], list[str]]:
    """The records' metadata as JSON and their ids, once every record is storable and no id repeats."""
    metadata = encode_records(records)
    ids = [record.id for record in records]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicate = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InvalidInputError(f"upsert: id {duplicate!r} appears more than once in one batch")
    return metadata, ids


def updated_config(existing: SpaceConfig, wanted: SpaceConfig) -> SpaceConfig | None:
    """The configuration ``create_space(wanted)`` gives the existing space: None when it stays as it is.

    A space that records no model adopts the wanted one; one that records the same model (`same_model`) at
    another place, or without its fingerprint yet, learns where it was last loaded from and what it is.

    Raises:
        InvalidInputError: `wanted` is another configuration, or another model (whose vectors would silently
            mix with the space's own).
    """
    if dataclasses.replace(existing, model=None) != dataclasses.replace(wanted, model=None):
        raise InvalidInputError(f"space {existing.name!r} exists as {existing}, not {wanted}")
    recorded, model = existing.model, wanted.model
    if model is None or model == recorded:
        return None
    if recorded is not None and not same_model(recorded, model):
        raise InvalidInputError(
            f"space {existing.name!r} holds vectors of the model {describe_model(recorded)}, not of"
            f" {describe_model(model)}: use that model, or another space"
        )
    fuller = recorded is None or bool(model.get("fingerprint") or not recorded.get("fingerprint"))
    return wanted if fuller else None


def check_keyword_settings(stemming: Stemming | None, languages: Sequence[str] | None) -> list[str] | None:
    """`languages` as a list (None stays None) once `stemming` and every language are known."""
    if stemming is not None and stemming not in STEMMINGS:
        raise InvalidInputError(f"configure_keywords: unknown stemming {stemming!r}; expected one of {list(STEMMINGS)}")
    if languages is None:
        return None
    languages = [languages] if isinstance(languages, str) else list(languages)
    unknown = sorted(set(languages) - set(STOP_WORDS))
    if unknown:
        raise InvalidInputError(
            f"configure_keywords: no stop words for language(s) {unknown}; known: {sorted(STOP_WORDS)}"
        )
    return languages


def upsert(
    generations: Generations,
    records: list[Record],
    metadata: list[str],
    ids: list[str],
    checked: dict[str, Checked],
    vectors: Mapping[str, Any],
    threaded: bool,
) -> None:
    """Store checked records (replacing those with the same ids) and their vectors; with `threaded`, the
    vectors go in on a second thread while SQLite takes the rows. A failure on either side changes nothing."""
    catalog, spaces, count = generations.catalog, generations.spaces, len(records)
    for name, (config, *_) in checked.items():
        space = lookup(spaces, name)
        if space.config != config:  # changed since (another process recreated it): check against it
            checked[name] = (space.config, *space.check(vectors[name], count, "upsert"))
    with generations.catalog_writes():
        existing = catalog.keys_of_ids(ids)
        if existing:
            remove(generations, np.fromiter(existing.values(), dtype=np.int64, count=len(existing)))
        keys = generations.take_keys(count)  # spent even if the insert fails: a space may have seen them
        try:
            with catalog.savepoint():  # a failure on either side takes the rows out again
                both(lambda: catalog.insert(keys, records, metadata), lambda: _add(spaces, keys, checked), threaded)
        except BaseException:
            for name in checked:
                spaces[name].delete(keys)  # keys a space never took are ignored
            raise
    for name in checked:
        generations.changed(name)
    generations.changed(None)


def insert_new(generations: Generations, records: Sequence[Record], metadata: list[str]) -> np.ndarray:
    """Insert records whose ids are new, without vectors (`MultimodalStore.bulk_insert`); returns their keys."""
    keys = generations.take_keys(len(records))
    try:
        with generations.catalog_writes():
            generations.catalog.insert(keys, records, metadata)
    except sqlite3.IntegrityError as error:
        raise InvalidInputError(f"bulk load: a record id is already in the store: {error}") from error
    generations.changed(None)
    return keys


def _add(spaces: Mapping[str, Space], keys: np.ndarray, checked: dict[str, Checked]) -> None:
    """Normalise checked vectors and add them; on the second thread of a large add, where the copy's page
    faults (at times a 0.5 s wait for the kernel to compact memory into the huge pages NumPy asks for)
    overlap SQLite's work instead of delaying it."""
    for name, (_, array, squares) in checked.items():
        space = spaces[name]
        space.add(keys, space.normalised(array, squares))


def remove(generations: Generations, keys: np.ndarray) -> None:
    """Delete the records of `keys` and their vectors in every space (inside ``catalog_writes()``)."""
    if not len(keys):
        return
    keys = np.sort(keys)
    generations.catalog.delete_keys(keys)
    for name, space in generations.spaces.items():
        if len(space.contains(keys)):
            space.delete(keys)
            generations.changed(name)
    generations.changed(None)
