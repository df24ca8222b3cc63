"""What a store's directory commits: the manifest (format, generation, spaces and their files) and the files.

The catalog's copy of the manifest is the commit point; ``mmrag.json`` is a human-readable copy written after
each commit. Space files carry the generation that wrote them in their names and are never modified, so a
process that still reads an older generation (memory-mapped, say) is never disturbed by a newer one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from mm_rag.errors import StoreFormatError
from mm_rag.store.durable import write_atomically
from mm_rag.store.space import Space, SpaceConfig

FORMAT = "mm-rag-store"
FORMAT_VERSION = 1
MANIFEST = "mmrag.json"
CATALOG = "catalog.sqlite"
SPACES_DIR = "spaces"
WRITE_LOCK = "write.lock"
# Index files at least this large open memory-mapped unless the caller says otherwise.
MMAP_THRESHOLD = 256 * 2**20
# A handle catches up with another process's commit by applying the change to a space it holds in memory
# while the change is at most this share of the space; a larger one reopens the space from its new files.
DELTA_SHARE = 0.25


def empty_manifest() -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "generation": 0, "next_key": 0, "spaces": {}}


def new_manifest(generation: int, next_key: int, spaces: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generation": generation,
        "next_key": next_key,
        "spaces": spaces,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _library_versions(),
    }


def space_entry(config: SpaceConfig, spec: str | None, directory: Path, files: list[str], vectors: int) -> dict[str, Any]:
    """A space's manifest entry: its configuration and the files (with their sizes) that hold it."""
    return {
        "dim": config.dim,
        "metric": config.metric,
        "index": config.index,
        "memory_budget": config.memory_budget,
        "model": config.model,
        "built": spec,
        "files": files,
        "sizes": [(directory / file).stat().st_size for file in files],
        "vectors": vectors,
    }


def check_format(manifest: Any, where: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreFormatError(f"{where} is not an mm-rag store manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise StoreFormatError(
            f"{where} has store format version {version!r}; this mm-rag reads version {FORMAT_VERSION}"
            + (" (upgrade mm-rag)" if isinstance(version, int) and version > FORMAT_VERSION else "")
        )


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise StoreFormatError(f"cannot read {path}: {error}") from error


def write_manifest_file(store: Path, manifest: dict[str, Any]) -> None:
    """The human-readable copy of the manifest (the catalog's copy is the authoritative one)."""
    described = dict(manifest, files={CATALOG: "SQLite catalog: records, metadata, keys, manifest"})
    write_atomically(store / MANIFEST, json.dumps(described, indent=2).encode())


def open_space(store: Path, name: str, entry: dict[str, Any], mmap: bool | None) -> Space:
    """Open the space `name` from the files its manifest `entry` lists, checking sizes and shapes.

    Raises:
        StoreFormatError: a file is missing, truncated, damaged or does not match the entry.
    """
    config = SpaceConfig(name, entry["dim"], entry["metric"], entry["index"], entry["memory_budget"], entry.get("model"))
    directory = store / SPACES_DIR
    files = entry["files"]
    missing = [file for file in files if not (directory / file).is_file()]
    if missing:
        raise StoreFormatError(f"store {store}: space {name!r} is missing {missing}")
    sizes = [(directory / file).stat().st_size for file in files]
    if "sizes" in entry and sizes != entry["sizes"]:
        raise StoreFormatError(
            f"store {store}: space {name!r}: files {files} have sizes {sizes}, not the saved"
            f" {entry['sizes']}: truncated or modified"
        )
    if mmap is None:  # on-disk inverted lists (a fourth file) are always mapped unless mmap=False
        mmap = len(files) > 3 or sum(sizes) >= MMAP_THRESHOLD
    try:
        space = Space.read(config, directory, files, entry.get("built"), mmap)
    except FileNotFoundError as error:  # removed since the check: a newer generation replaced it
        raise StoreFormatError(f"store {store}: space {name!r} is missing {error.filename}") from error
    except (ValueError, RuntimeError, EOFError) as error:  # np.load raises EOFError on an empty file
        raise StoreFormatError(f"store {store}: cannot read space {name!r}: {error}") from error
    index = space.index
    if index is not None and (index.d != config.dim or index.ntotal != len(space.table) + len(space.tombstones)):
        raise StoreFormatError(
            f"store {store}: space {name!r}: its index (dim {index.d}, {index.ntotal} vectors) does not"
            f" match its vectors (dim {config.dim}, {len(space.table)} vectors)"
        )
    return space


def read_delta(
    store: Path, space: Space, entry: dict[str, Any], since: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """What turns `space` into the committed `entry`: (deleted keys, added keys, their vectors), or None.

    Keys only grow, so the records added since this handle's state (whose next key was `since`) are the
    suffix of the committed keys from `since` on, and the deleted ones are those of ours missing below it.
    None when reopening is the right way: a mapped or sharded space, an index that cannot delete in place
    (HNSW: the writer's rebuilt graph would differ from ours), another configuration or index, a change over
    `DELTA_SHARE` of the space, or files that do not describe a successor of this space.
    """
    if len(entry["files"]) != 3 or space.mapped or space.serving is not None or space.index is None:
        return None
    config = SpaceConfig(space.config.name, entry["dim"], entry["metric"], entry["index"], entry["memory_budget"], entry.get("model"))
    if not space.removes_in_place or entry.get("built") != space.spec or config != space.config:
        return None
    directory = store / SPACES_DIR
    try:
        if [(directory / file).stat().st_size for file in entry["files"][:2]] != entry["sizes"][:2]:
            return None  # truncated or rewritten: the full open says so
        keys = np.load(directory / entry["files"][0], mmap_mode="r", allow_pickle=False)
        vectors = np.load(directory / entry["files"][1], mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, KeyError):
        return None
    if keys.dtype != np.int64 or vectors.dtype != np.float32 or vectors.shape != (len(keys), config.dim):
        return None
    split = int(np.searchsorted(keys, since))
    ours = space.table.keys
    still = np.isin(ours, np.asarray(keys[:split]), assume_unique=True)
    if int(still.sum()) != split:  # the commit holds older keys this handle never had
        return None
    gone = ours[~still]
    if len(gone) + len(keys) - split > DELTA_SHARE * max(1, len(ours)) or len(keys) != entry["vectors"]:
        return None
    return gone, np.array(keys[split:]), np.array(vectors[split:])


def _library_versions() -> dict[str, str]:
    import faiss

    from mm_rag import __version__

    return {"mm_rag": __version__, "faiss": faiss.__version__, "numpy": np.__version__}
