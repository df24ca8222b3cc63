"""The shard plan: which files make which shard, saved as ``plan.json`` in the shard root.

The first run splits the sorted files into shards of ``files_per_shard`` (``shard-000000``, ``shard-000001``…)
and saves the plan before any shard is written; every later run reuses it, so a shard always holds the same
files and a finished one (with ``_SUCCESS``) is skipped. Files that are new to a later run are appended as new
shards; a finished shard whose files changed since they were planned (another size or mtime) is deleted and
redone with the same name. The plan is rewritten atomically, after the stale shards are deleted, so a run
killed at any moment leaves a plan and shards from which the next run carries on correctly. One run at a time
per shard root: a run deletes the unfinished shard directories it finds.

``plan.json``::

    {"format": "mm-rag-shard-plan", "format_version": 1,
     "shards": [{"name": "shard-000000", "files": [[uri, size, mtime_ns], …]}, …]}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mm_rag.distributed.sources import Source
from mm_rag.errors import StoreFormatError
from mm_rag.store.durable import write_atomically

PLAN = "plan.json"
FORMAT = "mm-rag-shard-plan"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PlannedShard:
    """One shard of the plan: its name and its files, in order."""

    name: str
    files: tuple[Source, ...]


def load_plan(root: Path) -> list[PlannedShard]:
    """The saved plan of `root` (empty when none was saved).

    Raises:
        StoreFormatError: ``plan.json`` is unreadable or of another format or version.
    """
    path = root / PLAN
    if not path.is_file():
        return []
    try:
        saved = json.loads(path.read_text())
        if saved.get("format") != FORMAT or saved.get("format_version") != FORMAT_VERSION:
            raise StoreFormatError(f"{path} is not a version-{FORMAT_VERSION} mm-rag shard plan")
        return [
            PlannedShard(
                shard["name"], tuple(Source(uri, int(size), int(mtime)) for uri, size, mtime in shard["files"])
            )
            for shard in saved["shards"]
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise StoreFormatError(f"{path} is unreadable: {error}") from error


def save_plan(root: Path, plan: Sequence[PlannedShard]) -> None:
    """Write ``plan.json`` atomically."""
    shards = [{"name": shard.name, "files": [[s.uri, s.size, s.mtime_ns] for s in shard.files]} for shard in plan]
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "shards": shards}
    root.mkdir(parents=True, exist_ok=True)
    write_atomically(root / PLAN, (json.dumps(document, indent=1) + "\n").encode())


def extend_plan(
    plan: Sequence[PlannedShard], sources: Sequence[Source], files_per_shard: int
) -> tuple[list[PlannedShard], list[str]]:
    """The plan for `sources`: `plan` with stats refreshed and new files appended; and the shards whose files changed.

    A planned file that is no longer listed keeps its shard (the shard is what was ingested); a changed file
    (size or mtime) stays in its shard, which is returned as changed so that the caller redoes it.
    """
    current = {source.uri: source for source in sources}
    refreshed: list[PlannedShard] = []
    changed: list[str] = []
    for shard in plan:
        files = tuple(current.get(member.uri, member) for member in shard.files)
        if files != shard.files:
            changed.append(shard.name)
        refreshed.append(PlannedShard(shard.name, files))
    planned = {member.uri for shard in plan for member in shard.files}
    new = [source for source in sources if source.uri not in planned]
    number = max((int(shard.name.rsplit("-", 1)[-1]) for shard in plan), default=-1) + 1
    for start in range(0, len(new), files_per_shard):
        refreshed.append(PlannedShard(f"shard-{number:06d}", tuple(new[start : start + files_per_shard])))
        number += 1
    return refreshed, changed
