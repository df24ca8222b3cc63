"""Word and PowerPoint documents, and the OLE files (legacy or encrypted Office) refused by name.

Each reader returns a `Document` (see `mm_rag.embed.documents`): Word as passages that start at headings with
tables as text and the pictures with their alt text and caption; PowerPoint as one passage per slide (title,
body, tables, notes) with its pictures. Tables become text through `mm_rag.embed.tables`, which also reads
spreadsheets and CSV, so a table reads the same in every format. ZIP packages are checked before a library opens
them (`open_package`, kept in that module so the imports go one way only): a member declaring more than
`MAX_MEMBER_BYTES` (a zip bomb) is refused, not inflated. The picture filters (`keep_picture`, `joined_context`)
and `MIME_TYPES` are here because the packages (EPUB) reader shares them.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mm_rag._optional import available, require
from mm_rag.embed.documents import Document, Passage, Picture, decorative
from mm_rag.embed.media import MediaError
from mm_rag.embed.sniff import OLE_SIGNATURE, looks_like_text, sniff
from mm_rag.embed.tables import _PACKAGE_ERRORS, TABLE_MIME_TYPES, _reason, open_package, table_lines

__all__ = [
    "MIME_TYPES", "joined_context", "keep_picture", "open_package", "read_docx", "read_ole",
    "read_pptx",
]  # fmt: skip

MIME_TYPES = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    **TABLE_MIME_TYPES,
    "epub": "application/epub+zip",
}
_CAPTION = re.compile(r"(?:figure|fig\.?|image|picture|illustration|photo|chart|diagram)\s*\d+", re.IGNORECASE)
_HEADING_STYLE = re.compile(r"(?:heading \d|title)", re.IGNORECASE)
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_R_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
_VML_IMAGE = "{urn:schemas-microsoft-com:vml}imagedata"
_OLE_FREE = 0xFFFFFFFA  # sector numbers from here on are markers (end of chain, free...), not sectors
_OLE_LEGACY = (("WordDocument", "Word (.doc)", ".docx"), ("Workbook", "Excel (.xls)", ".xlsx"),
               ("Book", "Excel (.xls)", ".xlsx"), ("PowerPoint Document", "PowerPoint (.ppt)", ".pptx"))  # fmt: skip


def keep_picture(data: bytes) -> bool:
    """Whether embedded image bytes make a `Picture`: a raster image (not a vector metafile, SVG or unknown
    data) that is not decoration (`mm_rag.embed.documents.decorative`: spacers, bullets, rules, icons).

    The size is read from the image header with Pillow when it is installed; a header Pillow cannot read is
    kept for the image decoder to report.
    """
    if sniff(data) != "image" or looks_like_text(data[:1024]):  # EMF/WMF say nothing; SVG is text
        return False
    if not available("PIL"):
        return True
    image_module = require("PIL.Image", "picture sizes")
    try:
        with image_module.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError, image_module.DecompressionBombError):
        return True
    return not decorative(width, height)


def joined_context(*parts: str | None) -> str:
    """Describing texts for a picture, one per line, each line once, in order, white space collapsed."""
    seen: list[str] = []
    for part in parts:
        for line in (part or "").splitlines():
            text = " ".join(line.split())
            if text and text not in seen:
                seen.append(text)
    return "\n".join(seen)


def read_docx(path: Path, name: str) -> Document:
    """A Word document: a passage per heading (its `section` the heading text, the heading kept in the text),
    tables as header-aware rows, and inline pictures with their alt text and caption."""
    docx = require("docx", "Word documents")
    mime_type = MIME_TYPES["docx"]
    open_package(path, name, "docx").close()
    try:
        document = docx.Document(str(path))
        blocks = list(document.iter_inner_content())
        related = document.part.related_parts
        passages: list[Passage] = []
        pictures: list[Picture] = []
        lines: list[str] = []
        section: str | None = None
        for index, block in enumerate(blocks):
            if isinstance(block, docx.table.Table):
                repeated = block._tbl.find(f"{_W}tr/{_W}trPr/{_W}tblHeader") is not None  # "repeat as header row"
                lines.extend(table_lines(_docx_rows(block), repeated or None))
                caption = ""
            else:
                text = block.text.strip()
                if text and _is_heading(block):
                    _flush(passages, lines, mime_type, section)
                    section = text
                if text:
                    lines.append(text)
                caption = text if _is_caption(block) else ""
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            if not caption and following is not None and not isinstance(following, docx.table.Table):
                caption = following.text.strip() if _is_caption(following) else ""
            pictures.extend(_docx_pictures(block._element, related, caption or section or ""))
        _flush(passages, lines, mime_type, section)
    except (docx.opc.exceptions.OpcError, docx.exceptions.PythonDocxError, *_PACKAGE_ERRORS) as error:
        raise MediaError(f"{name}: corrupt Word document: {_reason(error, path)}") from error
    return Document(passages, pictures, mime_type)


def read_pptx(path: Path, name: str) -> Document:
    """A PowerPoint presentation: a passage per slide (title, text frames, tables and grouped shapes, then
    ``"Notes: …"``), its `page` the slide number and `section` the title, and the slides' pictures."""
    pptx = require("pptx", "PowerPoint presentations")
    from pptx.shapes.picture import Picture as PicturesShape

    mime_type = MIME_TYPES["pptx"]
    open_package(path, name, "pptx").close()
    passages: list[Passage] = []
    pictures: list[Picture] = []
    try:
        for number, slide in enumerate(pptx.Presentation(str(path)).slides, start=1):
            title_shape = slide.shapes.title
            title = _text(title_shape.text_frame.text) if title_shape is not None else ""
            lines = [title] if title else []
            for shape in _shapes(slide.shapes):
                if shape.has_text_frame and (title_shape is None or shape.shape_id != title_shape.shape_id):
                    lines.append(_text(shape.text_frame.text))
                elif shape.has_table:
                    rows = [[_text(cell.text) for cell in row.cells] for row in shape.table.rows]
                    lines.extend(table_lines(rows, shape.table.first_row or None))
                elif isinstance(shape, PicturesShape) and shape._element.blip_rId:
                    part = shape.part.related_part(shape._element.blip_rId)
                    if keep_picture(part.blob):
                        context = joined_context(title, _alt_text(shape._element))
                        pictures.append(Picture(part.blob, part.partname.lstrip("/"), number, context))
            frame = slide.notes_slide.notes_text_frame if slide.has_notes_slide else None
            if frame is not None and _text(frame.text):
                lines.append(f"Notes: {_text(frame.text)}")
            text = "\n".join(line for line in lines if line)
            if text:
                passages.append(Passage(text, number, mime_type, title or None))
    except (pptx.exc.PythonPptxError, *_PACKAGE_ERRORS) as error:
        raise MediaError(f"{name}: corrupt PowerPoint presentation: {_reason(error, path)}") from error
    return Document(passages, pictures, mime_type)


