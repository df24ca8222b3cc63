"""Merging a space's segments after a save, outside the store's write lock.

A save appends a segment (`mm_rag.store.segments`). When a space then holds more than `segments.MAX_SEGMENTS`,
`merge_segments` (which `MultimodalStore.save` runs once its commit stands and the write lock is let go) writes
the smallest adjacent pair as one segment, without its deleted rows, from the committed files and holding no
lock: other processes write meanwhile and searches never wait. It then takes the write lock for a moment and
commits the merged files as a generation of their own, provided the space still holds that pair and this handle
has no unsaved changes; otherwise the merge is dropped (its files go with the next commit's tidying up) and the
next save tries again. A segment's rows are rewritten O(log n) times in all.
"""

from __future__ import annotations

import secrets
import warnings

import numpy as np

from mm_rag.errors import StoreLockedError, StoreWriteError
from mm_rag.store import segments
from mm_rag.store.committed import Generations
from mm_rag.store.manifest import SPACES_DIR, SpaceEntry, SpaceFiles

# How long a merge waits for another process's write before leaving the merge to the next save.
MERGE_LOCK_TIMEOUT = 1.0


def merge_segments(generations: Generations) -> int:
    """Merge segments while a space holds more than `segments.MAX_SEGMENTS`; returns the merges committed.

    A merge that fails (a full disk, say) leaves the last commit as it is and says so in a warning: the save
    before it stands, and the next one tries again.
    """
    merged = 0
    directory = generations.path / SPACES_DIR
    while (plan := _next_merge(generations)) is not None:
        name, files, at = plan
        stem = f"{name}.{generations.manifest['generation']}.{secrets.token_hex(4)}"  # no other writer's name
        try:
            new, dead = segments.write_merge(directory, files, at, stem)
            committed = _commit(generations, name, files, new, dead)
        except (OSError, ValueError, StoreWriteError) as error:
            committed = False
            warnings.warn(
                f"store {generations.path}: merging segments of space {name!r} failed: {error}; the last commit"
                f" (generation {generations.manifest['generation']}) is intact, and the next save merges again",
                stacklevel=3,
            )
        if not committed:
            for file in directory.glob(f"{stem}.*"):
                file.unlink(missing_ok=True)
            return merged
        merged += 1
    return merged


def _commit(generations: Generations, name: str, old: SpaceFiles, new: SpaceFiles, dead: np.ndarray) -> bool:
    """Commit `new` files of space `name` (`old` merged: the same live vectors in fewer files) as a generation
    of its own; False when the space's files are no longer `old`, `new` ones went missing, the handle has
    unsaved changes, or another process keeps the write lock past `MERGE_LOCK_TIMEOUT`.

    Raises:
        StoreWriteError: the commit failed (the last commit is intact).
    """
    try:
        with generations.exclusive(MERGE_LOCK_TIMEOUT):
            space = generations.spaces.get(name)
            directory = generations.path / SPACES_DIR
            if generations.unsaved or space is None or space.files != old:
                return False
            if not all((directory / file).is_file() for file in new.names()):
                return False  # removed by another process's tidying up meanwhile
            entries = dict(generations.manifest["spaces"])
            entries[name] = SpaceEntry.describe(space.config, space.spec, directory, new, len(space)).to_json()
            with generations.catalog_writes():
                generations.catalog.begin()
            try:
                generations.publish(generations.manifest["generation"] + 1, entries, {name: (new, dead)})
            except BaseException:
                generations.catalog.rollback()  # the write lock goes with this block: so must SQLite's
                raise
            return True
    except StoreLockedError:
        return False


def _next_merge(generations: Generations) -> tuple[str, SpaceFiles, int] | None:
    """(space, its committed files, where the pair starts) of the next merge the policy asks for, if any."""
    with generations.lock.reading():
        for name, space in generations.spaces.items():
            files = space.files
            at = None if files is None else segments.merge_plan(files)
            if at is not None:
                return name, files, at  # type: ignore[return-value]
    return None
