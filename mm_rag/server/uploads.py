"""Where the HTTP service keeps uploaded files: one per document, under its document name.

An upload is spooled beside the folder while it arrives (hashed on the way), then placed under its name; the
version it replaces is set aside until the new one is stored, and put back if storing fails.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mm_rag.errors import InvalidInputError
from mm_rag.ingestion.discover import document_id
from mm_rag.server.security import document_name

UPLOADS_DIR = "uploads"
_COPY_CHUNK = 1 << 20


@dataclass
class Upload:
    """One uploaded file on its way into the store."""

    name: str  # the client's name for it, as reports show it
    document: str  # its name inside the uploads folder: its document id over HTTP
    spooled: Path  # where its bytes wait, beside the uploads
    digest: str  # SHA-256 of its bytes, hex: the content hash ingestion stores
    kept: Path | None = None  # where it is kept once placed
    previous: Path | None = None  # the last version, set aside until the new one is stored


class UploadsFolder:
    """The folder of uploaded documents (`path`), and the names documents in it have over HTTP."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()

    def spool(self, name: str, document: str, stream: IO[bytes]) -> Upload:
        """Copy an upload into a temporary file beside the uploads, hashing it on the way."""
        self.path.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        handle, temporary = tempfile.mkstemp(dir=self.path, prefix=".upload-")
        try:
            with os.fdopen(handle, "wb") as output:
                for chunk in iter(lambda: stream.read(_COPY_CHUNK), b""):
                    digest.update(chunk)
                    output.write(chunk)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return Upload(name, document, Path(temporary), digest.hexdigest())

    def place(self, upload: Upload, target: Path) -> None:
        """Move a spooled upload to `target`, setting the version there aside (hidden) until the new one is in."""
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file():
            previous = target.with_name(f".previous-{upload.digest[:16]}-{target.name}")
            os.replace(target, previous)
            upload.previous = previous
        try:
            os.replace(upload.spooled, target)
        except OSError:
            self.put_back(upload)
            raise
        upload.kept = target

    def put_back(self, upload: Upload) -> None:
        """Undo `place`: remove the new file, and bring the last version back (its records still point at it)."""
        target = self.path / upload.document
        if upload.kept is not None:
            upload.kept.unlink(missing_ok=True)
            upload.kept = None
        if upload.previous is not None:
            os.replace(upload.previous, target)
            upload.previous = None
        else:
            self._remove_empty_folders(target.parent)

    def public_id(self, doc: str) -> str:
        """A document's id over HTTP: an upload's name inside the uploads folder, any other stored id as is."""
        path = Path(doc)
        if path.is_absolute() and path.is_relative_to(self.path):
            return path.relative_to(self.path).as_posix()
        return doc

    def key_of(self, name: str) -> str | None:
        """The stored id of the upload named `name`, when `name` is a valid name and its file exists."""
        try:
            target = self.path / document_name(name)
        except InvalidInputError:
            return None
        return document_id(target) if target.is_file() else None

    def file_of(self, doc: str) -> Path | None:
        """The kept file of the stored document `doc` when it is an upload, else None."""
        path = Path(doc)
        if path.is_absolute() and path.is_relative_to(self.path) and path != self.path:
            return path
        return None

    def remove(self, doc: str) -> bool:
        """Remove the uploaded file of `doc` (and folders it leaves empty); False when it has none on disk."""
        path = self.file_of(doc)
        if path is None or not path.is_file():
            return False
        path.unlink()
        self._remove_empty_folders(path.parent)
        return True

    def _remove_empty_folders(self, folder: Path) -> None:
        """Remove `folder` and its parents up to (not including) the uploads folder while they are empty."""
        while folder != self.path and folder.is_relative_to(self.path):
            try:
                folder.rmdir()
            except OSError:  # not empty (another document in it) or already gone
                return
            folder = folder.parent
