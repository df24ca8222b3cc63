"""Bringing an existing store up to date with embedding shards (a new store is built by `mm_rag.indexbuild`).

`mm_rag.indexbuild.build_store` only builds new stores. For a store that already exists, `update_store` reads
the finished shards and, for every shard holding a document the store lacks or holds with another content
hash, replaces those documents' records (`delete_doc`, then `upsert` with the shard's vectors). Shards whose
documents are all stored as they are cost one Parquet read; so a run that was killed after writing shards
but before updating the store is completed by the next one.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np

from mm_rag.shards import ShardSet
from mm_rag.store import MultimodalStore


def update_store(shards: str | os.PathLike[str], store: MultimodalStore) -> list[str]:
    """Replace in `store` the documents of the finished `shards` that it lacks or holds in another version.

    Spaces the store lacks are created from ``shards.json`` (dimension, metric, model); a space it has must
    record the same model. The store is not saved. Returns the names of the shards applied.

    Raises:
        InvalidInputError: a space of the store holds another model's vectors.
        StoreFormatError: missing or damaged shards.
    """
    shard_set = ShardSet(shards)
    for name, info in shard_set.spaces.items():
        if name not in store.spaces or store.spaces[name].model != info.model:  # the latter raises
            store.create_space(name, info.dim, info.metric, model=info.model)
    stored = store.documents()
    applied = []
    for name in shard_set.finished():
        shard = shard_set.read(name, mmap=True)
        documents = {record.doc_id: record.content_hash for record in shard.records}
        if all(stored.get(doc_id) == digest for doc_id, digest in documents.items()):
            continue
        for doc_id in documents:
            store.delete_doc(doc_id)
        at: dict[int, dict[str, int]] = defaultdict(dict)  # row → space → its index among that space's vectors
        for space, (rows, _) in shard.vectors.items():
            for index, row in enumerate(rows.tolist()):
                at[row][space] = index
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)  # rows with vectors in the same spaces
        for row in sorted(at):
            groups[tuple(sorted(at[row]))].append(row)
        for spaces, rows in groups.items():
            vectors = {space: np.asarray(shard.vectors[space][1][[at[row][space] for row in rows]]) for space in spaces}
            store.upsert([shard.records[row] for row in rows], vectors)
        applied.append(name)
    return applied
