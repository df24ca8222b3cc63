"""Locks: threads of one process (`ReadWriteLock`) and processes sharing a store directory (`StoreWriteLock`)."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mm_rag.errors import ReadOnlyStoreError, StoreLockedError

logger = logging.getLogger("mm_rag.store")
# A writer that has waited this long says so once (a command that seems to hang should tell why).
_SAY_WAITING_AFTER = 1.0


class ReadWriteLock:
    """Many concurrent searches, one writer at a time, writers not starved."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writer: int | None = None
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._writer == me:  # a writer may read what it is writing
            yield
            return
        with self._condition:
            while self._writer is not None or self._writers_waiting:
                self._condition.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                if not self._readers:
                    self._condition.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        me = threading.get_ident()
        if self._writer == me:
            yield
            return
        with self._condition:
            self._writers_waiting += 1
            while self._writer is not None or self._readers:
                self._condition.wait()
            self._writers_waiting -= 1
            self._writer = me
        try:
            yield
        finally:
            with self._condition:
                self._writer = None
                self._condition.notify_all()


# Locks held in this process: a child made by fork() (multiprocessing, a server's workers) inherits their
# descriptors and with them the lock itself, which would then outlive the parent's release. The child drops
# its copies at once.
_HELD: weakref.WeakSet[StoreWriteLock] = weakref.WeakSet()


def _drop_inherited_locks() -> None:
    for lock in list(_HELD):
        lock._forget()


os.register_at_fork(after_in_child=_drop_inherited_locks)


class StoreWriteLock:
    """The inter-process write lock of a store: an exclusive ``flock`` on ``<store>/write.lock``.

    The kernel drops a ``flock`` when the descriptor holding it closes, so a process that dies, even by
    SIGKILL, never leaves a stale lock behind: the next writer proceeds at once. Locks are per open file, so
    two handles of one store in the same process exclude each other as two processes do. The holder writes
    its pid and command line into the file, which is what a writer that gives up waiting reports.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, timeout: float, store: Path) -> None:
        """Take the lock, waiting at most `timeout` seconds.

        Raises:
            StoreLockedError: still held by another process (or handle) after `timeout`, naming the holder.
            ReadOnlyStoreError: the lock file cannot be created (read-only file system or folder).
        """
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise ReadOnlyStoreError(
                    f"store {store} is read-only ({error.strerror}): it can be searched but not changed"
                ) from error
            raise
        started = time.monotonic()
        deadline = started + timeout
        delay = 0.002
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if not said and now - started >= _SAY_WAITING_AFTER and now < deadline:
                    said = True
                    logger.warning(
                        "store %s is being written by %s; waiting up to %g s more", store,
                        _describe(_read_holder(fd)), deadline - now,
                    )  # fmt: skip
                if now >= deadline:
                    holder = _describe(_read_holder(fd))
                    os.close(fd)
                    raise StoreLockedError(
                        f"store {store} is being written by {holder}; gave up after waiting {timeout:g} s"
                        " (a writer holds the lock from its first change until it saves or closes)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            except BaseException:
                os.close(fd)
                raise
        holder = {"pid": os.getpid(), "since": time.time(), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        _HELD.add(self)

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now (pid, since, command) when another process or handle does, else None."""
        if self._fd is not None:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None  # no lock file: nobody ever wrote here
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted only when no writer holds it
            return None
        except BlockingIOError:
            return _read_holder(fd) or {}
        finally:
            os.close(fd)  # also drops the shared lock, if granted

    def release(self) -> None:
        """Let the next writer in (idempotent)."""
        fd, self._fd = self._fd, None
        _HELD.discard(self)
        if fd is not None:
            try:
                os.ftruncate(fd, 0)  # a waiter must not name a holder that has gone
            finally:
                os.close(fd)  # closing the descriptor releases the flock

    def _forget(self) -> None:
        """In a forked child: close the inherited descriptor without touching the parent's lock file."""
        fd, self._fd = self._fd, None
        if fd is not None:
            # The parent's lock and this descriptor share one open file description: closing our copy is
            # safe (the lock goes only with the last descriptor), and unlocking would release the parent's.
            os.close(fd)


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None


def _describe(holder: dict[str, Any] | None) -> str:
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return "another process"
    pid = holder["pid"]
    who = f"process {pid}" + (" (this process: another handle of the store)" if pid == os.getpid() else "")
    since = holder.get("since")
    if isinstance(since, (int, float)):
        who += f" since {time.strftime('%H:%M:%S', time.localtime(since))}"
    command = holder.get("command")
    return f"{who} ({command})" if command else who
