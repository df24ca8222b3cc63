"""Faiss IVF indices whose inverted lists live in a separate, memory-mapped data file, and sharded serving.

An index built by `mm_rag.indexbuild` keeps its inverted lists in ``<space>.<gen>.ivfdata`` beside
``<space>.<gen>.faiss`` (Faiss's `OnDiskInvertedLists`): the ``.faiss`` file holds only the quantizer, the
OPQ/PQ tables and the name of the data file, which is opened read-only and memory-mapped. Committed files are
never written to, so a space's first change copies its lists into memory (`load_lists`) and the next save
writes an ordinary in-memory index.

`shard_ivf` splits an IVF index into sub-indices that share its trained quantizer, each holding every n-th
entry of every inverted list, and wraps them in a threaded `faiss.IndexShards`: one query is scanned by all
cores at once, and since every probed entry is scanned by exactly one sub-index the merged top-k equals the
unsharded one (search parameters, nprobe and `IDSelector` included, reach every sub-index).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

DATA_SUFFIX = ".ivfdata"


def ondisk_lists(index: Any) -> Any | None:
    """The `OnDiskInvertedLists` of `index`, or None when it has none (not IVF, or lists in memory)."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return None
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


def read_ondisk(path: Path, data_file: str) -> Any:
    """Open the index at `path` whose lists are in `data_file` of the same folder, read-only and mapped.

    Raises:
        ValueError: the index has no on-disk lists, or names another data file.
    """
    import faiss

    index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
    lists = ondisk_lists(index)
    if lists is None or Path(lists.filename).name != data_file:
        named = None if lists is None else Path(lists.filename).name
        raise ValueError(f"{path.name} does not keep its inverted lists in {data_file} (it names {named})")
    return index


def write_ondisk(index: Any, directory: Path, stem: str) -> list[str]:
    """Write `index` (on-disk lists) as ``stem.faiss`` + ``stem.ivfdata``, linking the unchanged data file.

    The committed data file is never modified, so the new name is a hard link to it (a copy where links are
    not possible); the returned names are in manifest order (index, then data).
    """
    import shutil

    import faiss

    lists = ondisk_lists(index)
    source = Path(lists.filename)
    target = directory / f"{stem}{DATA_SUFFIX}"
    if source.resolve() != target.resolve():
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        lists.filename = str(target)
    faiss.write_index(index, str(directory / f"{stem}.faiss"))
    return [f"{stem}.faiss", target.name]


def load_lists(index: Any) -> None:
    """Replace the on-disk inverted lists of `index` by an in-memory copy (same quantizer, same entries)."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    source = ivf.invlists
    copy = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    for number in range(ivf.nlist):
        size = source.list_size(number)
        if size:
            copy.add_entries(number, size, source.get_ids(number), source.get_codes(number))
    ivf.replace_invlists(copy, True)
    copy.this.disown()


def shard_ivf(index: Any, shards: int) -> tuple[Any, list[Any]]:
    """A threaded `faiss.IndexShards` over `shards` in-memory sub-indices of the IVF `index`, and the subs.

    Keep the returned sub-indices alive as long as the `IndexShards` (it does not own them).
    """
    import faiss

    ivf = faiss.extract_index_ivf(index)
    code_size, nlist = ivf.code_size, ivf.nlist
    subs = [_empty_clone(index) for _ in range(shards)]
    sub_lists = [faiss.ArrayInvertedLists(nlist, code_size) for _ in range(shards)]
    source = ivf.invlists
    for number in range(nlist):
        size = source.list_size(number)
        if not size:
            continue
        ids = faiss.rev_swig_ptr(source.get_ids(number), size)
        codes = faiss.rev_swig_ptr(source.get_codes(number), size * code_size).reshape(size, code_size)
        for part, lists in enumerate(sub_lists):
            chosen_ids = np.ascontiguousarray(ids[part::shards])
            if len(chosen_ids):
                chosen_codes = np.ascontiguousarray(codes[part::shards])
                lists.add_entries(number, len(chosen_ids), faiss.swig_ptr(chosen_ids), faiss.swig_ptr(chosen_codes))
    sharded = faiss.IndexShards(index.d, True, False)
    for sub, lists in zip(subs, sub_lists):
        sub_ivf = faiss.extract_index_ivf(sub)
        sub_ivf.replace_invlists(lists, True)
        lists.this.disown()
        total = sum(lists.list_size(number) for number in range(nlist))
        sub_ivf.ntotal = sub.ntotal = total
        sharded.add_shard(sub)
    sharded.ntotal = index.ntotal
    return sharded, subs


def to_gpus(index: Any) -> Any:
    """`index` sharded across every GPU (`faiss.index_cpu_to_all_gpus`), for a faiss build with GPU support."""
    import faiss

    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    return faiss.index_cpu_to_all_gpus(index, co=options)


def _empty_clone(index: Any) -> Any:
    """A copy of the trained `index` with no entries (its lists are swapped out, not copied)."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    lists, owned, total, outer_total = ivf.invlists, ivf.own_invlists, ivf.ntotal, index.ntotal
    ivf.own_invlists = False
    placeholder = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    try:
        ivf.replace_invlists(placeholder, False)
        ivf.ntotal = index.ntotal = 0
        return faiss.clone_index(index)
    finally:
        ivf.replace_invlists(lists, owned)
        ivf.ntotal, index.ntotal = total, outer_total
