"""Two pieces of one write run side by side: NumPy, Faiss, SQLite (inside a statement) and file writes let go
of the GIL, so on two cores they overlap."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

A = TypeVar("A")
B = TypeVar("B")


def both(first: Callable[[], A], second: Callable[[], B], threaded: bool = True) -> tuple[A, B]:
    """`first()` and `second()`, the second on a thread of its own when `threaded`; waits for both.

    `first`'s error is raised before `second`'s, as when they run one after the other (without `threaded`:
    a thread costs about 0.6 ms, more than it saves on small work).
    """
    if not threaded:
        return first(), second()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mm-rag") as pool:
        later = pool.submit(second)
        done = first()  # should it raise, leaving the block still waits for `second`
    return done, later.result()
