"""What a store's directory commits: the manifest (format, generation, spaces and their files) and the files.

The catalog's copy of the manifest is the commit point; ``mmrag.json`` is a human-readable copy written after
each commit. Space files carry the generation that wrote them in their names and are never modified, so a
process that still reads an older generation (memory-mapped, say) is never disturbed by a newer one.

Layout of a store's directory (``mmrag.json`` inside says what each file of each space is)::

    mmrag.json                       manifest: format version, spaces, files, library versions
    catalog.sqlite                   records, metadata, keys (WAL mode); holds the authoritative manifest
    write.lock                       the writers' lock (a flock) and who holds it
    spaces/<space>.<gen>.keys.npy, .vectors.npy   the main part's exact vectors, keyed like its index
    spaces/<space>.<gen>.faiss       its Faiss index (absent while an IVF/PQ index awaits training)
    spaces/<space>.<gen>.ivfdata     on-disk inverted lists of an IVF index built by `mm_rag.indexbuild`
                                     (mapped read-only; copied into memory at the space's first change)
    spaces/<space>.<gen>.s<n>.keys.npy, .vectors.npy   a segment: vectors added by a later save
    spaces/<space>.<gen>.dead.npy    tombstones: keys the main part and segments still hold but were deleted
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np

from mm_rag.errors import InvalidInputError, StoreFormatError
from mm_rag.store.catalog import Catalog
from mm_rag.store.config import SpaceConfig
from mm_rag.store.durable import write_atomically

FORMAT = "mm-rag-store"
FORMAT_VERSION = 2  # 2: named files and segments per space; 1 (files by position) is read too
MANIFEST = "mmrag.json"
CATALOG = "catalog.sqlite"
SPACES_DIR = "spaces"
WRITE_LOCK = "write.lock"


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


@dataclass(frozen=True, slots=True)
class Segment:
    """Vectors appended to a space after its main files were written: one save's new rows, or a merge of such.

    Keys grow, so a segment holds one key range [`first`, `last`] and the segments of a space follow each other.
    """

    keys: str
    vectors: str
    rows: int
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class SpaceFiles:
    """The files holding one space at one generation.

    Attributes:
        keys, vectors: The main part's exact vectors (``.npy``), ascending by key.
        index: The main part's Faiss index, or None while it waits for enough vectors to train.
        lists: The index's on-disk inverted lists (`mm_rag.store.ondisk`), or None when they are in `index`.
        segments: Later additions, oldest first, each searched exactly until merged into the main part.
        tombstones: The keys deleted from these files since they were written (``.npy``), or None.
    """

    keys: str
    vectors: str
    index: str | None = None
    lists: str | None = None
    segments: tuple[Segment, ...] = ()
    tombstones: str | None = None

    def names(self) -> list[str]:
        main = [self.keys, self.vectors, self.index, self.lists, self.tombstones]
        return [name for name in main if name] + [name for s in self.segments for name in (s.keys, s.vectors)]

    def same_main(self, other: SpaceFiles) -> bool:
        return (self.keys, self.vectors, self.index, self.lists) == (
            other.keys,
            other.vectors,
            other.index,
            other.lists,
        )


@dataclass(frozen=True, slots=True)
class SpaceEntry:
    """A space's manifest entry: its configuration, the index built, its files (with their sizes), its count."""

    config: SpaceConfig
    built: str | None
    files: SpaceFiles
    sizes: dict[str, int]
    vectors: int

    @classmethod
    def describe(cls, config: SpaceConfig, built: str | None, directory: Path, files: SpaceFiles, vectors: int) -> Self:
        sizes = {name: (directory / name).stat().st_size for name in files.names()}
        return cls(config, built, files, sizes, vectors)

    def to_json(self) -> dict[str, Any]:
        config = self.config
        return {
            "dim": config.dim,
            "metric": config.metric,
            "index": config.index,
            "memory_budget": config.memory_budget,
            "model": config.model,
            "built": self.built,
            "files": asdict(self.files),
            "sizes": self.sizes,
            "vectors": self.vectors,
        }

    @classmethod
    def from_json(cls, name: str, entry: dict[str, Any]) -> Self:
        """An entry as the manifest holds it; format 1 listed the files by position (keys, vectors, index, lists)."""
        config = SpaceConfig(
            name, entry["dim"], entry["metric"], entry["index"], entry["memory_budget"], entry.get("model")
        )
        files, sizes = entry["files"], entry.get("sizes")
        if isinstance(files, list):
            named = SpaceFiles(*files[:4])
            sizes = dict(zip(files, sizes)) if sizes is not None else {}
        else:
            segments = tuple(Segment(**segment) for segment in files.get("segments", ()))
            named = SpaceFiles(**{**files, "segments": segments})
        return cls(config, entry.get("built"), named, dict(sizes or {}), int(entry["vectors"]))


