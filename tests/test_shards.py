"""Embedding shards: the layout round-trips, writes are atomic, bad input and foreign files are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mm_rag import InvalidInputError, Record, StoreFormatError
from mm_rag.shards import MANIFEST, SUCCESS, ShardSet, SpaceInfo

CLIP = {"kind": "open_clip", "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}


def records(n: int, prefix: str) -> list[Record]:
    return [Record(f"{prefix}{i}", "image" if i % 2 else "text", text=None if i % 2 else f"t{i}", uri=f"/m/{i}.jpg",
                   metadata={"i": i, "tags": ["a", "b"]}, doc_id=f"doc{i // 2}", content_hash=f"h{i}")
            for i in range(n)]  # fmt: skip


def test_shards_round_trip_records_rows_vectors_and_failures(tmp_path: Path) -> None:
    shards = ShardSet(tmp_path / "out")
    shards.declare_spaces({"clip": SpaceInfo(4, "cosine", CLIP), "text": SpaceInfo(3)})
    first = records(5, "a")
    clip = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    shards.write("shard-00001", first, {"clip": (range(5), clip), "text": ([0, 2, 4], np.ones((3, 3)))},
                 failed={"/m/bad.jpg": "corrupt"})  # fmt: skip
    shards.write("shard-00000", records(2, "b"), {"clip": ([1], np.zeros((1, 4)))})
    assert shards.finished() == ["shard-00000", "shard-00001"]
    shard = shards.read("shard-00001")
    assert shard.records == first and shard.failed == {"/m/bad.jpg": "corrupt"}
    np.testing.assert_array_equal(shard.vectors["clip"][1], clip)
    assert shard.vectors["text"][0].tolist() == [0, 2, 4]
    assert [s.name for s in shards] == ["shard-00000", "shard-00001"]
    assert "text" not in shards.read("shard-00000").vectors
    assert shards.spaces["clip"] == SpaceInfo(4, "cosine", CLIP)
    mapped = shards.read("shard-00001", mmap=True).vectors["clip"][1]
    assert isinstance(mapped, np.memmap)


def test_unfinished_and_temporary_shards_are_ignored_then_removed(tmp_path: Path) -> None:
    shards = ShardSet(tmp_path)
    shards.declare_spaces({"clip": SpaceInfo(2)})
    shards.write("done", records(1, "x"), {"clip": ([0], np.ones((1, 2)))})
    (tmp_path / ".tmp-half-abc").mkdir()
    (tmp_path / "killed").mkdir()  # a shard whose writer died before _SUCCESS
    (tmp_path / "killed" / "records.parquet").write_bytes(b"partial")
    assert shards.finished() == ["done"]
    shards.remove_debris()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done", MANIFEST]
    with pytest.raises(StoreFormatError, match=SUCCESS):
        shards.read("killed")


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        ({"nope": ([0], np.ones((1, 2)))}, "not declared"),
        ({"clip": ([0], np.ones((1, 3)))}, r"needs \(1, 2\)"),
        ({"clip": ([0, 1], np.ones((1, 2)))}, r"needs \(2, 2\)"),
        ({"clip": ([1, 0], np.ones((2, 2)))}, "ascending"),
        ({"clip": ([5], np.ones((1, 2)))}, "ascending rows"),
    ],
)
def test_bad_shards_are_refused_and_leave_nothing(tmp_path: Path, vectors, message) -> None:
    shards = ShardSet(tmp_path)
    shards.declare_spaces({"clip": SpaceInfo(2)})
    with pytest.raises(InvalidInputError, match=message):
        shards.write("s", records(2, "r"), vectors)
    assert shards.finished() == [] and sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST]


def test_spaces_must_agree_and_foreign_manifests_are_refused(tmp_path: Path) -> None:
    shards = ShardSet(tmp_path)
    shards.declare_spaces({"clip": SpaceInfo(2, model=CLIP)})
    shards.declare_spaces({"clip": SpaceInfo(2, model=CLIP), "text": SpaceInfo(3)})  # adding a space is fine
    assert set(shards.spaces) == {"clip", "text"}
    with pytest.raises(InvalidInputError, match="was written as"):
        shards.declare_spaces({"clip": SpaceInfo(2, model=CLIP | {"pretrained": "openai"})})
    with pytest.raises(InvalidInputError, match="invalid shard name"):
        shards.write("../escape", [], {})
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(StoreFormatError, match="not an mm-rag shards manifest"):
        _ = shards.spaces
    with pytest.raises(StoreFormatError, match="no embedding shards"):
        ShardSet(tmp_path / "empty").manifest()
