"""Which Faiss index a space gets: the size/memory rule, and building an index from raw vectors.

The rule follows autofaiss: exact Flat while a linear scan is cheap, HNSW while full vectors fit the memory
budget, IVF-Flat beyond that, and OPQ + IVF-PQ once full vectors no longer fit. Any Faiss `index_factory`
string overrides it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from mm_rag.errors import InvalidInputError

if TYPE_CHECKING:
    import faiss

METRICS = ("cosine", "ip", "l2")
FLAT_LIMIT = 100_000
HNSW_LIMIT = 2_000_000
DEFAULT_MEMORY_BUDGET = 8 * 2**30
# Faiss warns below 39 training points per centroid; fewer gives poor clusters.
TRAIN_POINTS_PER_CENTROID = 39
MAX_TRAIN_POINTS = 256 * 1024
OPQ_TRAIN_POINTS = 32768
OPQ_ITERATIONS = 12


def choose_index(count: int, dim: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> str:
    """The Faiss factory string the size/memory rule picks for `count` vectors of `dim` floats."""
    full_vectors = count * dim * 4
    if count < FLAT_LIMIT:
        return "Flat"
    if count < HNSW_LIMIT and full_vectors * 1.3 <= memory_budget:
        return "HNSW32"
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(count), 256)))
    if full_vectors * 1.1 <= memory_budget:
        return f"IVF{nlist},Flat"
    m = _pq_subquantizers(dim)
    return f"OPQ{m},IVF{nlist},PQ{m}"


def tier(spec: str) -> int:
    """Rank of a factory string in the rule's order; an ``auto`` space only ever moves up."""
    if "IVF" in spec:
        return 3 if "PQ" in spec else 2
    return 1 if "HNSW" in spec else 0


def _pq_subquantizers(dim: int) -> int:
    """The largest divisor of `dim` at most dim/8 (so codes are ~16x smaller than floats), at least 1."""
    for m in range(max(1, dim // 8), 0, -1):
        if dim % m == 0:
            return m
    return 1


def faiss_metric(metric: str) -> int:
    import faiss

    if metric not in METRICS:
        raise InvalidInputError(f"unknown metric {metric!r}; expected one of {list(METRICS)}")
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def new_index(spec: str, dim: int, metric: str) -> faiss.Index:
    """An empty index for `spec`, able to take int64 ids (IVF natively, others through IndexIDMap2), searching
    with mm-rag's default breadth (`_default_search_breadth`)."""
    import faiss

    try:
        index = faiss.index_factory(dim, spec, faiss_metric(metric))
    except RuntimeError as error:
        raise InvalidInputError(f"invalid Faiss index_factory string {spec!r} for dim {dim}: {error}") from error
    if not isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)) and faiss.try_extract_index_ivf(index) is None:
        index = faiss.IndexIDMap2(index)
    _default_search_breadth(index)
    return index


def training_points(index: faiss.Index) -> int:
    """How many vectors `index` needs before it can be trained (0 when it needs no training)."""
    import faiss

    if index.is_trained:
        return 0
    centroids = 1
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        centroids = ivf.nlist
        pq = getattr(faiss.downcast_index(ivf), "pq", None)
        if pq is not None:
            centroids = max(centroids, pq.ksub)
    else:
        centroids = 256  # PQ / SQ style codecs
    return TRAIN_POINTS_PER_CENTROID * centroids


def compresses(spec: str | None) -> bool:
    """Whether an index of this factory string stores compressed codes (PQ, SQ…) rather than the vectors."""
    return spec is not None and any(codec in spec for codec in ("PQ", "SQ", "LSH", "RQ", "LSQ"))


def can_remove(index: faiss.Index) -> bool:
    """Whether `index` deletes in place (Flat, IVF, PQ) rather than needing tombstones (HNSW, NSG).

    Decided by type where the type tells: probing with an empty removal costs a pass over the whole index
    (36 ms for a 1M Flat space, half of opening it). Other types are probed.
    """
    import faiss

    inner = faiss.downcast_index(index)
    while isinstance(inner, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
        inner = faiss.downcast_index(inner.index)
    if isinstance(inner, (faiss.IndexIVF, faiss.IndexFlatCodes)):  # lists or one code array, compacted in place
        return True
    try:
        index.remove_ids(faiss.IDSelectorBatch(np.empty(0, dtype=np.int64)))
    except RuntimeError:
        return False
    return True


def search_parameters(index: faiss.Index, k: int, selectivity: float, selector: Any | None) -> Any:
    """Search parameters that widen the index's search by 1/selectivity, so a filter still finds k hits."""
    import faiss

    boost = 1.0 / max(selectivity, 1e-6)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        nprobe = min(ivf.nlist, max(ivf.nprobe, math.ceil(ivf.nprobe * boost)))
        return faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)
    inner = faiss.downcast_index(index.index) if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)) else index
    if isinstance(inner, faiss.IndexHNSW):
        base = max(inner.hnsw.efSearch, k)
        return faiss.SearchParametersHNSW(efSearch=min(4096, math.ceil(base * boost)), sel=selector)
    return faiss.SearchParameters(sel=selector)


