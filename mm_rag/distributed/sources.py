"""What distributed ingestion reads: local files and folders, ``file://`` URIs, and object-store prefixes.

Local paths go through `mm_rag.ingestion.discover` (the same walk, globs and document ids as `mm_rag.ingest`).
Any other ``scheme://`` URI that `pyarrow.fs.FileSystem.from_uri` understands (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``hdfs://…``, with credentials from the environment as pyarrow reads them) is listed
recursively on the driver; a worker copies each object into a temporary local file of the same name, ingests
it there, and records the URI as its ``doc_id`` and ``uri``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from mm_rag._optional import require
from mm_rag.errors import InvalidInputError
from mm_rag.ingestion.discover import _matches, discover

_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """One file to ingest: its document id (absolute path or URI) and the size and mtime it had when listed."""

    uri: str
    size: int
    mtime_ns: int

    @property
    def remote(self) -> bool:
        """Whether it lives in an object store (a URI) rather than on a local file system."""
        return "://" in self.uri


def local_path(location: str | os.PathLike[str]) -> Path | None:
    """The local path of a plain path or a ``file://`` URI; None for other URIs."""
    text = os.fspath(location)
    if "://" not in text:
        return Path(text)
    parsed = urlparse(text)
    if parsed.scheme != "file":
        return None
    if parsed.netloc not in ("", "localhost"):
        raise InvalidInputError(f"{text}: a file:// URI must name a local path (file:///path)")
    return Path(unquote(parsed.path))


def list_sources(
    locations: Sequence[str | os.PathLike[str]],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> tuple[list[Source], dict[str, str]]:
    """Every file under `locations`, sorted by URI, and the locations that could not be listed → reason."""
    local: list[Path] = []
    remote: list[str] = []
    for location in locations:
        path = local_path(location)
        if path is None:
            remote.append(os.fspath(location))
        else:
            local.append(path)
    files, problems = discover(local, include, exclude) if local else ([], {})
    sources = [_local_source(path) for path in files]
    for uri in remote:
        found, problem = _remote_sources(uri, include, exclude)
        sources.extend(found)
        if problem:
            problems[uri] = problem
    unique = {source.uri: source for source in sources}
    return [unique[uri] for uri in sorted(unique)], problems


def _local_source(path: Path) -> Source:
    try:
        status = path.stat()
    except OSError:  # a dangling link: listed anyway, and reported as failed by the worker
        return Source(str(path), -1, 0)
    return Source(str(path), status.st_size, status.st_mtime_ns)


def _remote_sources(
    uri: str, include: Sequence[str] | None, exclude: Sequence[str] | None
) -> tuple[list[Source], str | None]:
    fs_module = require("pyarrow.fs", "object-store ingestion")
    scheme = uri.split("://", 1)[0]
    try:
        filesystem, base = fs_module.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(base)
        if info.type == fs_module.FileType.File:
            return [Source(uri, info.size, info.mtime_ns or 0)], None
        if info.type != fs_module.FileType.Directory:
            return [], "no such object or prefix"
        listed = filesystem.get_file_info(fs_module.FileSelector(base, recursive=True))
    except (OSError, ValueError) as error:  # pyarrow raises OSError (and ArrowInvalid, a ValueError)
        return [], f"cannot list: {error}"
    sources = []
    for entry in listed:
        if entry.type != fs_module.FileType.File:
            continue
        relative = entry.path[len(base.rstrip("/")) + 1 :]
        if any(part.startswith(".") for part in relative.split("/")):
            continue  # hidden files and folders, as in a local walk
        if include and not _matches(include, entry.base_name, relative):
            continue
        if exclude and _matches(exclude, entry.base_name, relative):
            continue
        sources.append(Source(f"{scheme}://{entry.path}", entry.size, entry.mtime_ns or 0))
    return sources, None


@contextlib.contextmanager
def fetched(source: Source) -> Iterator[Path]:
    """A local path holding `source`'s bytes: the file itself, or a temporary copy of a remote object.

    Raises:
        OSError: the object cannot be read (the caller reports the file as failed).
    """
    if not source.remote:
        yield Path(source.uri)
        return
    fs_module = require("pyarrow.fs", "object-store ingestion")
    folder = tempfile.mkdtemp(prefix="mm-rag-fetch-")
    try:
        try:
            filesystem, path = fs_module.FileSystem.from_uri(source.uri)
        except ValueError as error:
            raise OSError(f"cannot open {source.uri}: {error}") from error
        target = Path(folder) / (path.rsplit("/", 1)[-1] or "object")
        with filesystem.open_input_stream(path) as stream, open(target, "wb") as handle:
            shutil.copyfileobj(stream, handle, _COPY_CHUNK)
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)