def read_ole(path: Path, name: str) -> Document:
    """An OLE compound file: always refused, saying why (encrypted, or which legacy format it is).

    Raises:
        MediaError: naming the file: an encrypted Office document (OOXML inside ``EncryptedPackage``), a legacy
            ``.doc``/``.xls``/``.ppt``, another OLE file, or a damaged one.
    """
    entries = _ole_entries(path, name)
    if "EncryptedPackage" in entries or "EncryptionInfo" in entries:
        raise MediaError(f"{name}: encrypted Office document (a password is needed)")
    for stream, label, modern in _OLE_LEGACY:
        if stream in entries:
            raise MediaError(f"{name}: legacy {label} format is not supported; save it as {modern}")
    raise MediaError(f"{name}: an OLE compound file that is not a Word, Excel or PowerPoint document; not supported")


def _text(text: str) -> str:
    return text.replace("\v", "\n").strip()  # python-pptx gives a line break inside a paragraph as "\v"


def _flush(passages: list[Passage], lines: list[str], mime_type: str, section: str | None) -> None:
    if lines:
        passages.append(Passage("\n".join(lines), None, mime_type, section))
    lines.clear()


def _is_heading(paragraph: Any) -> bool:
    """A heading by its style name, or by an outline level set on the paragraph or its style (localised names)."""
    style = paragraph.style
    if style is not None and style.name and _HEADING_STYLE.fullmatch(style.name):
        return True
    holders = [paragraph._p] + ([style.element] if style is not None else [])
    levels = (holder.find(f"{_W}pPr/{_W}outlineLvl") for holder in holders)
    return any(level is not None and level.get(f"{_W}val") != "9" for level in levels)  # 9: body text


