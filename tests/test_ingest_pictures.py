"""Pictures and their words, end to end with real models and a real OCR engine, on a machine without CLIP:
text inside screenshots and scanned pages, pictures inside slide decks, damaged images reported, library
noise captured, and every skipped or failed file listed with its reason."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import mediagen

from mm_rag import MultimodalStore, TextEmbedder, WhisperTranscriber, ingest
from mm_rag.context import build_context
from mm_rag.embed.ocr import load_ocr
from mm_rag.retrieval import MultimodalRetriever

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / "examples" / "media"
sys.path.insert(0, str(ROOT / "examples"))
import make_media


@pytest.fixture(scope="module")
def text_embedder(minilm_dir: Path) -> TextEmbedder:
    return TextEmbedder(minilm_dir, device="cpu")


@pytest.fixture(scope="module")
def transcriber(whisper_ct2_dir: Path) -> WhisperTranscriber:
    return WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu", language="en")


@pytest.fixture(scope="module")
def ocr():
    return load_ocr()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The example scan, screenshot and slides; a photo without text; damaged pictures; UTF-16 text; bad MP3."""
    root = tmp_path_factory.mktemp("pictures")
    for name in ("docs/scanned-letter.pdf", "images/invoice-screenshot.png", "docs/festival-plan.pptx",
                 "images/red-circle.jpg"):  # fmt: skip
        shutil.copyfile(MEDIA / name, root / Path(name).name)
    whole = mediagen.write_image(root / "whole.jpg", "JPEG", (64, 64))
    mediagen.truncated_copy(whole, root / "truncated.jpg")
    whole.unlink()
    (root / "empty.png").touch()
    mediagen.bomb_png(root / "bomb.png")
    (root / "notes-utf16.txt").write_bytes("Minutes: the tide table hangs by the harbour office.\n".encode("utf-16"))
    rng = np.random.default_rng(1)  # an MPEG frame header, then garbage: libmpg123 complains on stderr
    (root / "broken.mp3").write_bytes(b"\xff\xfb\x90\x64" + rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    return root


@pytest.fixture(scope="module")
def ingested(folder, tmp_path_factory, text_embedder, transcriber, ocr):
    store = MultimodalStore(tmp_path_factory.mktemp("store") / "store")
    report = ingest(folder, store, text=text_embedder, transcriber=transcriber, ocr=ocr)
    yield store, report
    store.close()


def _records(store: MultimodalStore, name: str) -> list:
    return store.find({"file_name": name})


def test_codes_and_amounts_in_a_screenshot_are_found_by_keywords(ingested) -> None:
    store, _ = ingested
    for query in ("INV-2024-0413", "1,284.50", "stage lighting rental"):
        hits = store.search_text(query, k=3)
        assert hits and hits[0].record.metadata["file_name"] == "invoice-screenshot.png", query
    [record] = _records(store, "invoice-screenshot.png")
    assert record.modality == "image" and "INV-2024-0413" in record.text and "EUR 1,284.50" in record.text
    assert record.metadata["ocr_engine"] in ("rapidocr", "tesseract") and 0.5 < record.metadata["ocr_confidence"] <= 1


def test_a_scanned_page_becomes_a_passage_with_its_page_number(ingested, text_embedder) -> None:
    store, _ = ingested
    [page] = _records(store, "scanned-letter.pdf")
    assert page.modality == "text" and page.metadata["page"] == 1 and page.metadata["mime_type"] == "application/pdf"
    assert "closes at six in the evening on Fridays" in " ".join(page.text.split())
    assert "ocr_engine" in page.metadata
    found = MultimodalRetriever(store, text=text_embedder).retrieve("When does the library close on Fridays?")
    assert found[0].record.id == page.id


def test_a_picture_inside_slides_is_linked_to_its_slide_and_found_by_its_words(ingested, text_embedder) -> None:
    store, _ = ingested
    records = _records(store, "festival-plan.pptx")
    [picture] = [record for record in records if record.modality == "image"]
    assert picture.doc_id == records[0].doc_id and picture.doc_id.endswith("festival-plan.pptx")
    assert picture.metadata["page"] == 2 and picture.metadata["picture"].startswith("ppt/media/")
    assert "food stalls along the quay" in picture.metadata["caption"]
    retriever = MultimodalRetriever(store, text=text_embedder, text_k=0, audio_k=0, video_k=0)
    assert retriever.retrieve("site map of the food stalls")[0].record.id == picture.id
    context = build_context(retriever.retrieve("site map of the food stalls")[:1])
    assert context.text.startswith("[1] picture (page 2) in ") and "lighthouse" in context.text
    [image] = context.images
    assert image.mime_type == "image/jpeg" and image.citation == 1 and len(image.data) > 1000


def test_a_photo_without_text_gets_no_words_and_is_skipped_without_clip(ingested, folder) -> None:
    _, report = ingested
    reason = report.skipped[str(folder / "red-circle.jpg")]
    assert reason == "image: no image embedder (CLIP) configured, and no text found by OCR"


def test_damaged_pictures_are_verified_and_reported_without_clip(ingested, folder) -> None:
    _, report = ingested
    reasons = {name: report.failed[str(folder / name)] for name in ("truncated.jpg", "empty.png", "bomb.png")}
    assert "truncated" in reasons["truncated.jpg"] and reasons["empty.png"] == "empty file"
    assert "pixel limit" in reasons["bomb.png"] or "decompression bomb" in reasons["bomb.png"]
    for name, reason in reasons.items():
        assert str(folder) not in reason, (name, reason)  # the report names the file once, in front


def test_utf16_text_is_text_not_audio(ingested) -> None:
    store, _ = ingested
    [record] = _records(store, "notes-utf16.txt")
    assert record.modality == "text" and record.text.startswith("Minutes: the tide table")


def test_what_a_decoder_prints_goes_to_the_report(ingested, folder) -> None:
    _, report = ingested
    reason = report.failed[str(folder / "broken.mp3")]
    assert "library output: Note: Illegal Audio-MPEG-Header" in reason
    assert reason.count(str(folder)) == 0


def test_the_report_lists_every_skipped_and_failed_file(ingested, folder) -> None:
    _, report = ingested
    lines = report.lines()
    for name in ("red-circle.jpg", "truncated.jpg", "empty.png", "bomb.png", "broken.mp3"):
        [line] = [line for line in lines if line.split(": ")[1] == str(folder / name)]
        assert line.startswith(("skipped: ", "failed: "))
    assert report.summary().startswith("4 added, 0 updated, 0 unchanged, 1 skipped, 4 failed")


def test_reingesting_a_changed_deck_replaces_its_pictures_and_deleting_removes_them(
    tmp_path, text_embedder, ocr
) -> None:
    deck, site_map = tmp_path / "plan.pptx", tmp_path / "map.png"
    make_media.site_map(site_map)
    make_media.festival_slides(deck, site_map)
    store = MultimodalStore()
    ingest(deck, store, text=text_embedder, ocr=ocr)
    [before] = store.find({"modality": "image"})
    from PIL import Image

    Image.open(site_map).rotate(90).save(site_map)  # another picture in the same place
    make_media.festival_slides(deck, site_map)
    report = ingest(deck, store, text=text_embedder, ocr=ocr)
    assert report.updated == [str(deck)]
    [after] = store.find({"modality": "image"})
    assert after.id != before.id and store.get([before.id]) == [] and after.doc_id == before.doc_id
    assert store.delete_doc(after.doc_id) == 3  # two slides and the picture
    assert store.find({"doc_id": after.doc_id}) == []
    store.close()


def test_a_scanned_pdf_without_ocr_is_skipped_with_the_reason(tmp_path, text_embedder) -> None:
    store = MultimodalStore()
    report = ingest(MEDIA / "docs" / "scanned-letter.pdf", store, text=text_embedder)
    [reason] = report.skipped.values()
    assert reason.startswith("pdf: 1 page(s) without a text layer not read: no OCR engine")
    store.close()


def test_with_clip_a_picture_has_its_image_and_its_words_embedded(tmp_path, tiny_clip, text_embedder, ocr) -> None:
    store = MultimodalStore()
    ingest([MEDIA / "images" / "invoice-screenshot.png", MEDIA / "docs" / "festival-plan.pptx"], store,
           clip=tiny_clip, text=text_embedder, ocr=ocr)  # fmt: skip
    pictures = store.find({"modality": "image"})
    assert len(pictures) == 2
    ids = [record.id for record in pictures]
    assert set(store.vectors(tiny_clip.space, ids)) == set(ids)  # the image, from the CLIP image tower
    assert set(store.vectors(text_embedder.space, ids)) == set(ids)  # the words, from the text embedder
    slides = [record.id for record in store.find({"modality": "text"})]
    assert set(store.vectors(tiny_clip.space, slides)) == set(slides)  # slide text: CLIP text tower too
    store.close()


def test_the_command_lists_skipped_and_failed_files_and_no_ocr_turns_ocr_off(tmp_path, folder) -> None:
    command = [sys.executable, "-m", "mm_rag.cli", "ingest", str(folder / "invoice-screenshot.png"),
               str(folder / "truncated.jpg"), "--store", str(tmp_path / "store"), "--no-clip", "--no-audio"]  # fmt: skip
    done = subprocess.run([*command, "--no-ocr"], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("0 added, 0 updated, 0 unchanged, 1 skipped, 1 failed")
    assert f"skipped: {folder / 'invoice-screenshot.png'}: image: no image embedder (CLIP) configured, and no OCR engine" in lines
    assert any(line.startswith(f"failed: {folder / 'truncated.jpg'}: ") for line in lines)
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("1 added, 0 updated, 0 unchanged, 0 skipped, 1 failed")
