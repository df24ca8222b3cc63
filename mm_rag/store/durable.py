"""Durable file writes: fsync of files and folders, replace-by-rename, and NumPy arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (a folder after files were created or renamed in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new content."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_path(path.parent)


def write_array(path: Path, array: np.ndarray) -> None:
    """Write `array` to a new ``.npy`` file at `path` (what `np.load` reads) and fsync it.

    Not `np.save`: it writes a real file with ``tofile``, which reports a full disk as "N requested and M
    written", without the errno (ENOSPC) by which the store tells its callers, and the HTTP service its
    clients (507), that the disk is full. A plain file write raises `OSError` with it.
    """
    array = np.ascontiguousarray(array)
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, np.lib.format.header_data_from_array_1_0(array))
        handle.write(array.reshape(-1).view(np.uint8))
        handle.flush()
        os.fsync(handle.fileno())