def check_format(manifest: Any, where: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreFormatError(f"{where} is not an mm-rag store manifest")
    version = manifest.get("format_version")
    if version not in (1, FORMAT_VERSION):
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


def _library_versions() -> dict[str, str]:
    import faiss

    from mm_rag import __version__

    return {"mm_rag": __version__, "faiss": faiss.__version__, "numpy": np.__version__}


def copy_store(source: Path, target: Path, catalog: Catalog, manifest: dict[str, Any]) -> None:
    """Copy the generation `manifest` describes (its catalog through SQLite's backup, its space files) into the
    directory `target`, which must not exist or be empty; the copy appears there whole or not at all."""
    if target.exists() and any(target.iterdir()):
        raise InvalidInputError(f"save: {target} exists and is not empty")
    staging = Path(tempfile.mkdtemp(prefix=".mm-rag-copy-", dir=target.parent if target.parent.exists() else None))
    (staging / SPACES_DIR).mkdir()
    catalog.backup_to(staging / CATALOG)
    for name, entry in manifest["spaces"].items():
        for file in SpaceEntry.from_json(name, entry).files.names():
            shutil.copyfile(source / SPACES_DIR / file, staging / SPACES_DIR / file)
    write_manifest_file(staging, manifest)
    if target.exists():
        target.rmdir()
    shutil.move(str(staging), str(target))


def open_catalog(store: Path, read_only: bool) -> Catalog:
    """Open the catalog of the store at `store`; refuses a damaged store rather than overwrite it.

    The catalog's manifest is authoritative. A catalog without a committed manifest is a store that was never
    saved (or whose creation was interrupted) and starts empty, unless `mmrag.json` records a save.
    """
    manifest_file, catalog_file = store / MANIFEST, store / CATALOG
    saved_generation = 0
    if manifest_file.exists():
        described = read_json(manifest_file)
        check_format(described, manifest_file)
        saved_generation = described.get("generation", 0)
    if saved_generation and not catalog_file.is_file():  # else a new, empty catalog would replace the store
        raise StoreFormatError(f"{store} has {MANIFEST} but no {CATALOG}: the store is damaged")
    if read_only and not catalog_file.is_file():
        raise StoreFormatError(f"no mm-rag store at {store}, and the folder is read-only")
    try:
        catalog = Catalog(catalog_file, read_only=read_only)
        manifest = catalog.setting("manifest")
    except sqlite3.DatabaseError as error:
        if isinstance(error, sqlite3.OperationalError):  # locked, unreadable…: not a damaged file
            raise
        raise StoreFormatError(f"{catalog_file} is damaged or not an SQLite catalog: {error}") from error
    if manifest is None and saved_generation:  # an emptied (e.g. zero-length) or replaced catalog
        catalog.close()
        raise StoreFormatError(
            f"{catalog_file} holds no manifest but {MANIFEST} records saved generation"
            f" {saved_generation}: the catalog is damaged"
        )
    return catalog


def remove_unreferenced(store: Path, manifest: dict[str, Any]) -> None:
    """Remove the space files `manifest` does not name: older generations', failed saves' and merges'."""
    referenced = {
        file for name, entry in manifest["spaces"].items() for file in SpaceEntry.from_json(name, entry).files.names()
    }
    for file in (store / SPACES_DIR).iterdir():
        if file.name not in referenced:
            file.unlink(missing_ok=True)
