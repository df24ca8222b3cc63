"""What kind of media a file holds, from its first bytes: the ingestion pipeline routes files with `sniff`.

Magic bytes decide first; the file extension is consulted only when the bytes are inconclusive (empty files,
unknown binary data), so a PNG named ``photo.txt`` is an image and an HTML error page saved as ``clip.mp4`` is
HTML. Containers that hold either audio or video (MP4/MOV, Matroska/WebM, ASF) are told apart by reading only
their headers with PyAV, when it is installed. ZIP packages (Word, PowerPoint, Excel, EPUB) are told apart by
their member names, text by its content (HTML, e-mail, Jupyter notebook).
"""

from __future__ import annotations

import codecs
import os
import re
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Literal

from mm_rag._optional import available, require
from mm_rag.embed.media import MediaError, describe

Kind = Literal[
    "image", "audio", "video", "text", "pdf", "html", "docx", "pptx", "xlsx", "epub", "notebook", "email", "csv", "ole"
]  # fmt: skip

SNIFF_BYTES = 8192  # how much of a file `sniff` reads

# Extension → kind, used only when the bytes say nothing.
_EXTENSION_GROUPS: dict[Kind, str] = {
    "image": ".jpg .jpeg .png .gif .webp .bmp .tif .tiff .avif .heic",
    "audio": ".wav .flac .ogg .oga .opus .mp3 .m4a .aac .wma .aif .aiff",
    "video": ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .wmv .flv",
    "text": ".txt .text .md .markdown .rst .log",
    "html": ".html .htm .xhtml",
    "pdf": ".pdf",
    "docx": ".docx",
    "pptx": ".pptx",
    "xlsx": ".xlsx .xlsm",
    "epub": ".epub",
    "notebook": ".ipynb",
    "email": ".eml",
    "csv": ".csv .tsv",
    "ole": ".doc .xls .ppt",
}
EXTENSIONS: dict[str, Kind] = {suffix: kind for kind, group in _EXTENSION_GROUPS.items() for suffix in group.split()}
_PACKAGE_KINDS = frozenset({"docx", "pptx", "xlsx", "epub"})  # ZIP-based formats
_TEXT_FORMATS = frozenset({"html", "csv", "notebook", "email"})  # text that an extension may refine

_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_IMAGE_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1"}
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
OLE_SIGNATURE = bytes.fromhex("d0cf11e0a1b11ae1")  # OLE compound file: legacy Office, encrypted OOXML
# Member that marks each OOXML package (beside [Content_Types].xml), checked in this order.
_OOXML_PARTS: tuple[tuple[Kind, str], ...] = (
    ("docx", "word/document.xml"), ("pptx", "ppt/presentation.xml"), ("xlsx", "xl/workbook.xml")
)  # fmt: skip
# BOM → codec; UTF-32 first, since the UTF-32 LE BOM starts with the UTF-16 LE one.
_BOM_ENCODINGS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)  # fmt: skip
# Without a BOM: (codec, code-unit width, offsets within a unit that are NUL for ASCII characters).
_BOMLESS = (("utf-32-le", 4, (1, 2, 3)), ("utf-32-be", 4, (0, 1, 2)), ("utf-16-le", 2, (1,)), ("utf-16-be", 2, (0,)))
MIN_ASCII_UNITS = 0.6  # share of NUL bytes where ASCII text has them, for BOM-less UTF-16/32
_HTML_TAG = re.compile(r"<(?:!doctype\s+html|html|head|body|title|meta|div|p|table|script|style)[\s>/]", re.IGNORECASE)
_SVG = re.compile(
    r"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!doctype\s+svg[^>]*>\s*)?<svg[\s>]", re.IGNORECASE | re.DOTALL
)
_HEADER_FIELD = re.compile(r"([!-9;-~]+):")  # RFC 5322 field name: printable ASCII but the colon
# Headers that only e-mail starts with; two header lines including one of these make a message.
_MAIL_HEADERS = frozenset({"from", "received", "return-path", "mime-version", "subject", "message-id", "delivered-to"})
_NOTEBOOK_CELLS = re.compile(r'^\s*\{.*?"(?:cells|worksheets)"\s*:\s*\[', re.DOTALL)
_NOTEBOOK_FORMAT = re.compile(r'"nbformat"\s*:\s*\d')
# Control bytes that do not occur in text (tab, newline, carriage return, form feed and escape do).
_CONTROL = bytes(set(range(32)) - {9, 10, 12, 13, 27}) + b"\x7f"
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
MAX_CONTROL_RATIO = 0.02  # share of control bytes above which data is binary, not text
MAX_REPLACEMENT_RATIO = 0.01  # share of undecodable code units above which data is not in that encoding


