"""The PDF reader: text pages, figures with captions, scanned pages, `pdf_picture`, errors, threads."""

from __future__ import annotations

import re
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fixtures import pdfgen

from mm_rag._optional import MissingDependencyError
from mm_rag.embed import pdf
from mm_rag.embed.documents import read_document
from mm_rag.embed.media import MediaError
from mm_rag.embed.pdf import pdf_picture, read_pdf


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pdfs")
    report = pdfgen.write_report(folder / "report.pdf")
    return {
        "report": report,
        "scanned": pdfgen.write_scanned(folder / "scanned.pdf"),
        "mixed": pdfgen.write_mixed(folder / "mixed.pdf"),
        "poster": pdfgen.write_scanned(folder / "poster.pdf", {1: ["Poster"]}, dpi=10, size=(4000, 3000)),
        "locked": pdfgen.write_encrypted(folder / "locked.pdf"),
        "owner_only": pdfgen.write_encrypted(folder / "owner only.pdf", user_password=""),
        "truncated": pdfgen.write_truncated(folder / "truncated.pdf", report),
        "corrupt": pdfgen.write_corrupt(folder / "corrupt.pdf"),
        "broken_page": pdfgen.write_broken_page(folder / "broken page.pdf"),
        "empty_figure": pdfgen.write_empty_figure(folder / "empty figure.pdf", report),
    }


@pytest.fixture(scope="module")
def report(pdfs):
    return read_pdf(pdfs["report"], str(pdfs["report"]))


def _read(path: Path):
    return read_pdf(path, str(path))


def _dominant(image) -> tuple[int, int, int]:
    colours = image.getcolors(maxcolors=image.width * image.height)
    return max(colours)[1]


def _close(colour, expected, tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected))


def test_text_pages_become_passages(pdfs, report):
    assert report.mime_type == "application/pdf"
    assert [passage.page for passage in report.passages] == [1, 2, 3, 4]
    for passage in report.passages:
        assert passage.mime_type == "application/pdf" and "\r" not in passage.text
        for line in pdfgen.REPORT_TEXT[passage.page]:
            assert line in passage.text
    assert read_document(pdfs["report"]).passages == report.passages  # `read_document` dispatches here


def test_figures_with_locators_pages_and_captions(report):
    figures = {picture.locator: picture for picture in report.pictures}
    assert list(figures) == list(pdfgen.REPORT_FIGURES)  # content order; the off-page image is left out
    for locator, (_, caption) in pdfgen.REPORT_FIGURES.items():
        picture = figures[locator]
        assert picture.page == int(locator.split("&")[0].removeprefix("page="))
        assert picture.scan is False and picture.image.mode == "RGB"
        assert picture.context == caption, locator
    assert figures["page=2&image=1"].context == "Figure 1: Quarterly revenue by region"  # below the figure
    assert figures["page=3&image=1"].context == "Figure 2: Customer growth since 2020"  # above the figure
    assert "body text" not in figures["page=4&image=1"].context  # the paragraph after the caption is not in it


def test_figure_pixels_look_like_what_was_drawn(report):
    figures = {picture.locator: picture.image for picture in report.pictures}
    assert figures["page=2&image=1"].size == (320, 200)  # the image's own resolution, not the page's
    assert _dominant(figures["page=2&image=1"]) == pdfgen.FIGURE_COLOURS["revenue"]
    assert _close(_dominant(figures["page=3&image=1"]), pdfgen.FIGURE_COLOURS["growth"])  # JPEG
    assert _dominant(figures["page=3&image=4"]) == pdfgen.FIGURE_COLOURS["form"]  # inside a form XObject
    assert figures["page=4&image=1"].size == (100, 160)  # turned as on the page
    assert _dominant(figures["page=4&image=1"]) == pdfgen.FIGURE_COLOURS["revenue"]
    red, green, blue = _dominant(figures["page=4&image=2"])  # greyscale: the growth figure's luminance
    assert red == green == blue and abs(red - 110) <= 2
    red, green, blue = _dominant(figures["page=4&image=3"])  # CMYK: still mostly blue
    assert blue > red + 40 and blue > green + 40
    badge = figures["page=3&image=3"]  # soft mask applied: transparent corners show white, not black
    assert badge.getpixel((2, 2)) == (255, 255, 255)
    assert _close(badge.getpixel((60, 60)), pdfgen.FIGURE_COLOURS["badge"], 2)


def test_tiny_images_are_kept_for_the_ingestion_rule(report):
    [tiny] = [picture for picture in report.pictures if picture.locator == "page=3&image=2"]
    assert tiny.image.size == (4, 4) and tiny.image.getpixel((1, 1)) == (10, 10, 10) and tiny.context == ""


def test_scanned_pages_are_rendered_for_ocr(pdfs):
    document = _read(pdfs["scanned"])
    assert document.passages == []
    assert [(p.locator, p.page, p.scan, p.context) for p in document.pictures] == [
        ("page=1", 1, True, ""),
        ("page=2", 2, True, ""),
    ]  # one picture per page: the page's image is the scan, not also a figure
    for picture in document.pictures:
        assert picture.image.mode == "RGB"
        assert picture.image.size == (round(8.5 * pdf.SCAN_DPI), round(11 * pdf.SCAN_DPI))
        grey = picture.image.convert("L")
        inked = sum(count for count, value in grey.getcolors(256) if value < 128)
        assert 0.001 < inked / (grey.width * grey.height) < 0.1  # dark text on white
        assert grey.crop((0, 0, 150, 150)).getextrema() == (255, 255)  # the margin is white
        assert grey.crop((200, 190, 1200, 290)).getextrema()[0] < 64  # the first line, ~1 inch from the corner


