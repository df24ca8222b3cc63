"""Finding the files to ingest: recursive walk, glob include/exclude, stable document ids, content hashes."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

_HASH_CHUNK = 1 << 20


def discover(
    paths: Iterable[str | os.PathLike[str]],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> tuple[list[Path], dict[str, str]]:
    """Files under `paths` (recursively), sorted, and a map of paths that could not be walked → reason.

    `include`/`exclude` are glob patterns matched against each file's name and its path relative to the
    root it was found under (``"*.jpg"``, ``"photos/**"``). Hidden files and folders (dot-names) are skipped
    unless a root names them; symlinked folders are not followed (no loops), symlinked files are.
    """
    found: dict[Path, None] = {}
    problems: dict[str, str] = {}
    for root in map(Path, paths):
        if root.is_file() or (root.exists() and not root.is_dir()):
            found[root.absolute()] = None
            continue
        if not root.exists():
            problems[str(root)] = "no such file or directory" if not root.is_symlink() else "broken symbolic link"
            continue

        def report(error: OSError) -> None:
            problems[str(error.filename)] = f"cannot list folder: {error.strerror}"

        for folder, folders, files in os.walk(root, onerror=report):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in files:
                if name.startswith("."):
                    continue
                path = Path(folder) / name
                relative = path.relative_to(root).as_posix()
                if include and not _matches(include, name, relative):
                    continue
                if exclude and _matches(exclude, name, relative):
                    continue
                found[path.absolute()] = None
    return sorted(found), problems


def _matches(patterns: Sequence[str], name: str, relative: str) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(relative, p) for p in patterns)


def document_id(path: Path) -> str:
    """A file's document id: its absolute path, so an edited file replaces its own records."""
    return str(path.absolute())


def content_hash(path: Path) -> str:
    """SHA-256 of a file's bytes (hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
