"""Documents (text, Markdown, HTML, PDF, Office files, EPUB, notebooks, e-mail) into passages and pictures.

`read_document` trusts a file's bytes over its name (see `mm_rag.embed.sniff`), picks the reader of that kind
from `READERS`, and returns a `Document`: its text as `Passage`s and the pictures inside it as `Picture`s, each
tied to its page or slide. Readers only parse; reading text inside pictures (OCR) and embedding happen in
`mm_rag.ingestion.extract`, the one path from files to records. Every reader raises `MediaError` naming the
file for a corrupt, encrypted, truncated or mislabelled input. `text_records` cuts passages into token-aware
chunks (`mm_rag.embed.chunking`) and makes one ``"text"`` record per chunk.
"""

from __future__ import annotations

import codecs
import importlib
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_rag._optional import require
from mm_rag.embed.chunking import DEFAULT_MAX_TOKENS, Chunk, TokenizerLike, chunk_text
from mm_rag.embed.media import MediaError, describe
from mm_rag.embed.sniff import looks_like_text, read_head, sniff, text_encoding
from mm_rag.records import Record, make_id

__all__ = [
    "MAX_TEXT_BYTES", "MIN_PICTURE_PIXELS", "MIN_PICTURE_SIDE", "READERS", "Chunk", "Document", "Passage", "Picture",
    "chunk_text", "decode_text", "decorative", "picture_at", "read_document", "text_records",
]  # fmt: skip

MAX_TEXT_BYTES = 64 * 1024 * 1024  # text and HTML files above this size are refused, not read into memory

_MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd"})
_DROPPED_TAGS = ["script", "style", "noscript", "template", "iframe", "object", "embed", "svg", "canvas"]
_BLOCK_TAGS = [
    "address", "article", "aside", "blockquote", "caption", "dd", "div", "dl", "dt", "figcaption", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
    "section", "table", "td", "th", "title", "tr", "ul",
]  # fmt: skip
_BOM_CODECS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)  # fmt: skip
_BLANK_LINES = re.compile(r"\n\s*\n")


@dataclass(frozen=True, slots=True)
class Passage:
    """The text of a document, or of one page of it.

    Attributes:
        text: The text, newlines normalised to ``\\n``.
        page: 1-based page or slide number for paged formats (PDF, slides); None otherwise.
        mime_type: The document's type (``text/plain``, ``text/markdown``, ``text/html``, ``application/pdf``…).
        section: What part of the document it is, where the format names one: a sheet, a heading, a notebook
            cell kind, an e-mail attachment's name; None otherwise.
        metadata: More fields for its records (e.g. ``ocr_engine``/``ocr_confidence`` of a scanned page).
    """

    text: str
    page: int | None = None
    mime_type: str = "text/plain"
    section: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Picture:
    """A picture inside a document (a figure, a slide's image, an e-mail attachment) or a page to read by OCR.

    Attributes:
        image: The picture: its encoded bytes as stored in the document (PNG, JPEG, …) or a PIL image.
        locator: Where it sits in the document, stable across reads: ``"page=3&image=2"`` (PDF),
            ``"word/media/image1.png"`` (a ZIP member), ``"attachment=2"`` (e-mail). With the document's path,
            `picture_at` finds the picture again (to show it to an LLM).
        page: 1-based page or slide number; None for documents without pages.
        context: Nearby text that describes it: caption, alt text, slide title, attachment name.
        scan: True for a rendered page without a text layer: its OCR text becomes a passage of that page,
            not a picture record.
    """

    image: Any
    locator: str
    page: int | None = None
    context: str = ""
    scan: bool = False


@dataclass
class Document:
    """What a reader found in a file: passages of text and pictures, in document order.

    Attributes:
        passages: The text, one passage per page, slide, sheet or part (see `Passage`).
        pictures: Pictures inside the document (and, for scanned PDFs, pages to read by OCR).
        mime_type: The document's type.
    """

    passages: list[Passage] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)
    mime_type: str = "text/plain"


# Pictures inside documents with a side under MIN_PICTURE_SIDE px (bullets, rules, 1-px spacers) or no more pixels
# than a 48 × 48 icon are decoration, not content.
MIN_PICTURE_SIDE = 32
MIN_PICTURE_PIXELS = 48 * 48 + 1