def test_scan_resolution_is_capped(pdfs):
    [page] = _read(pdfs["poster"]).pictures  # 55 x 42 inches: 200 dpi would be 85 million pixels
    width, height = page.image.size
    assert page.scan and width * height <= pdf.MAX_SCAN_PIXELS * 1.001
    assert abs(width / height - 4000 / 3000) < 0.01


def test_mixed_pages(pdfs):
    document = _read(pdfs["mixed"])
    assert [(p.page, " ".join(p.text.split())) for p in document.passages] == [
        (1, " ".join(pdfgen.MIXED_TEXT)),
        (3, pdfgen.STAMP),  # the stamp is text, and the page under it is still read as a scan
    ]
    assert [(p.locator, p.scan) for p in document.pictures] == [("page=2", True), ("page=3", True)]
    # page 4 has nothing on it and page 5 only a white box: neither gives anything


def test_pdf_picture_round_trips_every_locator(pdfs):
    for key in ("report", "scanned", "mixed"):
        for picture in _read(pdfs[key]).pictures:
            again = pdf_picture(pdfs[key], picture.locator)
            assert again.mode == "RGB" and again.size == picture.image.size
            assert again.tobytes() == picture.image.tobytes(), (key, picture.locator)
    page = pdf_picture(str(pdfs["report"]), "page=2")  # any page renders, text layer or not
    assert page.size == (round(8.5 * pdf.SCAN_DPI), round(11 * pdf.SCAN_DPI))


@pytest.mark.parametrize(
    "locator", ["page=9", "page=2&image=2", "page=0", "image=1", "page=2&image=x", "", "page=2&image=1&x=1"]
)
def test_pdf_picture_rejects_a_bad_locator(pdfs, locator):
    path = pdfs["report"]
    with pytest.raises(MediaError, match=re.escape(repr(locator))) as caught:
        pdf_picture(path, locator)
    assert str(caught.value).startswith(f"{path}: ") and str(caught.value).count(str(path)) == 1


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("truncated", "corrupt or unreadable PDF: "),
        ("corrupt", "corrupt or unreadable PDF: "),
        ("locked", "encrypted PDF (a password is needed)"),
        ("broken_page", "cannot extract the text of page 2: "),
    ],
)
def test_errors_name_the_file_once(pdfs, key, message):
    path = pdfs[key]
    for read in (lambda: read_pdf(path, str(path)), lambda: read_document(path)):
        with pytest.raises(MediaError) as caught:
            read()
        text = str(caught.value)
        assert text.startswith(f"{path}: {message}") and text.count(str(path)) == 1
        assert caught.value.__cause__ is not None or key == "locked"
    if key != "broken_page":  # pdf_picture opens with PDFium alone, and says the same
        with pytest.raises(MediaError, match=re.escape(f"{path}: {message.split(':')[0]}")):
            pdf_picture(path, "page=1")
    assert not pdf.PDFIUM_LOCK.locked()


def test_owner_password_only_pdf_reads(pdfs):
    document = _read(pdfs["owner_only"])
    assert [" ".join(p.text.split()) for p in document.passages] == ["Confidential figures"]
    assert pdf_picture(pdfs["owner_only"], "page=1").size[0] > 0


def test_an_undecodable_image_is_skipped_but_the_text_kept(pdfs, report, caplog):
    path = pdfs["empty_figure"]
    document = _read(path)
    assert document.passages == report.passages
    assert [p.locator for p in document.pictures] == [p.locator for p in report.pictures][1:]
    assert "page 2: image 1 skipped" in caplog.text
    with pytest.raises(MediaError, match=re.escape(f"{path}: cannot decode the picture at 'page=2&image=1'")):
        pdf_picture(path, "page=2&image=1")


def test_concurrent_reads_give_identical_results(pdfs):
    keys = ["report", "scanned", "mixed"] * 4

    def summary(key: str):
        document = _read(pdfs[key])
        pictures = [(p.locator, p.page, p.context, p.scan, p.image.size, p.image.tobytes()) for p in document.pictures]
        return document.passages, pictures

    expected = {key: summary(key) for key in set(keys)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(summary, keys))
    assert Counter(result == expected[key] for key, result in zip(keys, results)) == Counter({True: len(keys)})
    assert not pdf.PDFIUM_LOCK.locked()


def test_the_lock_serialises_pdfium(pdfs):
    """While one thread holds the lock, another thread's read waits for it (and then finishes)."""
    result = []
    with pdf.PDFIUM_LOCK:
        worker = threading.Thread(target=lambda: result.append(_read(pdfs["mixed"])))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and not result  # blocked on the lock, past pypdf's part
    worker.join(timeout=30)
    assert len(result) == 1 and result[0].pictures


def test_missing_pypdfium2_names_the_extra(pdfs, monkeypatch):
    monkeypatch.setitem(sys.modules, "pypdfium2", None)
    with pytest.raises(MissingDependencyError, match=r"mm-rag\[docs\]"):
        _read(pdfs["report"])


def test_public_names():
    assert sorted(pdf.__all__) == [
        "CAPTION_GAP", "MAX_FIGURE_PIXELS", "MAX_SCAN_PIXELS", "PDFIUM_LOCK", "SCAN_DPI", "pdf_picture", "read_pdf",
    ]  # fmt: skip
