"""The package surface: fast import, pinned public names, the CLI and the examples, run as users run them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import mm_rag

ROOT = Path(__file__).resolve().parents[1]
MM_RAG = Path(sys.executable).with_name("mm-rag")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


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
        "ReadOnlyStoreError",
        "Record",
        "Retrieved",
        "SpaceConfig",
        "StoreFormatError",
        "StoreLockedError",
        "StoreWriteError",
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


def test_demo_ingests_the_example_media_and_answers_without_clip_weights(tmp_path: Path) -> None:
    """The README's main job, as run here: no model hub, so no CLIP weights; it says so and goes on."""
    store = tmp_path / "store"
    demo = run(str(MM_RAG), "demo", "--store", str(store))
    assert demo.returncode == 0, demo.stderr
    out = demo.stdout
    assert "clip model (images and video keyframes): not available here, continuing without it" in out
    # The 4 drawn pictures wait for a CLIP model; the screenshot, the scan and the slides' picture are read by OCR.
    assert "8 added, 0 updated, 0 unchanged, 4 skipped, 0 failed" in out
    assert "- skipped: images/red-circle.jpg: image: no image embedder (CLIP) configured, and no text found by OCR" in out
    fireworks = out.split('"When do the fireworks start?"')[1].splitlines()[1]
    # the spoken moment, timed: a short window holding "The fireworks start at ten … on Saturday" (4.9-8.1 s)
    start, end = map(float, re.search(r"(\d+\.\d)-\s*(\d+\.\d)s", fireworks).groups())
    assert "audio audio/planning-meeting.ogg" in fireworks and start <= 4.9 and end >= 8.1 and end - start <= 12
    maps = out.split('"Which room has the old maps?"')[1].splitlines()[1]
    assert "museum" in maps
    letter = out.split('"When does the library close on Fridays?"')[1].splitlines()[1]
    assert "text  docs/scanned-letter.pdf" in letter and "Harbour Library" in letter  # read from a scan by OCR
    invoice = out.split('"What is the total of invoice INV-2024-0413?"')[1].splitlines()[1]
    assert "image images/invoice-screenshot.png" in invoice and "INV-2024-0413" in invoice
    site_map = out.split('"Show me the site map of the food stalls"')[1].splitlines()[1]
    assert "image docs/festival-plan.pptx p.2" in site_map  # the picture on slide 2, found by its words
    info = run(str(MM_RAG), "info", str(store))
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["spaces"]["text"]["vectors"] == 11  # two-sentence windows: 2 + 1 for the speech


def test_demo_with_clip_weights_searches_pictures_too(tmp_path: Path, tiny_clip_paths) -> None:
    demo = run(str(MM_RAG), "demo", "--clip-model", str(tiny_clip_paths.config),
               "--clip-pretrained", str(tiny_clip_paths.checkpoint))  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    assert "not available" not in demo.stdout and "12 added" in demo.stdout
    red = demo.stdout.split('pictures of "a red circle"')[1].splitlines()[1]
    assert "images/red-circle.jpg" in red
    by_image = demo.stdout.split("query by image blue-square.jpg")[1].splitlines()[1]
    assert "images/blue-square.jpg" in by_image


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


def test_shared_store_example(tmp_path: Path) -> None:
    result = run(sys.executable, str(ROOT / "examples" / "shared_store.py"), str(tmp_path / "store"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "reader sees 0 records",
        "reader sees 2 records: ['beach', 'harbour']",
        "reader sees 3 records: ['beach', 'forest', 'harbour']",
        "generation 4 holds ['beach', 'forest']",
    ]


def test_document_share_example(tmp_path: Path) -> None:
    result = run(sys.executable, str(ROOT / "examples" / "document_share.py"), str(tmp_path / "store"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "3 added, 0 updated, 0 unchanged, 0 skipped, 0 failed, 0 pruned; 5 records written",
        "invoice: invoice-screenshot.png, read by tesseract",
        "picture: slide 2 of festival-plan.pptx (ppt/media/image1.png)",
        ("[1] picture (page 2) in docs/festival-plan.pptx: Site map of the stage and the food stalls Site map: the"
        " stage by the lighthouse, food stalls along the quay"),
        "with 1 picture(s) for the model: image/jpeg",
    ]