def _is_caption(paragraph: Any) -> bool:
    style = paragraph.style
    return bool(style is not None and style.name == "Caption") or bool(_CAPTION.match(paragraph.text.strip()))


def _docx_rows(table: Any) -> list[list[str]]:
    rows = []
    for row in table.rows:
        cells, previous = [], None
        for cell in row.cells:
            if cell._tc is not previous:  # a merged cell is repeated once per grid column it spans
                cells.append(" ".join(cell.text.split()))
            previous = cell._tc
        rows.append(cells)
    return rows


def _docx_pictures(element: Any, related: Any, nearby: str) -> list[Picture]:
    """Pictures drawn in a paragraph or table (DrawingML, or VML in older files), with alt text and `nearby`."""
    found = []
    for drawing in element.xpath(".//wp:inline | .//wp:anchor"):
        properties = drawing.find("{http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing}docPr")
        alt = [] if properties is None else [properties.get("descr"), properties.get("title")]
        found.extend((rid, alt) for rid in drawing.xpath(".//a:blip/@r:embed"))
    found.extend((image.get(_R_ID), [image.get("{urn:schemas-microsoft-com:office:office}title")])
                 for image in element.iter(_VML_IMAGE))  # fmt: skip
    pictures = []
    for rid, alt in found:
        part = related.get(rid)
        if part is not None and keep_picture(part.blob):
            pictures.append(Picture(part.blob, part.partname.lstrip("/"), None, joined_context(*alt, nearby)))
    return pictures


def _shapes(shapes: Iterable[Any]) -> Iterator[Any]:
    """Shapes in document order, those inside groups in place of the group."""
    for shape in shapes:
        if hasattr(shape, "shapes") and not shape.has_text_frame:  # a group shape
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _alt_text(element: Any) -> str:
    names = element.xpath("./*[1]/p:cNvPr")
    return " ".join(filter(None, (names[0].get("descr"), names[0].get("title")))) if names else ""


def _ole_entries(path: Path, name: str) -> set[str]:
    """Names in an OLE compound file's directory, following its sector chains (header, DIFAT, FAT)."""
    try:
        with open(path, "rb") as file:
            header = file.read(512)
            if not header.startswith(OLE_SIGNATURE):
                raise MediaError(f"{name}: not an Office file: no OLE compound-file header")
            if len(header) < 512:
                raise MediaError(f"{name}: truncated OLE compound file: {len(header)} bytes")
            size = 1 << struct.unpack_from("<H", header, 0x1E)[0]
            if size not in (512, 4096):
                raise MediaError(f"{name}: corrupt OLE compound file: sector size {size}")
            per = size // 4
            (sector,) = struct.unpack_from("<I", header, 0x30)  # the directory's first sector
            difat_sector, difat_count = struct.unpack_from("<II", header, 0x44)
            difat = list(struct.unpack_from("<109I", header, 0x4C))  # where the FAT sectors are
            for _ in range(min(difat_count, 1 << 16)):
                if difat_sector >= _OLE_FREE:
                    break
                file.seek((difat_sector + 1) * size)
                *entries, difat_sector = struct.unpack(f"<{per}I", file.read(size))
                difat.extend(entries)
            entries_seen: set[str] = set()
            visited: set[int] = set()
            while sector < _OLE_FREE:
                if sector in visited or len(visited) > 1 << 16:
                    raise MediaError(f"{name}: corrupt OLE compound file: the directory chain loops")
                visited.add(sector)
                file.seek((sector + 1) * size)
                block = file.read(size)
                for offset in range(0, len(block) - 127, 128):
                    length, kind = struct.unpack_from("<HB", block, offset + 64)
                    if kind in (1, 2, 5) and 2 <= length <= 64:
                        entries_seen.add(block[offset : offset + length - 2].decode("utf-16-le", errors="replace"))
                file.seek((difat[sector // per] + 1) * size + sector % per * 4)
                sector = struct.unpack("<I", file.read(4))[0]
            return entries_seen
    except MediaError:
        raise
    except (struct.error, IndexError, OverflowError, ValueError) as error:
        raise MediaError(f"{name}: corrupt or truncated OLE compound file ({error})") from error
    except OSError as error:
        raise MediaError(f"{name}: cannot read: {error.strerror or error}") from error
