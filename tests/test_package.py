"""The package surface: fast import, pinned public names, the CLI and the examples, run as users run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mm_rag

ROOT = Path(__file__).resolve().parents[1]
MM_RAG = Path(sys.executable).with_name("mm-rag")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_public_names_are_pinned() -> None:
    assert sorted(mm_rag.__all__) == [
        "Context",
        "FilterError",
        "Hit",
        "IngestReport",
        "InvalidInputError",
        "MMRagError",
        "MediaError",
        "Modality",
        "MultimodalRetriever",
        "MultimodalStore",
        "OpenCLIPEmbedder",
        "Record",
        "Retrieved",
        "SpaceConfig",
        "StoreFormatError",
        "TextEmbedder",
        "UnknownSpaceError",
        "WhisperTranscriber",
        "build_context",
        "ingest",
        "make_id",
    ]
    for name in mm_rag.__all__:
        assert getattr(mm_rag, name) is not None


def test_import_is_light() -> None:
    code = (
        "import sys, json, mm_rag, mm_rag.embed, mm_rag.ingestion;"
        " print(json.dumps([m for m in ('faiss', 'torch', 'open_clip', 'whisper', 'av', 'PIL') if m in sys.modules]))"
    )
    result = run(sys.executable, "-X", "importtime", "-c", code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []  # heavy libraries load on first use, not at import
    # -X importtime lines read "import time: self | cumulative | name" (microseconds)
    cumulative = [int(line.split("|")[1]) for line in result.stderr.splitlines() if line.split("|")[-1].strip() == "mm_rag"]
    assert cumulative and cumulative[0] < 1_000_000


def test_make_id_is_stable_and_locator_sensitive() -> None:
    assert mm_rag.make_id(b"abc", "page=1") == mm_rag.make_id("abc", "page=1")
    assert mm_rag.make_id("abc", "page=1") != mm_rag.make_id("abc", "page=2")


def test_cli_help_demo_and_info(tmp_path: Path) -> None:
    help_text = run(str(MM_RAG), "--help")
    assert help_text.returncode == 0 and "demo" in help_text.stdout and "info" in help_text.stdout
    store = tmp_path / "store"
    demo = run(str(MM_RAG), "demo", "--store", str(store), "--count", "500")
    assert demo.returncode == 0, demo.stderr
    assert "added 500 records" in demo.stdout and "reopened" in demo.stdout
    info = run(str(MM_RAG), "info", str(store))
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["records"] == 500 - 10 and described["spaces"]["clip"]["vectors"] == 490


def test_cli_reports_user_mistakes_without_traceback(tmp_path: Path) -> None:
    result = run(str(MM_RAG), "info", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert "no mm-rag store" in result.stderr and "Traceback" not in result.stderr


def test_store_quickstart_example(tmp_path: Path) -> None:
    result = run(sys.executable, str(ROOT / "examples" / "store_quickstart.py"), str(tmp_path / "store"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[('photo-1', 1.0)]"
    assert lines[1] == "after upsert: Our trip to the sea. | clip vectors: 1"
    assert lines[2] == "reopened: 1 record(s): ['photo-1']"