def train_sample(vectors: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Up to `count` rows of `vectors` chosen at random (all rows when there are fewer)."""
    if len(vectors) <= count:
        return np.ascontiguousarray(vectors)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size=count, replace=False))
    return np.ascontiguousarray(vectors[rows])


def build(spec: str, dim: int, metric: str, keys: np.ndarray, vectors: np.ndarray) -> faiss.Index | None:
    """An index for `spec` holding `vectors` under `keys`, or None while there are too few to train it."""
    index = new_index(spec, dim, metric)
    needed = training_points(index)
    if needed:
        if len(vectors) < needed:
            return None
        train(index, train_sample(vectors, training_size(index, len(vectors))))
    add_in_chunks(index, keys, vectors)
    return index


def training_size(index: faiss.Index, available: int, wanted: int | None = None) -> int:
    """How many of `available` vectors train `index`: `wanted`, or enough for its centroids and at most
    `MAX_TRAIN_POINTS` (all of them when fewer)."""
    return min(available, wanted or max(training_points(index), min(MAX_TRAIN_POINTS, available)))


def train(index: faiss.Index, sample: np.ndarray) -> None:
    """Train `index` on `sample` the one way the store and `mm_rag.indexbuild` both do: no polysemous codes, an
    OPQ rotation trained within `OPQ_TRAIN_POINTS` and `OPQ_ITERATIONS`."""
    _skip_polysemous_training(index)
    _limit_opq_training(index)
    index.train(sample)


def _limit_opq_training(index: faiss.Index) -> None:
    """Bound the OPQ rotation's training: Faiss's defaults (50 iterations on up to 65,536 points) took ~5 min
    at d=512 on 2 cores, longer than the IVF and PQ training together; the rotation converges well before."""
    import faiss

    if isinstance(index, faiss.IndexPreTransform):
        for number in range(index.chain.size()):
            transform = faiss.downcast_VectorTransform(index.chain.at(number))
            if isinstance(transform, faiss.OPQMatrix):
                transform.max_train_points = min(transform.max_train_points, OPQ_TRAIN_POINTS)
                transform.niter = min(transform.niter, OPQ_ITERATIONS)


def _default_search_breadth(index: faiss.Index) -> None:
    """Faiss defaults (nprobe=1, efSearch=16) trade too much recall for speed; start from broader searches.

    Both values are saved inside the index file, so a reopened store searches the same way.
    """
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = min(ivf.nlist, max(8, ivf.nlist // 32))
        return
    inner = faiss.downcast_index(index.index) if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)) else index
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = 64


def _skip_polysemous_training(index: faiss.Index) -> None:
    """Faiss trains PQ codes for polysemous (Hamming) pre-filtering by default: ~15 s per build whatever the size,
    yet only searches that set ``polysemous_ht`` use it and mm-rag never does. ADC distances, so results, are unchanged.
    """
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    inner = faiss.downcast_index(ivf if ivf is not None else getattr(index, "index", index))
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False


def add_in_chunks(index: faiss.Index, keys: np.ndarray, vectors: np.ndarray, chunk: int = 65536) -> None:
    """Add without materialising more than `chunk` rows at a time (vectors may be memory-mapped)."""
    for start in range(0, len(keys), chunk):
        index.add_with_ids(
            np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32),
            np.ascontiguousarray(keys[start : start + chunk], dtype=np.int64),
        )


def index_keys(index: Any) -> np.ndarray:
    """The ids an `IndexIDMap`/`IndexIDMap2` holds, ascending (none for an index that keeps ids itself)."""
    import faiss

    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return np.sort(faiss.vector_to_array(index.id_map))
    return np.empty(0, dtype=np.int64)


def bitmap_selector(keys: np.ndarray, keep_alive: list[Any]) -> Any:
    """An O(1)-lookup selector over int64 keys (Faiss reads the bitmap in place: keep it alive)."""
    import faiss

    size = int(keys.max()) + 1 if len(keys) else 1
    mask = np.zeros(size, dtype=bool)
    mask[keys] = True
    bitmap = np.packbits(mask, bitorder="little")
    keep_alive.append(bitmap)
    selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
    keep_alive.append(selector)
    return selector


__all__ = [
    "METRICS",
    "bitmap_selector",
    "build",
    "can_remove",
    "choose_index",
    "index_keys",
    "new_index",
    "tier",
    "train",
    "training_points",
    "training_size",
]
