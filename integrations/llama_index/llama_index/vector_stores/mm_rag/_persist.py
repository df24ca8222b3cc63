"""Where and how an `MMRagVectorStore` persists: a small JSON file at the path LlamaIndex gives, and the
mm-rag store directory beside it, named after that file.

`StorageContext.persist(dir)` hands each vector store ``<dir>/<namespace>__vector_store.json``; the store goes
to ``<dir>/<namespace>__vector_store.mmrag/`` and the JSON file records that name, the space and the format.
Two namespaces (or two indices in two folders) therefore never share a store directory.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from mm_rag import InvalidInputError, MultimodalStore, StoreFormatError

FORMAT = "llama-index-mm-rag-vector-store"
FORMAT_VERSION = 1
STORE_SUFFIX = ".mmrag"
_STORE_MANIFEST = "mmrag.json"


def store_dir_for(persist_path: str | os.PathLike[str]) -> Path:
    """The store directory that goes with `persist_path`: ``x/default__vector_store.json`` → ``x/default__vector_store.mmrag``."""
    path = Path(persist_path)
    return path.with_name(path.stem + STORE_SUFFIX)


def check_local_filesystem(fs: Any) -> None:
    """Refuse an fsspec filesystem other than the local one (the store is a SQLite + Faiss directory)."""
    if fs is None:
        return
    protocol = getattr(fs, "protocol", None)
    protocols = {protocol} if isinstance(protocol, str) else set(protocol or ())
    if not protocols & {"file", "local"}:
        raise InvalidInputError(
            f"MMRagVectorStore persists to the local filesystem only, not {type(fs).__name__} ({protocol!r})"
        )


def write_store(store: MultimodalStore, target: Path) -> None:
    """Make `target` hold the current state of `store`: saved in place when it lives there, else a copy that
    replaces what `target` held (only an mm-rag store or an empty folder is ever replaced)."""
    target = target.absolute()
    if store.path == target.resolve():
        store.save()
        return
    if target.exists() and any(target.iterdir()) and not (target / _STORE_MANIFEST).is_file():
        raise InvalidInputError(f"cannot persist to {target}: it exists and holds something other than an mm-rag store")
    target.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    staging = target.with_name(f".{target.name}.new-{token}")
    store.save(staging)
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{token}")
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)


def sidecar(target: Path, space: str, stores_text: bool) -> dict[str, Any]:
    """What the JSON file at the persist path records."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "store_dir": target.name,
        "space": space,
        "stores_text": stores_text,
    }


def read_sidecar(persist_path: Path) -> tuple[Path, dict[str, Any]]:
    """The store directory and settings recorded at `persist_path`.

    Raises:
        StoreFormatError: the file is missing, not JSON, or not written by `MMRagVectorStore.persist`.
    """
    try:
        described = json.loads(persist_path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise StoreFormatError(f"no persisted MMRagVectorStore at {persist_path}") from error
    except (OSError, ValueError) as error:
        raise StoreFormatError(f"{persist_path} is not a readable MMRagVectorStore file: {error}") from error
    if not isinstance(described, dict) or described.get("format") != FORMAT:
        raise StoreFormatError(f"{persist_path} was not written by MMRagVectorStore.persist (format {FORMAT!r})")
    if described.get("format_version") != FORMAT_VERSION:
        raise StoreFormatError(
            f"{persist_path}: format version {described.get('format_version')!r} is not {FORMAT_VERSION}"
        )
    name = described.get("store_dir")
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise StoreFormatError(f"{persist_path}: bad store_dir {name!r} (a folder name beside the file)")
    return persist_path.with_name(name), described
