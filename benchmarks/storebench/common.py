"""What every section shares: the run's state (`Bench`), the synthetic data, timing, formatting and tables."""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mm_rag import MultimodalStore, Record

TAGS = ("news", "blog", "paper", "forum", "docs")
SELECTIVITIES = (0.001, 0.01, 0.1, 0.5)
POINTS_PER_CLUSTER = 100
CLUSTER_NOISE = 0.05  # per coordinate: a point's cosine to its centre is ~0.65 at dim 512
QUERY_NOISE = 0.03  # per coordinate: a query's cosine to the point it was made from is ~0.85 at dim 512
BUCKETS = 1000  # metadata["bucket"] = i % BUCKETS, so a bucket window of width w selects w / 1000 of the records


# --------------------------------------------------------------------------------------------------------------
# the run's state
# --------------------------------------------------------------------------------------------------------------
class Bench:
    """Configuration, data (vectors, queries) and results of one run, and the stores that section 1 builds and
    sections 2–4 reuse (`raw_flat`, `mm_store`/`mm_path`/`mm_save_times`, `lc_store`)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n, self.dim, self.k, self.repeats = args.n, args.dim, args.k, args.repeats
        self.work = Path(tempfile.mkdtemp(prefix="mm-rag-bench-", dir=args.workdir))
        self.results: dict[str, Any] = {
            "machine": machine_info(),
            "config": {
                "n": self.n,
                "dim": self.dim,
                "k": self.k,
                "repeats": self.repeats,
                "queries": args.queries,
                "quick": args.quick,
            },
        }
        rng = np.random.default_rng(args.seed)
        self.x: np.ndarray | None = clustered(rng, self.n, self.dim)
        # queries near stored vectors (so neighbourhoods are meaningful), re-normalised
        picks = rng.choice(self.n, size=args.queries, replace=False)
        q = self.x[picks] + QUERY_NOISE * rng.standard_normal((args.queries, self.dim), dtype=np.float32)
        self.queries = np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True), dtype=np.float32)
        self.buckets = np.arange(self.n) % BUCKETS
        self.row_of_id = {record_id(i): i for i in range(self.n)}
        # built by section 1 (add), used by sections 2-4
        self.raw_flat: faiss.IndexFlatIP | None = None
        self.mm_store: MultimodalStore | None = None
        self.mm_path: Path | None = None
        self.mm_save_times: list[float] = []
        self.lc_store: Any = None

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# timing and formatting
# --------------------------------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def p99(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values), 99))


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} us"


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}/s"


def fmt_ratio(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.2f}x" if value < 100 else f"{value:.0f}x"


def fmt_pct(value: float) -> str:
    return f"{value:+.1f} %"


def fmt_bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def print_table(title: str, headers: list[str], rows: list[list[str]], notes: list[str] = ()) -> None:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    print(f"\n== {title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths)))
    print(line)
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    for note in notes:
        print(f"   * {note}")
    sys.stdout.flush()


def json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------------------
def normalised(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def clustered(rng: np.random.Generator, n: int, dim: int, chunk: int = 100_000) -> np.ndarray:
    """`n` unit vectors around n/100 random centres (like real embeddings, unlike uniform noise, they have
    neighbourhoods, so HNSW recall means something). Cluster membership is independent of the metadata."""
    centres = normalised(rng, max(1, n // POINTS_PER_CLUSTER), dim)
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        block = centres[rng.integers(0, len(centres), hi - lo)]
        block += CLUSTER_NOISE * rng.standard_normal((hi - lo, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[lo:hi] = block
    return out


def record_id(i: int) -> str:
    return f"doc-{i:08d}"


def record_text(i: int) -> str:
    return f"Record {i}: a short passage of text that stands for a chunk, caption or transcript window."


def record_meta(i: int) -> dict[str, Any]:
    return {"bucket": i % BUCKETS, "tag": TAGS[i % len(TAGS)]}


def make_records(start: int, stop: int) -> list[Record]:
    return [Record(record_id(i), "text", text=record_text(i), metadata=record_meta(i)) for i in range(start, stop)]


def exact_topk(x: np.ndarray, rows: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    """Exact top-k row numbers among `rows` for each query (inner product on normalised vectors)."""
    truth = []
    sub = x[rows]
    for start in range(0, len(queries), 64):
        scores = queries[start : start + 64] @ sub.T
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        truth.extend({int(rows[j]) for j in row} for row in top)
    return truth


def langchain_store(dim: int):
    from langchain_community.docstore.in_memory import InMemoryDocstore
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy
    from langchain_core.embeddings import FakeEmbeddings

    return FAISS(
        FakeEmbeddings(size=dim),
        faiss.IndexFlatIP(dim),
        InMemoryDocstore(),
        {},
        distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
    )


# --------------------------------------------------------------------------------------------------------------
# files and the machine
# --------------------------------------------------------------------------------------------------------------
def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def evict(path: Path) -> None:
    """Drop `path`'s files from the OS page cache (posix_fadvise DONTNEED) so the next read is cold."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def meminfo(field: str) -> int | None:
    """A /proc/meminfo field (e.g. "MemTotal", "MemAvailable") in bytes; None where there is no /proc."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "sqlite": sqlite3.sqlite_version,
    }
    for module, name in (
        ("langchain_community", "langchain-community"),
        ("langchain_core", "langchain-core"),
        ("llama_index.core", "llama-index-core"),
    ):
        try:
            versions[name] = __import__(module, fromlist=["__version__"]).__version__
        except Exception:  # noqa: BLE001 - reporting only
            versions[name] = None
    from mm_rag import __version__

    versions["mm-rag"] = __version__
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "memory_bytes": meminfo("MemTotal"),
        "versions": versions,
    }
