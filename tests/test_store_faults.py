"""Faults while writing a store: a full disk at every step of a save, and a read-only store directory.

A full disk is shown three ways: an injected ``ENOSPC`` at each file a save writes, SQLite's own "database or
disk is full" (a page limit), and a real, small tmpfs that runs out of space, mounted in a private mount
namespace (so the test needs no mount left behind). The read-only case bind-mounts a store read-only there.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import pytest
from fixtures.store_process import add, check, vector

from mm_rag import MultimodalStore, ReadOnlyStoreError, Record, StoreWriteError
from mm_rag.store import lexical, segments
from mm_rag.store import space as space_module
from mm_rag.store import store as store_module
from mm_rag.store.catalog import Catalog
from mm_rag.store.space import Space

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "store"
    with MultimodalStore(path) as store:
        add(store, [f"old-{i}" for i in range(50)])
        store.save()
    return path


def _disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _faiss_disk_full(index: object, path: str) -> None:
    Path(path).write_bytes(b"partial")  # what a write cut short leaves behind
    raise RuntimeError(f"Error in faiss::FileIOWriter: write error in {path}: 0 != 1 (No space left on device)")


@pytest.mark.parametrize("step", ["segment", "index"])
def test_a_full_disk_during_save_keeps_the_last_commit_and_the_changes(saved, monkeypatch, step) -> None:
    """Writing a new segment (the common save) or the whole space (here: the new vectors join the main index
    at once) fails for want of space: the last commit stays, and the changes are saved once there is room."""
    store = MultimodalStore.open(saved)
    with monkeypatch.context() as patch:
        if step == "index":
            patch.setattr(space_module, "FOLD_MIN", 0)
        add(store, [f"new-{i}" for i in range(20)])
    store.delete(["old-0"])
    with monkeypatch.context() as patch:
        if step == "segment":
            patch.setattr(segments, "write_array", _disk_full)
        else:
            patch.setattr(faiss, "write_index", _faiss_disk_full)
        with pytest.raises(StoreWriteError, match="No space left on device") as raised:
            store.save()
    assert raised.value.errno == errno.ENOSPC
    assert "(generation 1) is intact" in str(raised.value) and "kept" in str(raised.value)
    assert not list((saved / "spaces").glob("*.2.*"))  # nothing of the failed save is left
    with MultimodalStore.open(saved) as other:  # another process would see exactly the last commit
        assert other.count() == 50 and check(other)["problems"] == [] and other.info()["generation"] == 1
    assert store.unsaved and store.count() == 69  # the changes are kept: saving again, with space, works
    store.save()
    store.close()
    with MultimodalStore.open(saved) as reopened:
        assert reopened.count() == 69 and check(reopened)["problems"] == [] and reopened.info()["generation"] == 2


def test_sqlite_running_out_of_pages_loses_no_commit(saved) -> None:
    store = MultimodalStore.open(saved)
    pages = store._generations.catalog._db.execute("PRAGMA page_count").fetchone()[0]
    add(store, [f"big-first-{i}" for i in range(200)])
    store.save()
    grown = store._generations.catalog._db.execute("PRAGMA page_count").fetchone()[0]
    # SQLite's own "disk is full", about two and a half batches from now
    store._generations.catalog._db.execute(f"PRAGMA max_page_count = {grown + (grown - pages) * 5 // 2}")
    with pytest.raises(StoreWriteError, match="full") as raised:
        for batch in range(50):  # until the catalog cannot grow
            add(store, [f"big-{batch}-{i}" for i in range(200)])
            store.save()
    assert raised.value.errno == errno.ENOSPC and "(generation" in str(raised.value)
    committed = store.info()["generation"]
    with MultimodalStore.open(saved) as other:
        result = check(other)
        assert result["problems"] == [] and other.info()["generation"] == committed
        assert {f"old-{i}" for i in range(50)} <= set(result["versions"])
    assert committed > 1  # some batches fitted before the catalog was full
    if store.unsaved:  # SQLite kept the transaction: with room again, the same changes save
        assert "are kept" in str(raised.value)
        store._generations.catalog._db.execute("PRAGMA max_page_count = 1000000")
        store.save()
        assert store.info()["generation"] == committed + 1
    expected = store.count()
    store.close()
    with MultimodalStore.open(saved) as reopened:
        result = check(reopened)
        assert result["problems"] == [] and result["count"] == expected


_NAMESPACE = ["unshare", "--mount", "--propagation", "private"]
if os.geteuid() != 0:
    _NAMESPACE = ["unshare", "--user", "--map-root-user", "--mount"]


def run_in_mount_namespace(script: str, *args: object) -> dict:
    """Run `script` in a private mount namespace (mounts vanish with it); it prints one JSON line last."""
    command = [*_NAMESPACE, sys.executable, "-c", textwrap.dedent(script), *map(str, args)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


_FULL_TMPFS = """
    import errno, json, subprocess, sys
    import numpy as np
    sys.path.insert(0, "tests")
    from fixtures.store_process import add, check
    from mm_rag import MultimodalStore, StoreWriteError

    mount = sys.argv[1]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mount], check=True)
    store = MultimodalStore(f"{mount}/store")
    add(store, [f"old-{i}" for i in range(100)])
    store.save()
    outcome = {}
    try:
        add(store, [f"big-{i}" for i in range(20000)])  # far more than 2 MiB of vectors and index
        store.save()
        outcome["failed"] = None
    except StoreWriteError as error:
        outcome["failed"] = {"errno": error.errno, "message": str(error)}
    store.close()
    with MultimodalStore.open(f"{mount}/store") as reopened:
        outcome["after"] = check(reopened)
        add(reopened, ["later-0"])  # room for a small change remains
        reopened.save()
    with MultimodalStore.open(f"{mount}/store") as reopened:
        outcome["later"] = check(reopened)
    print(json.dumps(outcome))
