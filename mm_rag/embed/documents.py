"""Text documents (plain text, Markdown, HTML, PDF) into passages, then into chunked text records.

`read_document` trusts a file's bytes over its name (see `mm_rag.embed.sniff`), decodes legacy encodings
instead of failing on them, and refuses binary data with a `MediaError` naming the file. `text_records` cuts
passages into token-aware chunks (`mm_rag.embed.chunking`) and makes one ``"text"`` record per chunk.
"""

from __future__ import annotations

import codecs
import os
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mm_rag._optional import require
from mm_rag.embed.chunking import DEFAULT_MAX_TOKENS, Chunk, TokenizerLike, chunk_text
from mm_rag.embed.media import MediaError, describe
from mm_rag.embed.sniff import looks_like_text, read_head, sniff
from mm_rag.records import Record, make_id

__all__ = ["MAX_TEXT_BYTES", "Chunk", "Passage", "chunk_text", "decode_text", "read_document", "text_records"]

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
        page: 1-based page number for paged formats (PDF); None otherwise.
        mime_type: The document's type: ``text/plain``, ``text/markdown``, ``text/html`` or ``application/pdf``.
    """

    text: str
    page: int | None = None
    mime_type: str = "text/plain"


def read_document(path: str | os.PathLike[str]) -> list[Passage]:
    """Read a text document into passages: one per PDF page with text, one for any other document.

    The format comes from the content (`sniff`), the extension only where the bytes say nothing: PDF via
    pypdf, HTML via BeautifulSoup (scripts, styles and other non-text elements dropped; block elements
    become paragraphs), Markdown (by extension) and plain text as they are. Text is decoded as UTF-8 (or per
    its BOM), falling back to cp1252 when it is not valid UTF-8. Pages and documents with no text give no
    passage, so an empty text file or a scanned PDF returns ``[]``.

    Raises:
        MediaError: naming the file: unreadable, not a regular file, larger than `MAX_TEXT_BYTES`, binary data,
            a corrupt or encrypted PDF, or media of another kind (image, audio, video).
    """
    name = describe(path)
    kind = sniff(path)
    if kind == "pdf":
        return _read_pdf(path, name)
    if kind not in ("text", "html"):
        raise MediaError(f"{name}: not a text document ({f'looks like {kind}' if kind else 'unrecognised data'})")
    data = _read_bytes(path, name)
    if not data:
        return []
    if kind == "html":
        text, mime_type = _html_text(data, name), "text/html"
    else:
        mime_type = "text/markdown" if Path(path).suffix.lower() in _MARKDOWN_SUFFIXES else "text/plain"
        text = decode_text(data, name)
    return [Passage(text, None, mime_type)] if text.strip() else []


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
    passage text), ``mime_type`` and any user `metadata`. The id is derived from the chunk text and
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


def _read_pdf(path: str | os.PathLike[str], name: str) -> list[Passage]:
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
    passages = []
    for number, page in enumerate(pages, start=1):
        try:
            text = _newlines(page.extract_text() or "")
        except errors as error:
            raise MediaError(f"{name}: cannot extract the text of page {number}: {error}") from error
        if text.strip():
            passages.append(Passage(text, number, "application/pdf"))
    return passages
