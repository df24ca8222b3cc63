"""The exceptions mm-rag raises: one small hierarchy so callers can catch ours apart from everything else."""

from __future__ import annotations


class MMRagError(Exception):
    """Base class of every error raised by mm-rag."""


class InvalidInputError(MMRagError, ValueError):
    """An argument (record, vector, filter, name…) is malformed; nothing was changed."""


class ModelNotFoundError(InvalidInputError):
    """A model whose files are not on this machine and cannot be downloaded now.

    Attributes:
        watch: Where its files would appear (``"hub:REPO:FILE"`` in the Hugging Face cache, or local paths),
            so that a caller can tell cheaply, later, whether loading it again could succeed; None if unknown.
    """

    def __init__(self, message: str, watch: tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        self.watch = watch


class FilterError(InvalidInputError):
    """A metadata filter uses an unknown operator, a bad key or a value of the wrong type."""


class UnknownSpaceError(InvalidInputError, KeyError):
    """A space name that the store does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreFormatError(MMRagError):
    """A store directory is missing, damaged, or written by an unknown format version."""


class StoreLockedError(MMRagError):
    """Another process (or another handle) holds the store's write lock for longer than the wait allowed."""


class ReadOnlyStoreError(MMRagError):
    """A write to a store whose directory cannot be written (read-only file system or permissions)."""


class StoreWriteError(MMRagError, OSError):
    """Saving failed (disk full, I/O error, a commit made without the store's lock); the last commit is intact."""