def decorative(width: int, height: int) -> bool:
    """Whether a picture inside a document is too small to be more than decoration (see `MIN_PICTURE_SIDE`)."""
    return min(width, height) < MIN_PICTURE_SIDE or width * height < MIN_PICTURE_PIXELS


Reader = Callable[[Path, str], Document]
# Sniffed kind → "module:function" of its reader, imported on first use (each format's library is optional).
# A reader takes (path, name for messages) and returns a `Document`, raising `MediaError` naming the file.
READERS: dict[str, str] = {
    "text": "mm_rag.embed.documents:read_text",
    "html": "mm_rag.embed.documents:read_html",
    "pdf": "mm_rag.embed.pdf:read_pdf",
    "docx": "mm_rag.embed.office:read_docx",
    "pptx": "mm_rag.embed.office:read_pptx",
    "xlsx": "mm_rag.embed.tables:read_xlsx",
    "csv": "mm_rag.embed.tables:read_csv",
    "epub": "mm_rag.embed.packages:read_epub",
    "notebook": "mm_rag.embed.packages:read_notebook",
    "email": "mm_rag.embed.packages:read_email",
    "ole": "mm_rag.embed.office:read_ole",  # encrypted OOXML and legacy .doc/.xls/.ppt: refused with the reason
}


def read_document(path: str | os.PathLike[str]) -> Document:
    """Read a document into passages and pictures, with the reader its content calls for (`READERS`).

    The format comes from the content (`sniff`), the extension only where the bytes say nothing. Text is
    decoded per its BOM (UTF-8/16/32), else as UTF-8, falling back to cp1252. Pages and documents with no
    text give no passage, so an empty text file gives an empty `Document`; a PDF page without a text layer
    gives a `Picture` with ``scan=True`` to read by OCR.

    Raises:
        MediaError: naming the file: unreadable, not a regular file, too large, binary data, a corrupt,
            encrypted or truncated document, or media of another kind (image, audio, video).
        MissingDependencyError: the library for this format is not installed (naming the extra).
    """
    name = describe(path)
    kind = sniff(path)
    target = READERS.get(kind or "")
    if target is None:
        raise MediaError(f"{name}: not a document ({f'looks like {kind}' if kind else 'unrecognised data'})")
    module, function = target.split(":")
    reader: Reader = getattr(importlib.import_module(module), function)
    return reader(Path(path), name)


def read_text(path: Path, name: str) -> Document:
    """Plain text or Markdown (by extension): one passage."""
    data = _read_bytes(path, name)
    mime_type = "text/markdown" if path.suffix.lower() in _MARKDOWN_SUFFIXES else "text/plain"
    text = decode_text(data, name) if data else ""
    return Document([Passage(text, None, mime_type)] if text.strip() else [], mime_type=mime_type)


def read_html(path: Path, name: str) -> Document:
    """HTML: visible text as one passage (scripts, styles and other non-text elements dropped)."""
    data = _read_bytes(path, name)
    text = _html_text(data, name) if data else ""
    return Document([Passage(text, None, "text/html")] if text.strip() else [], mime_type="text/html")