def sniff(source: str | os.PathLike[str] | bytes) -> Kind | None:
    """Tell what `source` (a path, or the leading bytes of a file) holds, or None when unknown.

    Recognises JPEG, PNG, GIF, WebP, BMP, TIFF, HEIF/AVIF; WAV, FLAC, Ogg, MP3 (ID3 tag or frame sync), AAC,
    AIFF, M4A; MP4/MOV, Matroska/WebM, AVI, MPEG-PS/TS, FLV, ASF; PDF; Word, PowerPoint and Excel (OOXML) and
    EPUB by their ZIP members; OLE compound files (legacy or encrypted Office) as ``"ole"``; text in UTF-8,
    UTF-16/32 (with or without a BOM) or a legacy 8-bit encoding, which is HTML, an e-mail (RFC 822 headers)
    or a Jupyter notebook by its content (SVG text counts as an image, which its decoder may then refuse).
    Ogg is video when it carries Theora; MP4/MOV, Matroska and ASF are probed with PyAV (headers only) for a
    video stream that is not cover art. The extension decides only when the bytes are inconclusive, refines
    text into HTML, CSV, notebook or e-mail by its name (``.html``, ``.csv``/``.tsv``, ``.ipynb``, ``.eml``),
    and routes a damaged ZIP named like a package format to that format's reader, which reports the damage.
    Any other ZIP archive is None. Given only bytes, ZIP packages are judged by the members in them.

    Raises:
        MediaError: the path is missing, unreadable, or not a regular file (a directory, FIFO, device).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        head, path = bytes(source[:SNIFF_BYTES]), None
    else:
        path = Path(source)
        head = read_head(path, SNIFF_BYTES)
    extension = EXTENSIONS.get(path.suffix.lower()) if path is not None else None
    if head.startswith(_ZIP_SIGNATURES):
        return _package_kind(head, path) or (extension if extension in _PACKAGE_KINDS else None)
    kind = _sniff_head(head, path)
    if kind is None:
        return extension
    if kind == "text" and extension in _TEXT_FORMATS:
        return extension
    return kind


def read_head(path: str | os.PathLike[str], size: int) -> bytes:
    """Read up to `size` leading bytes of a regular file, refusing directories, FIFOs and devices.

    Raises:
        MediaError: naming the path, when it is missing, unreadable or not a regular file.
    """
    name = describe(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # reading a FIFO or device could block forever
            raise MediaError(f"{name}: not a regular file")
        with open(path, "rb") as file:
            return file.read(size)
    except OSError as error:
        raise MediaError(f"{name}: cannot read: {error.strerror or error}") from error


def looks_like_text(data: bytes) -> bool:
    """Whether `data` reads as text: Unicode (see `text_encoding`), or no NUL bytes and few control characters.

    Encodings without a BOM are judged by their bytes alone, so UTF-8 and legacy 8-bit text (cp1252, latin-1)
    pass while binary data (NUL bytes, many control bytes) fails; UTF-16/32 without a BOM passes only when it
    decodes as such. Empty data is not text: it says nothing.
    """
    if not data:
        return False
    if text_encoding(data) is not None:
        return True
    if b"\0" in data:
        return False
    controls = len(data) - len(data.translate(None, _CONTROL))
    return controls <= MAX_CONTROL_RATIO * len(data)


def text_encoding(data: bytes) -> str | None:
    """The Unicode codec `data` is in when its bytes tell: a BOM, or the NUL bytes of BOM-less UTF-16/32.

    A BOM gives ``"utf-8-sig"``, ``"utf-16"`` or ``"utf-32"`` (codecs that consume it); mostly-ASCII UTF-16/32
    without one gives ``"utf-16-le"``, ``"utf-32-be"``… Either way the data must decode into plausible text
    (hardly any invalid code units or control characters), so binary data that happens to start like a BOM is
    not taken for text. None for anything else: UTF-8 without a BOM and legacy 8-bit text are told apart by
    `mm_rag.embed.documents.decode_text`. A code unit cut off at the end of `data` (a file's head) is ignored.
    """
    for bom, encoding in _BOM_ENCODINGS:
        if data.startswith(bom):
            return encoding if _plausible(data, encoding) else None
    for encoding, width, offsets in _BOMLESS:
        usable = len(data) - len(data) % width
        if usable < 2 * width:
            continue
        nuls = sum(data[offset:usable:width].count(0) for offset in offsets)
        if nuls >= MIN_ASCII_UNITS * len(offsets) * usable // width and _plausible(data, encoding):
            return encoding
    return None


def _plausible(data: bytes, encoding: str) -> bool:
    """Whether `data` decodes in `encoding` into text: few invalid units, no NUL, few control characters."""
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(data, final=False)
    if not text or "\0" in text:
        return False
    invalid, controls = text.count("\ufffd"), len(_CONTROL_CHARS.findall(text))
    return invalid <= MAX_REPLACEMENT_RATIO * len(text) and controls <= MAX_CONTROL_RATIO * len(text)


def _sniff_head(head: bytes, path: Path | None) -> Kind | None:
    kind = _image_or_audio(head)
    if kind is not None:
        return kind
    if head.startswith(OLE_SIGNATURE):
        return "ole"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AUDIO_BRANDS:
            return "audio"
        if brand in _IMAGE_BRANDS:
            return "image"
        return _probe(path, default="video")
    if head[4:8] in _QUICKTIME_ATOMS and int.from_bytes(head[:4], "big") >= 8:  # QuickTime without ftyp
        return _probe(path, default="video")
    if head.startswith((b"\x1aE\xdf\xa3", _ASF_GUID)):  # Matroska/WebM, ASF (WMV/WMA)
        return _probe(path, default="video")
    if head.startswith(b"OggS"):
        return "video" if b"\x80theora" in head else "audio"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head.startswith((b"FLV\x01", b"\x00\x00\x01\xba")) or _is_transport_stream(head):
        return "video"
    if b"%PDF-" in head[:1024]:
        return "pdf"
    # Unicode text before the MPEG frame sync: a UTF-16 LE BOM (FF FE) passes that check.
    encoding = text_encoding(head)
    if encoding is None and _is_mpeg_audio(head):
        return "audio"
    if encoding is None and not looks_like_text(head):
        return None
    text = codecs.getincrementaldecoder(encoding or "utf-8")(errors="replace").decode(head, final=False)
    return _text_kind(text, path, _byte_order(head, encoding))


def _byte_order(head: bytes, encoding: str | None) -> str:
    """The codec for bytes after a BOM (`encoding` names a BOM-consuming one): its explicit byte order."""
    if encoding == "utf-16":
        return "utf-16-le" if head.startswith(codecs.BOM_UTF16_LE) else "utf-16-be"
    if encoding == "utf-32":
        return "utf-32-le" if head.startswith(codecs.BOM_UTF32_LE) else "utf-32-be"
    return "utf-8" if encoding in (None, "utf-8-sig") else encoding


def _text_kind(text: str, path: Path | None, codec: str) -> Kind:
    if _SVG.search(text[:1024]):
        return "image"  # an image, though Pillow cannot decode it: its decoder gives the precise error
    start = text.lstrip()
    if start.startswith("<") and _HTML_TAG.search(start[:4096]) is not None:
        return "html"
    if _looks_like_email(text):
        return "email"
    if _NOTEBOOK_CELLS.match(text) and (_NOTEBOOK_FORMAT.search(text) or _tail_has_nbformat(path, codec)):
        return "notebook"
    return "text"


def _looks_like_email(text: str) -> bool:
    """RFC 822 headers first: at least two header lines, one of them a field only e-mail starts with."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[0].startswith("From "):  # an mbox envelope line before the headers
        lines = lines[1:]
    if "" not in lines:
        lines = lines[:-1]  # the head ends inside the header block: its last line may be cut short
    fields: list[str] = []
    for line in lines:
        if not line:
            break
        if line[0] in " \t" and fields:  # a folded header's continuation
            continue
        match = _HEADER_FIELD.match(line)
        if match is None:
            return False
        fields.append(match.group(1).lower())
    return len(fields) >= 2 and not _MAIL_HEADERS.isdisjoint(fields)


def _tail_has_nbformat(path: Path | None, codec: str) -> bool:
    """Whether a notebook's version key is in the last KiB: nbformat writes it after the cells."""
    if path is None:
        return False
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(SNIFF_BYTES, size - 1024) // 4 * 4)  # whole UTF-16/32 code units
            tail = file.read()
    except OSError:
        return False  # the reader reports an unreadable file
    return _NOTEBOOK_FORMAT.search(tail.decode(codec, errors="replace")) is not None


def _package_kind(head: bytes, path: Path | None) -> Kind | None:
    """A ZIP package's format from its member names (the central directory, or the local headers in `head`)."""
    if path is None:
        names, mimetype = _local_members(head)
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                info = archive.getinfo("mimetype") if "mimetype" in names else None
                mimetype = archive.read(info) if info is not None and info.file_size <= 64 else b""
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError, ValueError):
            return None  # damaged (or an encrypted mimetype member): the extension decides
    if mimetype.strip() == b"application/epub+zip":
        return "epub"
    if "[Content_Types].xml" in names:
        for kind, part in _OOXML_PARTS:
            if part in names:
                return kind
    return None


