"""Build a `MultimodalStore` from embedding shards without holding all vectors in memory.

`build_store` turns the output of distributed ingestion (`mm_rag.shards`) into a new store directory:

1. the catalog is filled from each shard's Parquet records in turn (keys from the store's counter);
2. per space, the exact vectors are streamed shard by shard into the store's ``.npy`` files
   (`np.lib.format.open_memmap`, one shard mapped at a time);
3. the index is chosen by the size/memory rule (`choose_index`) unless given, and IVF/OPQ/PQ indices are
   trained on a uniform sample drawn across all shards (39-256 points per centroid, capped);
4. IVF indices get one small index per shard, merged into one index whose inverted lists live in a mapped
   ``.ivfdata`` file (`faiss.contrib.ondisk.merge_ondisk`); Flat and HNSW indices are built in memory,
   which the rule only picks when they fit the budget;
5. recall@10 is measured on a held-out sample against exact search, and the manifest is committed.

Only new stores are built: a target that already holds records or spaces is refused (build into a new
directory and swap directories to replace a store). After the build the store is an ordinary one: searches,
filters, deletes and upserts work; the first change to a space with on-disk lists copies them into memory.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_rag.errors import InvalidInputError
from mm_rag.shards import ShardSet, SpaceInfo
from mm_rag.store import indexing, ondisk
from mm_rag.store.config import SpaceConfig
from mm_rag.store.durable import fsync_path
from mm_rag.store.manifest import SpaceFiles
from mm_rag.store.space import Space
from mm_rag.store.store import SPACES_DIR, MultimodalStore

RECALL_K = 10
RECALL_QUERIES = 200
_CHUNK = 65536
_BUILD_DIR = ".build"


@dataclass
class SpaceReport:
    """What was built for one space.

    Attributes:
        index: Faiss factory string of the index.
        vectors: Vectors indexed.
        on_disk: Whether the inverted lists live in a mapped ``.ivfdata`` file.
        memory_bytes: Bytes the index takes when held in memory (index files' size); with on-disk lists only
            the ``.faiss`` part stays resident, the lists are paged in as searched.
        disk_bytes: Bytes of the space's files (index, lists, exact vectors and keys).
        train_points: Vectors the index was trained on (0 when it needs no training).
        recall_at_10: Mean recall@10 of the index against exact search on held-out stored vectors (each
            query's own vector left out of both lists); None when too few vectors.
        seconds: Wall time per phase (vectors, train, add, recall) and in total.
    """

    index: str
    vectors: int
    on_disk: bool
    memory_bytes: int
    disk_bytes: int
    train_points: int
    recall_at_10: float | None
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class BuildReport:
    """The outcome of `build_store`: records loaded, and one `SpaceReport` per space."""

    store: Path
    shards: int
    records: int
    spaces: dict[str, SpaceReport]
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"built {self.store}: {self.records} records from {self.shards} shards in {self.seconds.get('total', 0):.1f} s"
        ]
        for name, space in self.spaces.items():
            recall = "n/a" if space.recall_at_10 is None else f"{space.recall_at_10:.3f}"
            lines.append(
                f"  {name}: {space.index}{' (on-disk lists)' if space.on_disk else ''}, {space.vectors} vectors,"
                f" index {space.memory_bytes / 2**20:.1f} MiB, disk {space.disk_bytes / 2**20:.1f} MiB,"
                f" recall@10 {recall}, {space.seconds.get('total', 0):.1f} s"
            )
        return "\n".join(lines)


def build_store(
    shards: str | os.PathLike[str] | ShardSet,
    store: str | os.PathLike[str],
    *,
    index: str | Mapping[str, str] = "auto",
    memory_budget: int = indexing.DEFAULT_MEMORY_BUDGET,
    train_size: int | None = None,
    on_disk: bool | None = None,
    recall_queries: int = RECALL_QUERIES,
    seed: int = 0,
) -> BuildReport:
    """Build a new store at `store` from the finished shards under `shards`.

    Args:
        index: ``"auto"`` (the size/memory rule), a Faiss factory string for every space, or one per space.
        memory_budget: Bytes an index may take; the rule moves to compressed codes beyond it.
        train_size: Training vectors for IVF/PQ (default: max(39 per centroid, min(256 Ki, count))).
        on_disk: Inverted lists of IVF indices in a mapped ``.ivfdata`` file (default: True for IVF).
        recall_queries: Held-out vectors on which recall@10 is measured (0: skip).
        seed: Seed of the training and held-out samples.

    Raises:
        InvalidInputError: the target holds a store with records or spaces, a record id appears twice, a bad
            factory string, ``on_disk=True`` for a non-IVF index, or too few vectors to train the index.
        StoreFormatError: missing or damaged shards.
    """
    started = time.perf_counter()
    shard_set = shards if isinstance(shards, ShardSet) else ShardSet(shards)
    infos = shard_set.spaces
    names = shard_set.finished()
    target = Path(store)
    created = not target.exists()
    opened = MultimodalStore(target)
    try:
        if len(opened) or opened.spaces:
            raise InvalidInputError(f"build_store: {target} already holds a store; build into a new directory")
        offsets, records = _load_records(shard_set, names, opened)
        loaded = time.perf_counter()
        work = opened.path / _BUILD_DIR
        work.mkdir(exist_ok=True)
        reports = {}
        for name, info in infos.items():
            spec = index if isinstance(index, str) else index.get(name, "auto")
            reports[name] = _build_space(
                opened,
                shard_set,
                names,
                offsets,
                name,
                info,
                spec,
                memory_budget,
                train_size,
                on_disk,
                recall_queries,
                seed,
                work,
            )
        opened.save()
        shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        with warnings.catch_warnings():  # nothing was committed: the unsaved-changes warning says nothing new
            warnings.simplefilter("ignore")
            opened.close()  # rolls the catalog back
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise
    opened.close()
    seconds = {"records": loaded - started, "total": time.perf_counter() - started}
    return BuildReport(opened.path, len(names), records, reports, seconds)


def _load_records(shard_set: ShardSet, names: list[str], store: MultimodalStore) -> tuple[dict[str, int], int]:
    """Insert every shard's records into the catalog; returns each shard's first key and the record count."""
    from pyarrow import parquet

    offsets: dict[str, int] = {}
    total = 0
    for name in names:
        count = parquet.ParquetFile(shard_set.root / name / "records.parquet").metadata.num_rows
        if not count:
            offsets[name] = -1
            continue
        records = shard_set.read(name, mmap=True).records
        keys = store.bulk_insert(records)
        offsets[name] = int(keys[0])
        total += len(records)
    return offsets, total


def _build_space(
    store: MultimodalStore,
    shard_set: ShardSet,
    names: list[str],
    offsets: dict[str, int],
    name: str,
    info: SpaceInfo,
    spec: str,
    memory_budget: int,
    train_size: int | None,
    on_disk: bool | None,
    recall_queries: int,
    seed: int,
    work: Path,
) -> SpaceReport:
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    directory = store.path / SPACES_DIR
    stem = f"{name}.1"
    counts = {
        n: len(np.load(shard_set.root / n / f"{name}.rows.npy", mmap_mode="r"))
        for n in names
        if _has(shard_set, n, name)
    }
    total = sum(counts.values())
    config = SpaceConfig(name, info.dim, info.metric, spec, memory_budget, info.model)
    config.validate()
    built = spec if spec != "auto" else indexing.choose_index(total, info.dim, memory_budget)
    files = [f"{stem}.keys.npy", f"{stem}.vectors.npy"]
    bounds = _write_vectors(shard_set, names, offsets, counts, name, config, directory / files[0], directory / files[1])
    seconds["vectors"] = time.perf_counter() - started

    trained = indexing.new_index(built, info.dim, info.metric)
    is_ivf = _is_ivf(trained)
    on_disk = is_ivf if on_disk is None else on_disk
    if on_disk and not is_ivf:
        raise InvalidInputError(f"build_store: space {name!r}: on-disk lists need an IVF index, not {built!r}")
    needed = indexing.training_points(trained)
    points = 0
    clock = time.perf_counter()
    if needed:
        points = indexing.training_size(trained, total, train_size)
        if total < needed:
            raise InvalidInputError(
                f"build_store: space {name!r} has {total} vectors; {built!r} needs about {needed} to train"
            )
        indexing.train(trained, _sample_rows(directory / files[1], total, points, seed))
    seconds["train"] = time.perf_counter() - clock

    clock = time.perf_counter()
    if on_disk:
        _add_on_disk(trained, directory, files, bounds, stem, work)
        files += [f"{stem}.faiss", f"{stem}{ondisk.DATA_SUFFIX}"]
    else:
        _add_rows(trained, directory / files[0], directory / files[1], 0, total)
        files.append(f"{stem}.faiss")
        import faiss

        faiss.write_index(trained, str(directory / files[2]))
    for file in files:
        fsync_path(directory / file)
    seconds["add"] = time.perf_counter() - clock

    clock = time.perf_counter()
    recall = _recall(trained, directory / files[0], directory / files[1], info.metric, recall_queries, seed + 1)
    seconds["recall"] = time.perf_counter() - clock
    del trained
    store.adopt_space(config, SpaceFiles(*files), built)
    seconds["total"] = time.perf_counter() - started
    sizes = {file: (directory / file).stat().st_size for file in files}
    index_bytes = sum(size for file, size in sizes.items() if not file.endswith(".npy"))
    return SpaceReport(built, total, on_disk, index_bytes, sum(sizes.values()), points, recall, seconds)


def _has(shard_set: ShardSet, shard: str, space: str) -> bool:
    return (shard_set.root / shard / f"{space}.rows.npy").exists()


def _is_ivf(index: Any) -> bool:
    import faiss

    return faiss.try_extract_index_ivf(index) is not None


def _write_vectors(
    shard_set: ShardSet,
    names: list[str],
    offsets: dict[str, int],
    counts: dict[str, int],
    space: str,
    config: SpaceConfig,
    keys_path: Path,
    vectors_path: Path,
) -> list[tuple[int, int]]:
    """Stream each shard's vectors (validated, normalised for cosine) into the space's ``.npy`` files.

    Returns each shard's row range in them. One shard is mapped at a time, so memory stays at one shard.
    """
    total = sum(counts.values())
    checker = Space(SpaceConfig(config.name, config.dim, config.metric, "Flat"))
    for path, shape, dtype in ((keys_path, (total,), np.int64), (vectors_path, (total, config.dim), np.float32)):
        np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
    bounds = []
    start = 0
    for name in names:
        if name not in counts:
            continue
        rows = np.load(shard_set.root / name / f"{space}.rows.npy", allow_pickle=False)
        source = np.load(shard_set.root / name / f"{space}.vectors.npy", mmap_mode="r", allow_pickle=False)
        keys_out = np.load(keys_path, mmap_mode="r+")
        vectors_out = np.load(vectors_path, mmap_mode="r+")
        stop = start + len(rows)
        keys_out[start:stop] = offsets[name] + rows
        for first in range(0, len(rows), _CHUNK):
            chunk = source[first : first + _CHUNK]
            vectors_out[start + first : start + first + len(chunk)] = checker.prepare(
                chunk, len(chunk), f"shard {name}"
            )
        keys_out.flush()
        vectors_out.flush()
        del keys_out, vectors_out, source
        bounds.append((start, stop))
        start = stop
    return bounds


def _sample_rows(vectors_path: Path, total: int, count: int, seed: int) -> np.ndarray:
    """`count` rows drawn uniformly without replacement across all shards (all rows when fewer).

    Read chunk by chunk with plain file I/O (see `read_rows`): gathering random rows from a mapping would
    fault in most of the file, which then counts as resident memory.
    """
    rows = np.sort(np.random.default_rng(seed).choice(total, size=min(count, total), replace=False))
    sample = np.empty((len(rows), np.load(vectors_path, mmap_mode="r").shape[1]), dtype=np.float32)
    filled = 0
    for first in range(0, total, _CHUNK):
        wanted = rows[np.searchsorted(rows, first) : np.searchsorted(rows, first + _CHUNK)]
        if len(wanted):
            sample[filled : filled + len(wanted)] = read_rows(vectors_path, first, first + _CHUNK)[wanted - first]
            filled += len(wanted)
    return sample


def _add_on_disk(
    trained: Any, directory: Path, files: list[str], bounds: list[tuple[int, int]], stem: str, work: Path
) -> None:
    """One part index per shard (the trained index, then that shard's vectors), merged into on-disk lists."""
    import faiss
    from faiss.contrib.ondisk import merge_ondisk

    template = work / f"{stem}.trained.faiss"
    faiss.write_index(trained, str(template))
    parts = []
    for number, (start, stop) in enumerate(bounds):
        part = faiss.read_index(str(template))
        _add_rows(part, directory / files[0], directory / files[1], start, stop)
        parts.append(str(work / f"{stem}.part{number}.faiss"))
        faiss.write_index(part, parts[-1])
        del part
    merge_ondisk(trained, parts, str(directory / f"{stem}{ondisk.DATA_SUFFIX}"))
    faiss.write_index(trained, str(directory / f"{stem}.faiss"))
    for part in [*parts, str(template)]:
        os.unlink(part)


def _recall(index: Any, keys_path: Path, vectors_path: Path, metric: str, queries: int, seed: int) -> float | None:
    """Mean recall@10 of `index` against exact search, for held-out stored vectors used as queries."""

    keys = np.load(keys_path, mmap_mode="r")
    total = len(keys)
    if queries <= 0 or total <= RECALL_K + 1:
        return None
    rows = np.sort(np.random.default_rng(seed).choice(total, size=min(queries, total), replace=False))
    vectors = np.load(vectors_path, mmap_mode="r")
    query = np.ascontiguousarray(vectors[rows])
    own = np.asarray(keys[rows])
    exact = exact_search(query, keys_path, vectors_path, metric, RECALL_K + 1)[1]
    found = index.search(query, RECALL_K + 1)[1]
    hits = 0
    for mine, truth, got in zip(own, exact, found):
        truth = [key for key in truth.tolist() if key != mine][:RECALL_K]
        got = [key for key in got.tolist() if key != mine][:RECALL_K]
        hits += len(set(truth) & set(got))
    return hits / (RECALL_K * len(own))


def exact_search(
    queries: np.ndarray, keys_path: Path, vectors_path: Path, metric: str, k: int, chunk: int = 262144
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-`k` (distances, keys) over the memory-mapped vectors of a space, chunk by chunk."""
    import faiss

    keys = np.load(keys_path, mmap_mode="r")
    largest = metric != "l2"
    heap = faiss.ResultHeap(len(queries), k, keep_max=largest)
    for start in range(0, len(keys), chunk):
        block = read_rows(vectors_path, start, start + chunk)
        distances, rows = faiss.knn(queries, block, min(k, len(block)), metric=indexing.faiss_metric(metric))
        found = np.where(rows >= 0, np.asarray(keys[start : start + chunk])[np.maximum(rows, 0)], -1)
        if found.shape[1] < k:  # a last block with fewer than k rows
            pad = ((0, 0), (0, k - found.shape[1]))
            distances = np.pad(distances, pad, constant_values=-np.inf if largest else np.inf)
            found = np.pad(found, pad, constant_values=-1)
        heap.add_result(np.ascontiguousarray(distances, dtype=np.float32), np.ascontiguousarray(found))
    heap.finalize()
    return heap.D, heap.I


def read_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a 2-D ``.npy`` file, read with plain file I/O.

    Pages of a mapping count in the process's resident set until it is unmapped, so scanning a whole mapped
    file looks like holding it in memory; rows read this way are freed as soon as they are dropped.
    """
    mapped = np.load(path, mmap_mode="r")
    dim, dtype, header = mapped.shape[1], mapped.dtype, mapped.offset
    stop = min(stop, len(mapped))
    del mapped
    with open(path, "rb") as handle:
        rows = np.fromfile(
            handle, dtype=dtype, count=max(0, stop - start) * dim, offset=header + start * dim * dtype.itemsize
        )
    return rows.reshape(-1, dim)


def _add_rows(index: Any, keys_path: Path, vectors_path: Path, start: int, stop: int) -> None:
    """Add rows [start, stop) of a space's files to `index`, one chunk in memory at a time."""
    keys = np.load(keys_path, mmap_mode="r")
    for first in range(start, stop, _CHUNK):
        last = min(stop, first + _CHUNK)
        index.add_with_ids(read_rows(vectors_path, first, last), np.ascontiguousarray(keys[first:last]))


__all__ = ["BuildReport", "SpaceReport", "build_store", "exact_search"]