def decode_text(data: bytes, name: str = "<bytes>") -> str:
    """Decode text bytes to a string with ``\\n`` newlines: per the BOM, as UTF-8, else as cp1252.

    Mostly-valid UTF-8 with a few broken bytes stays UTF-8 (broken bytes become U+FFFD); text that is not
    UTF-8 at all is read as cp1252 (a superset of latin-1's printable characters), whose five undefined bytes
    become U+FFFD. Nothing here fails on an encoding.

    Raises:
        MediaError: naming `name`, when the data is binary (NUL bytes or many control characters).
    """
    for bom, encoding in _BOM_CODECS:
        if data.startswith(bom):
            return _newlines(data.decode(encoding, errors="replace"))
    encoding = text_encoding(data)  # UTF-16/32 without a BOM (mostly ASCII: every other byte NUL)
    if encoding is not None:
        return _newlines(data.decode(encoding, errors="replace"))
    if not looks_like_text(data):
        raise MediaError(f"{name}: binary data, not text (NUL bytes or control characters)")
    try:
        return _newlines(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass  # judged below
    lenient = data.decode("utf-8", errors="replace")
    genuine = data.count("\ufffd".encode())  # replacement characters already in the file
    broken = lenient.count("\ufffd") - genuine
    well_formed = len(lenient) - len(lenient.encode("ascii", errors="ignore")) - broken - genuine
    if well_formed > broken:
        return _newlines(lenient)
    return _newlines(data.decode("cp1252", errors="replace"))


def text_records(
    passages: Iterable[Passage],
    *,
    doc_id: str,
    uri: str | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap_tokens: int | None = None,
    tokenizer: TokenizerLike = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[Record]:
    """Chunk passages (see `chunk_text`) into ``"text"`` records, in document order.

    Each record has the chunk as ``text``, `uri` and `doc_id`, and metadata ``page`` (None unless paged),
    ``chunk`` (0-based, counted over the whole document), ``char_start``/``char_end`` (offsets into the
    passage text), ``mime_type``, ``section`` (when the passage has one), the passage's own metadata and any
    user `metadata`. The id is derived from the chunk text and
    ``doc_id#page=…&chunk=…``; ``content_hash`` from the text alone.

    Raises:
        InvalidInputError: bad chunking limits or an unsupported tokenizer.
    """
    records: list[Record] = []
    for passage in passages:
        for chunk in chunk_text(passage.text, max_tokens, overlap_tokens, tokenizer):
            number = len(records)
            fields = {
                **(metadata or {}),
                **(passage.metadata or {}),
                **({"section": passage.section} if passage.section is not None else {}),
                "page": passage.page,
                "chunk": number,
                "char_start": chunk.char_start,
                "char_end": chunk.char_end,
                "mime_type": passage.mime_type,
            }
            locator = f"{doc_id}#page={passage.page if passage.page is not None else ''}&chunk={number}"
            record_id = make_id(chunk.text, locator)
            records.append(Record(record_id, "text", chunk.text, uri, fields, doc_id, make_id(chunk.text)))
    return records


def _read_bytes(path: str | os.PathLike[str], name: str) -> bytes:
    data = read_head(path, MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise MediaError(f"{name}: larger than the {MAX_TEXT_BYTES}-byte limit for text documents")
    return data


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _html_text(data: bytes, name: str) -> str:
    """Visible text of an HTML page: block elements become paragraphs, whitespace inside them collapses."""
    bs4 = require("bs4", "HTML reading")
    if not looks_like_text(data):
        raise MediaError(f"{name}: binary data, not HTML")
    soup = bs4.BeautifulSoup(data, "html.parser")  # honours a BOM or <meta charset>, else guesses
    for tag in soup.find_all(_DROPPED_TAGS):
        tag.decompose()
    for tag in soup.find_all("br"):
        tag.replace_with("\n")
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    paragraphs = []
    for block in _BLANK_LINES.split(_newlines(soup.get_text())):
        lines = (" ".join(line.split()) for line in block.split("\n"))
        paragraph = "\n".join(line for line in lines if line)
        if paragraph:
            paragraphs.append(paragraph)
    return "\n\n".join(paragraphs)


def picture_at(path: str | os.PathLike[str], locator: str) -> Any:
    """The picture at `locator` inside the document at `path` (see `Picture.locator`), as an RGB PIL image.

    Used to show a retrieved picture to an LLM: PDF figures and pages are rendered again by PDFium, pictures
    stored as ZIP members (Word, PowerPoint, EPUB) are read straight from the archive, anything else (e-mail
    attachments, notebook outputs) by reading the document again.

    Raises:
        MediaError: naming the file and the locator, when the document or the picture is not there any more.
    """
    from mm_rag.embed.media import load_image

    name = describe(path)
    kind = sniff(path)
    if kind == "pdf":
        from mm_rag.embed.pdf import pdf_picture

        return pdf_picture(Path(path), locator)
    if kind in ("docx", "pptx", "xlsx", "epub") and "=" not in locator:
        try:
            with zipfile.ZipFile(path) as archive:
                data = archive.read(locator)
        except (zipfile.BadZipFile, KeyError, OSError) as error:
            raise MediaError(f"{name}: no picture {locator!r} in it: {error}") from error
        return load_image(data)
    for picture in read_document(path).pictures:
        if picture.locator == locator:
            return load_image(picture.image)
    raise MediaError(f"{name}: no picture {locator!r} in it")