def _local_members(head: bytes) -> tuple[set[str], bytes]:
    """Member names in the local file headers within `head`, and the EPUB ``mimetype`` member's content."""
    names: set[str] = set()
    mimetype = b""
    offset = 0
    while head.startswith(b"PK\x03\x04", offset) and offset + 30 <= len(head):
        flags, method = struct.unpack_from("<HH", head, offset + 6)
        size, _, name_length, extra_length = struct.unpack_from("<IIHH", head, offset + 18)
        name = head[offset + 30 : offset + 30 + name_length].decode("utf-8", errors="replace")
        start = offset + 30 + name_length + extra_length
        names.add(name)
        if name == "mimetype" and method == 0:
            mimetype = head[start : start + size]
        if flags & 8:  # sizes follow the data in a descriptor: the next header cannot be found
            break
        offset = start + size
    return names, mimetype


def _image_or_audio(head: bytes) -> Kind | None:
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\0", b"MM\0*")):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if (
        head.startswith(b"BM")
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in {12, 40, 52, 56, 64, 108, 124}
    ):
        return "image"
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "audio"
    if head.startswith((b"fLaC", b"ID3", b"#!AMR", b"caff")):
        return "audio"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio"
    return None


def _is_mpeg_audio(head: bytes) -> bool:
    """An MPEG audio frame header (MP1/2/3) or an ADTS header (AAC) at the start."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    if layer == 0:  # ADTS: 12-bit sync, MPEG-4/2 id, a valid sampling-frequency index
        return head[1] & 0xF6 == 0xF0 and (head[2] >> 2) & 0xF < 13
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    return version != 1 and bitrate not in (0, 15) and rate != 3


def _is_transport_stream(head: bytes) -> bool:
    return len(head) >= 3 * 188 and all(head[i] == 0x47 for i in (0, 188, 376))


def _probe(path: Path | None, default: Kind) -> Kind:
    """Read a container's headers (no decoding): "video" with a real video stream, "audio" with only audio.

    Cover art stored as a video stream (an attached picture) does not make a file a video. When PyAV is not
    installed, the file cannot be opened (corrupt, truncated) or only bytes are given, `default` is returned
    so that the decoder for that kind reports the problem.
    """
    if path is None or not available("av"):
        return default
    av = require("av", "telling audio from video containers")
    try:
        container = av.open(str(path), options={"probesize": "65536", "analyzeduration": "0"})
    except (av.FFmpegError, OSError):
        return default
    with container:
        return _stream_kind(av, container) or default


def _stream_kind(av: Any, container: Any) -> Kind | None:
    attached = av.stream.Disposition.attached_pic
    if any(not (attached & stream.disposition) for stream in container.streams.video):
        return "video"
    return "audio" if container.streams.audio else None