"""


def test_a_real_full_file_system_keeps_the_last_commit(tmp_path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    outcome = run_in_mount_namespace(_FULL_TMPFS, mount)
    failed = outcome["failed"]
    assert failed is not None and failed["errno"] == errno.ENOSPC, failed
    assert "(generation 1) is intact" in failed["message"]
    assert outcome["after"]["problems"] == [] and outcome["after"]["count"] == 100
    assert outcome["later"]["problems"] == [] and outcome["later"]["count"] == 101


_READ_ONLY = """
    import json, subprocess, sys
    sys.path.insert(0, "tests")
    from fixtures.store_process import add, check, vector
    from mm_rag import MultimodalStore, ReadOnlyStoreError

    path = sys.argv[1]
    subprocess.run(["mount", "--bind", path, path], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", path], check=True)
    outcome = {}
    with MultimodalStore.open(path) as store:
        outcome["read_only"] = store.read_only
        outcome["check"] = check(store)
        outcome["nearest"] = store.search("s", vector("old-7"), k=1)[0].record.id
        errors = []
        for change in (lambda: add(store, ["new-1"]), lambda: store.delete(["old-1"]), lambda: store.clear()):
            try:
                change()
                errors.append(None)
            except ReadOnlyStoreError as error:
                errors.append(str(error))
        outcome["errors"] = errors
        store.save()  # nothing to save: not an error
        store.save(sys.argv[2])  # a writable copy
    with MultimodalStore.open(sys.argv[2]) as copy:
        add(copy, ["new-1"])
        copy.save()
        outcome["copy"] = check(copy)
    print(json.dumps(outcome))
"""


def test_a_read_only_store_searches_and_refuses_changes_clearly(saved, tmp_path) -> None:
    outcome = run_in_mount_namespace(_READ_ONLY, saved, tmp_path / "copy")
    assert outcome["read_only"] is True and outcome["nearest"] == "old-7"
    assert outcome["check"]["problems"] == [] and outcome["check"]["count"] == 50
    assert all(error and "read-only" in error and str(saved) in error for error in outcome["errors"])
    assert outcome["copy"]["problems"] == [] and outcome["copy"]["count"] == 51
    with MultimodalStore.open(saved) as store:  # outside the namespace the store was never touched
        assert store.count() == 50 and store.info()["generation"] == 1


def test_a_read_only_error_names_the_store(saved, monkeypatch) -> None:
    """Where the folder's permissions forbid writing (checked with os.access), without a mount."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK and real_access(path, mode))
    with MultimodalStore.open(saved) as store:
        assert store.read_only and store.count() == 50
        with pytest.raises(ReadOnlyStoreError, match=f"store {saved} is read-only"):
            store.upsert([Record("x-1", "text")], {"s": vector("x-1")[None]})


@pytest.mark.parametrize("threaded", [True, False], ids=["vectors-beside", "one-thread"])
@pytest.mark.parametrize("failing", ["catalog", "vectors"])
def test_an_add_failing_midway_leaves_neither_its_rows_nor_its_vectors(saved, monkeypatch, threaded, failing) -> None:
    """A write that fails after the catalog rows, or some of the vectors, went in is taken out whole; the
    changes made before it stay, and the store saves and reopens consistent (catalog, indexes, vectors)."""
    monkeypatch.setattr(store_module, "_THREADED_ADD", 1 if threaded else 10**9)
    store = MultimodalStore.open(saved)
    add(store, ["kept-1", "kept-2"])
    if failing == "catalog":  # a statement after the rows fails, as a full disk or an I/O error would make it
        insert = Catalog.insert

        def insert_then_fail(self, *args):
            insert(self, *args)
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(Catalog, "insert", insert_then_fail)
        expected: type[BaseException] = StoreWriteError
    else:  # the second space fails after the first took its vectors, and after taking some itself
        space_add = Space.add

        def add_then_fail(self, keys, vectors):
            space_add(self, keys, vectors)
            if self.config.name == "t":
                raise MemoryError("no memory for the index")

        monkeypatch.setattr(Space, "add", add_then_fail)
        expected = MemoryError
    with pytest.raises(expected):
        add(store, ["bad-2", "bad-4"])
    monkeypatch.undo()
    _assert_consistent(store, {*(f"old-{i}" for i in range(50)), "kept-1", "kept-2"})
    store.save()
    store.close()
    with MultimodalStore.open(saved) as reopened:
        _assert_consistent(reopened, {*(f"old-{i}" for i in range(50)), "kept-1", "kept-2"})


def _assert_consistent(store: MultimodalStore, ids: set[str]) -> None:
    result = check(store)
    assert result["problems"] == [] and set(result["versions"]) == ids
    assert store.count("s") == len(ids) and store.count("t") == sum(int(i.rsplit("-")[1]) % 2 == 0 for i in ids)
    # the keyword index: each record by its own id ("record", in every text, carries no information to match)
    assert {hit.record.id for hit in store.search_text(" ".join(sorted(ids)), k=100)} == ids
    assert {r.id for r in store.find({"version": 0})} == ids  # the metadata index
    store._generations.catalog._db.execute(lexical.CHECK)  # FTS5 agrees with its content
