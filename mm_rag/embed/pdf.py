"""PDF documents: the text layer of each page, the figures placed on pages, and pages without a text layer.

`read_pdf` reads the text layer with pypdf (one `Passage` per page with text) and uses PDFium (pypdfium2) for
everything drawn: each image placed on a page becomes a `Picture` with the caption found next to it, and a page
with no text layer is rendered at `SCAN_DPI` as a ``scan=True`` picture for OCR. `pdf_picture` finds a picture
again from its locator (``"page=3&image=2"``, ``"page=3"``), e.g. to show it to an LLM.

Thread safety: PDFium is not thread-safe, and ingestion reads files on several worker threads. Every call into
pypdfium2 (opening, page loading, rendering, text lookup, closing — including closing handles, which is why
they are closed explicitly rather than left to garbage collection on another thread) happens while
`PDFIUM_LOCK` is held. The lock is held one page at a time and released for the pure-Python work: pypdf's
text extraction, turning bitmaps into PIL images, finding captions. Other modules using pypdfium2 must take
the same lock.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mm_rag._optional import require
from mm_rag.embed.documents import Document, Passage, Picture
from mm_rag.embed.media import MediaError, describe

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["CAPTION_GAP", "MAX_FIGURE_PIXELS", "MAX_SCAN_PIXELS", "PDFIUM_LOCK", "SCAN_DPI", "pdf_picture", "read_pdf"]

PDFIUM_LOCK = threading.Lock()  # serialises all use of PDFium in this process (see the module docstring)
SCAN_DPI = 200  # pages without a text layer are rendered at this resolution: enough for OCR of 8-pt text
MAX_SCAN_PIXELS = 10_000_000  # …unless that exceeds this many pixels (A2 and larger pages get a lower dpi)
MAX_FIGURE_PIXELS = 16_000_000  # figures come at their own resolution, scaled down beyond this many pixels
CAPTION_GAP = 36.0  # points: a caption starts at most this far below or above its figure

_MIME = "application/pdf"
_STAMP_CHARS = 40  # a page with less text than this over a full-page image is a scan with a stamp (Bates number)
_FULL_PAGE = 0.85  # share of the page an image covers to be a full-page scan
_CAPTION_LINES = 4  # a caption (or the nearby text standing in for one) is at most this many lines
_CAPTION_CHARS = 600
_CAPTION_START = re.compile(
    r"(?:figures?|fig\.|tables?|charts?|exhibits?|plates?|illustrations?)(?:[\s.:]|\d|$)", re.IGNORECASE
)
_LOCATOR = re.compile(r"page=([1-9][0-9]*)(?:&image=([1-9][0-9]*))?")
_BLANK = re.compile(r"\s+")

logger = logging.getLogger("mm_rag")

Box = tuple[float, float, float, float]  # left, bottom, right, top in PDF points (y grows upwards)


@dataclass(frozen=True, slots=True)
class _Pixels:
    """A bitmap copied out of PDFium, so that no PDFium object outlives the lock."""

    data: Any  # bytes, or the ctypes buffer of a bitmap that Python allocated
    width: int
    height: int
    stride: int
    rawmode: str  # PDFium's channel order: "BGR", "BGRA", "BGRX", "RGB", "L"…

    def image(self) -> Image.Image:
        """An RGB PIL image; transparent parts (soft masks, stencils) laid over white as a page shows them."""
        pil = require("PIL.Image", "PDF figures and scanned pages")
        mode = {1: "L", 3: "RGB"}.get(len(self.rawmode)) or ("RGBA" if self.rawmode.endswith("A") else "RGB")
        size = (self.width, self.height)
        image = pil.frombuffer(mode, size, self.data, "raw", self.rawmode, self.stride, 1)
        if mode == "RGBA":
            white = pil.new("RGB", size, (255, 255, 255))
            white.paste(image, mask=image.getchannel("A"))
            return white
        return image.convert("RGB") if mode != "RGB" else image  # decoding into RGB copied the buffer already


@dataclass(frozen=True, slots=True)
class _Line:
    box: Box
    text: str


@dataclass
class _Page:
    """What PDFium found on one page: the render of a scanned page, or figures and the text lines near them."""

    scan: _Pixels | None = None
    figures: list[tuple[int, Box, _Pixels]] = field(default_factory=list)
    lines: list[_Line] = field(default_factory=list)


def read_pdf(path: Path, name: str) -> Document:
    """Read a PDF: its text layer per page, its figures with their captions, and its scanned pages.

    Each page with text gives a `Passage` (pypdf's text, newlines normalised). Each image placed on such a
    page (inside form XObjects too; not those wholly off the page) gives a `Picture`: an RGB PIL image at
    the image's own resolution (at most `MAX_FIGURE_PIXELS`), locator ``page=P&image=I`` (I counts the
    page's image objects in content order from 1), and as context the caption next to it (see `_caption`).
    A page without a text layer (or with a short stamp over a full-page image) gives the page rendered at
    `SCAN_DPI` as a ``scan=True`` picture, locator ``page=P``, and no figures; a page with nothing on it
    gives nothing.

    Args:
        path: The PDF file.
        name: The file's name for messages.

    Raises:
        MediaError: starting with `name`: a corrupt, truncated or encrypted PDF (one that opens with the
            empty password reads), or a page that cannot be read.
        MissingDependencyError: pypdf or pypdfium2 is not installed.
    """
    require("pypdfium2", "PDF figures and scanned pages")
    texts = _page_texts(path, name)
    passages = [Passage(text, number, _MIME) for number, text in enumerate(texts, start=1) if text.strip()]
    pictures: list[Picture] = []
    if not texts:
        return Document(passages, pictures, _MIME)
    with _opened(path, name) as (document, pages):
        for number, text in enumerate(texts[:pages], start=1):
            with PDFIUM_LOCK:
                found = _inspect(document, number, text, name)
            pictures.extend(_pictures(found, number))
    return Document(passages, pictures, _MIME)


def pdf_picture(path: str | os.PathLike[str], locator: str) -> Image.Image:
    """The picture at `locator` in a PDF, as `read_pdf` returned it: an RGB PIL image.

    ``"page=3&image=2"`` is the second image object of page 3 (what `read_pdf` gives as a figure);
    ``"page=3"`` is page 3 rendered as for a scanned page.

    Raises:
        MediaError: naming the file (and the locator): a malformed locator, no such page or image, an image
            PDFium cannot decode, or a corrupt or encrypted PDF.
        MissingDependencyError: pypdfium2 is not installed.
    """
    name = describe(path)
    match = _LOCATOR.fullmatch(locator)
    if match is None:
        raise MediaError(f"{name}: no picture at {locator!r}: a PDF locator is 'page=N' or 'page=N&image=K'")
    number, index = int(match[1]), int(match[2]) if match[2] else None
    with _opened(Path(path), name) as (document, pages):
        if number > pages:
            raise MediaError(f"{name}: no picture at {locator!r}: the PDF has {pages} page(s)")
        with PDFIUM_LOCK:
            pixels = _picture_pixels(document, number, index, name, locator)
    return pixels.image()


def _page_texts(path: Path, name: str) -> list[str]:
    """Each page's text layer (pypdf), in page order; pypdf is pure Python, so this runs without the lock."""
    pypdf = require("pypdf", "PDF reading")
    # Malformed PDFs surface as pypdf's errors and, from deep inside its parser, as these built-in ones.
    errors = (pypdf.errors.PyPdfError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError,
              RecursionError, zlib.error)  # fmt: skip
    try:
        reader = pypdf.PdfReader(os.fspath(path))
        encrypted = reader.is_encrypted and not reader.decrypt("")
        pages = [] if encrypted else list(reader.pages)
    except errors as error:
        raise MediaError(f"{name}: corrupt or unreadable PDF: {error}") from error
    if encrypted:
        raise MediaError(f"{name}: encrypted PDF (a password is needed)")
    texts = []
    for number, page in enumerate(pages, start=1):
        try:
            texts.append((page.extract_text() or "").replace("\r\n", "\n").replace("\r", "\n"))
        except errors as error:
            raise MediaError(f"{name}: cannot extract the text of page {number}: {error}") from error
    return texts


@contextmanager
def _opened(path: Path, name: str) -> Iterator[tuple[Any, int]]:
    """The PDF opened with PDFium and its page count; closed (under the lock) on the way out."""
    pdfium = require("pypdfium2", "PDF figures and scanned pages")
    with PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(path)
            pages = len(document)
        except pdfium.PdfiumError as error:
            if error.err_code == pdfium.raw.FPDF_ERR_PASSWORD:
                raise MediaError(f"{name}: encrypted PDF (a password is needed)") from error
            raise MediaError(f"{name}: corrupt or unreadable PDF: {error}") from error
        except OSError as error:
            raise MediaError(f"{name}: corrupt or unreadable PDF: {error}") from error
    try:
        yield document, pages
    finally:
        with PDFIUM_LOCK:
            document.close()


def _inspect(document: Any, number: int, text: str, name: str) -> _Page:
    """One page's scan render, or its figures and text lines; called with `PDFIUM_LOCK` held."""
    pdfium = require("pypdfium2", "PDF figures and scanned pages")
    try:
        page = document[number - 1]
    except pdfium.PdfiumError as error:
        raise MediaError(f"{name}: cannot read page {number}: {error}") from error
    try:
        area = _area(page.get_bbox())
        placed = [(index, image, box) for index, image, box in _images(page) if _area(box) > 0]
        covered = any(_area(box) >= _FULL_PAGE * area for *_, box in placed)
        stamp = covered and len(_BLANK.sub("", text)) < _STAMP_CHARS
        if not text.strip() or stamp:
            content = pdfium.raw.FPDFPage_CountObjects(page) > 0 or pdfium.raw.FPDFPage_GetAnnotCount(page) > 0
            return _Page(scan=_render_page(page) if content else None)
        found = _Page()
        for index, image, box in placed:
            try:
                found.figures.append((index, box, _render_image(document, page, image)))
            except pdfium.PdfiumError as error:  # one undecodable image does not cost the document its text
                logger.warning("%s: page %d: image %d skipped: %s", name, number, index, error)
        found.lines = _text_lines(page) if found.figures else []
        return found
    except pdfium.PdfiumError as error:
        raise MediaError(f"{name}: cannot read page {number}: {error}") from error
    finally:
        page.close()


def _picture_pixels(document: Any, number: int, index: int | None, name: str, locator: str) -> _Pixels:
    """The bitmap behind a locator; called with `PDFIUM_LOCK` held."""
    pdfium = require("pypdfium2", "PDF figures and scanned pages")
    try:
        page = document[number - 1]
    except pdfium.PdfiumError as error:
        raise MediaError(f"{name}: cannot read page {number}: {error}") from error
    try:
        if index is None:
            return _render_page(page)
        images = _images(page)
        if index > len(images):
            raise MediaError(f"{name}: no picture at {locator!r}: page {number} has {len(images)} image(s)")
        return _render_image(document, page, images[index - 1][1])
    except pdfium.PdfiumError as error:
        raise MediaError(f"{name}: cannot decode the picture at {locator!r}: {error}") from error
    finally:
        page.close()


def _images(page: Any) -> list[tuple[int, Any, Box]]:
    """The page's image objects in content order (form XObjects included), numbered from 1, with where each
    lands on the page, clipped to it: an empty box for one wholly off the page."""
    pdfium = require("pypdfium2", "PDF figures and scanned pages")
    left, bottom, right, top = page.get_bbox()
    images = []
    for index, image in enumerate(page.get_objects(filter=[pdfium.raw.FPDF_PAGEOBJ_IMAGE]), start=1):
        matrix, container = image.get_matrix(), image.container
        while container is not None:  # an object inside a form XObject is placed relative to the form
            matrix, container = matrix.multiply(container.get_matrix()), container.container
        x0, y0, x1, y1 = matrix.on_rect(0, 0, 1, 1)  # an image fills the unit square of its matrix
        images.append((index, image, (max(x0, left), max(y0, bottom), min(x1, right), min(y1, top))))
    return images


def _render_image(document: Any, page: Any, image: Any) -> _Pixels:
    """The image as placed (masks applied, turned as on the page) at its own resolution, or smaller to stay
    within `MAX_FIGURE_PIXELS`. PDFium renders it alone after scaling its matrix, as pypdfium2's
    ``get_bitmap(render=True)`` does, but with the cap."""
    pdfium = require("pypdfium2", "PDF figures and scanned pages")
    columns, rows = image.get_px_size()
    left, bottom, right, top = image.get_bounds()
    width, height = right - left, top - bottom
    if min(columns, rows, width, height) <= 0:
        raise pdfium.PdfiumError("the image is empty or has no area")
    if (columns < rows) != (width < height):  # turned by 90°: pixel columns run along the placed height
        columns, rows = rows, columns
    scale = max(columns / width, rows / height)
    scale = min(scale, math.sqrt(MAX_FIGURE_PIXELS / (width * height)))
    original = image.get_matrix()
    image.set_matrix(original.multiply(pdfium.PdfMatrix(scale, 0, 0, scale)))
    try:
        raw = pdfium.raw.FPDFImageObj_GetRenderedBitmap(document, page, image)
    finally:
        image.set_matrix(original)
    if not raw:
        raise pdfium.PdfiumError("PDFium could not decode the image")
    bitmap = pdfium.PdfBitmap.from_raw(raw)
    try:  # the buffer belongs to PDFium and goes with the bitmap: copy it first
        return _Pixels(bytes(bitmap.buffer), bitmap.width, bitmap.height, bitmap.stride, bitmap.mode)
    finally:
        bitmap.warn_on_close = False  # pypdfium2 warns of use-after-free; nothing uses the buffer any more
        bitmap.close()


def _render_page(page: Any) -> _Pixels:
    """The page rendered for OCR: `SCAN_DPI`, lowered so that it stays within `MAX_SCAN_PIXELS`."""
    pdfium = require("pypdfium2", "PDF figures and scanned pages")
    width, height = page.get_size()
    if min(width, height) <= 0:
        raise pdfium.PdfiumError(f"the page has no area ({width} x {height} pt)")
    scale = min(SCAN_DPI / 72, math.sqrt(MAX_SCAN_PIXELS / (width * height)))
    bitmap = page.render(scale=scale, rev_byteorder=True)  # RGB, in a buffer Python allocated
    bitmap.close()  # frees PDFium's handle only: the buffer is Python's and stays valid
    return _Pixels(bitmap.buffer, bitmap.width, bitmap.height, bitmap.stride, bitmap.mode)


def _text_lines(page: Any) -> list[_Line]:
    """The page's text as lines with their boxes: PDFium's text rectangles, joined along each line."""
    textpage = page.get_textpage()
    try:
        runs = []
        for number in range(textpage.count_rects()):
            box = textpage.get_rect(number)
            runs.append(_Line(box, textpage.get_text_bounded(*box)))
    finally:
        textpage.close()
    lines: list[_Line] = []
    for run in runs:
        if not run.text.strip():
            continue
        last = lines[-1] if lines else None
        if last is not None and _same_line(last.box, run.box):
            box = (min(last.box[0], run.box[0]), min(last.box[1], run.box[1]),
                   max(last.box[2], run.box[2]), max(last.box[3], run.box[3]))  # fmt: skip
            lines[-1] = _Line(box, f"{last.text} {run.text}")
        else:
            lines.append(run)
    return [_Line(line.box, _BLANK.sub(" ", line.text).strip()) for line in lines]


def _pictures(found: _Page, number: int) -> list[Picture]:
    """The pictures of one page, made from what PDFium found (outside the lock: PIL and caption work)."""
    if found.scan is not None:
        image = found.scan.image()
        if all(low == high for low, high in image.getextrema()):
            return []  # content that draws nothing visible (a white box, objects off the page)
        return [Picture(image, f"page={number}", number, "", scan=True)]
    return [
        Picture(pixels.image(), f"page={number}&image={index}", number, _caption(box, found.lines))
        for index, box, pixels in found.figures
    ]


def _caption(box: Box, lines: list[_Line]) -> str:
    """The text that describes a figure: its caption, else the text just below it, else just above it.

    Only lines overlapping the figure's width count. The paragraph starting at most `CAPTION_GAP` below
    the figure is the caption when one of its lines starts like one ("Figure 2", "Fig.", "Table"…),
    from that line on; otherwise the paragraph ending at most `CAPTION_GAP` above it, from such a line on.
    Failing both, the paragraph below (or above) stands in. A paragraph is at most `_CAPTION_LINES` lines
    of similar height and tight spacing.
    """
    left, bottom, right, top = box
    beside = [line for line in lines if line.box[0] < right and line.box[2] > left]
    below = [line for line in beside if bottom - CAPTION_GAP <= line.box[3] <= bottom + 2]
    above = [line for line in beside if top - 2 <= line.box[1] <= top + CAPTION_GAP]
    after = _paragraph(max(below, key=lambda line: line.box[3]), beside, down=True) if below else []
    before = _paragraph(min(above, key=lambda line: line.box[1]), beside, down=False) if above else []
    for paragraph in (after, before):
        for start, line in enumerate(paragraph):
            if _CAPTION_START.match(line.text):
                return _joined(paragraph[start:])
    return _joined(after or before)


def _paragraph(first: _Line, lines: list[_Line], *, down: bool) -> list[_Line]:
    """`first` and the lines continuing its paragraph away from the figure, in reading order."""
    paragraph = [first]
    while len(paragraph) < _CAPTION_LINES:
        edge = paragraph[-1].box
        height = edge[3] - edge[1]
        if down:
            nearby = [line for line in lines if line.box[3] < edge[1] + 1 and edge[1] - line.box[3] <= 0.8 * height]
            following = max(nearby, key=lambda line: line.box[3], default=None)
        else:
            nearby = [line for line in lines if line.box[1] > edge[3] - 1 and line.box[1] - edge[3] <= 0.8 * height]
            following = min(nearby, key=lambda line: line.box[1], default=None)
        if following is None or following in paragraph or not _similar(following.box[3] - following.box[1], height):
            break
        paragraph.append(following)
    return paragraph if down else paragraph[::-1]


def _joined(lines: list[_Line]) -> str:
    return " ".join(line.text for line in lines)[:_CAPTION_CHARS]


def _same_line(first: Box, second: Box) -> bool:
    """Whether two text rectangles sit on one line: mostly the same height band, close together."""
    overlap = min(first[3], second[3]) - max(first[1], second[1])
    height = max(first[3] - first[1], second[3] - second[1])
    return overlap >= 0.5 * min(first[3] - first[1], second[3] - second[1]) and second[0] - first[2] <= 2 * height


def _similar(height: float, other: float) -> bool:
    return abs(height - other) <= 0.3 * max(height, other)


def _area(box: Box) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
