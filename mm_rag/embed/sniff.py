"""What kind of media a file holds, from its first bytes: the ingestion pipeline routes files with `sniff`.

Magic bytes decide first; the file extension is consulted only when the bytes are inconclusive (empty files,
unknown binary data), so a PNG named ``photo.txt`` is an image and an HTML error page saved as ``clip.mp4`` is
HTML. Containers that hold either audio or video (MP4/MOV, Matroska/WebM, ASF) are told apart by reading only
their headers with PyAV, when it is installed.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal

from mm_rag._optional import available, require
from mm_rag.embed.media import MediaError, describe

Kind = Literal["image", "audio", "video", "text", "pdf", "html"]

SNIFF_BYTES = 8192  # how much of a file `sniff` reads

# Extension → kind, used only when the bytes say nothing.
_EXTENSION_GROUPS: dict[Kind, str] = {
    "image": ".jpg .jpeg .png .gif .webp .bmp .tif .tiff .avif .heic",
    "audio": ".wav .flac .ogg .oga .opus .mp3 .m4a .aac .wma .aif .aiff",
    "video": ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .wmv .flv",
    "text": ".txt .text .md .markdown .rst .csv .log",
    "html": ".html .htm .xhtml",
    "pdf": ".pdf",
}
EXTENSIONS: dict[str, Kind] = {suffix: kind for kind, group in _EXTENSION_GROUPS.items() for suffix in group.split()}

_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_IMAGE_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1"}
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_HTML_TAG = re.compile(rb"<(?:!doctype\s+html|html|head|body|title|meta|div|p|table|script|style)[\s>/]", re.IGNORECASE)
_SVG = re.compile(
    rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!doctype\s+svg[^>]*>\s*)?<svg[\s>]", re.IGNORECASE | re.DOTALL
)
# Control bytes that do not occur in text (tab, newline, carriage return, form feed and escape do).
_CONTROL = bytes(set(range(32)) - {9, 10, 12, 13, 27}) + b"\x7f"
MAX_CONTROL_RATIO = 0.02  # share of control bytes above which data is binary, not text


def sniff(source: str | os.PathLike[str] | bytes) -> Kind | None:
    """Tell what `source` (a path, or the leading bytes of a file) holds, or None when unknown.

    Recognises JPEG, PNG, GIF, WebP, BMP, TIFF, HEIF/AVIF; WAV, FLAC, Ogg, MP3 (ID3 tag or frame sync), AAC,
    AIFF, M4A; MP4/MOV, Matroska/WebM, AVI, MPEG-PS/TS, FLV, ASF; PDF; HTML; and UTF-8/UTF-16/legacy 8-bit text
    (SVG text counts as an image, which its decoder may then refuse). Ogg is video when it carries Theora; MP4/MOV, Matroska and ASF are probed with PyAV (headers only) for a
    video stream that is not cover art. The extension decides only when the bytes are inconclusive, and
    refines text into HTML for ``.html`` files.

    Raises:
        MediaError: the path is missing, unreadable, or not a regular file (a directory, FIFO, device).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        head, path = bytes(source[:SNIFF_BYTES]), None
    else:
        path = Path(source)
        head = read_head(path, SNIFF_BYTES)
    kind = _sniff_head(head, path)
    extension = EXTENSIONS.get(path.suffix.lower()) if path is not None else None
    if kind is None:
        return extension
    if kind == "text" and extension == "html":
        return "html"
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
    """Whether `data` reads as text: a Unicode BOM, or no NUL bytes and few control characters.

    Encodings without a BOM are judged by their bytes alone, so UTF-8 and legacy 8-bit text (cp1252, latin-1)
    pass while binary data (NUL bytes, many control bytes) fails. Empty data is not text: it says nothing.
    """
    if data.startswith(_BOMS):
        return True
    if not data or b"\0" in data:
        return False
    controls = len(data) - len(data.translate(None, _CONTROL))
    return controls <= MAX_CONTROL_RATIO * len(data)


def _sniff_head(head: bytes, path: Path | None) -> Kind | None:
    kind = _image_or_audio(head)
    if kind is not None:
        return kind
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
    if _is_mpeg_audio(head):
        return "audio"
    if looks_like_text(head):
        if _SVG.search(head[:1024]):
            return "image"  # an image, though Pillow cannot decode it: its decoder gives the precise error
        return "html" if _looks_like_html(head) else "text"
    return None


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


def _looks_like_html(head: bytes) -> bool:
    for bom in _BOMS:
        if head.startswith(bom):
            encoding = {codecs.BOM_UTF8: "utf-8-sig"}.get(bom, "utf-16" if len(bom) == 2 else "utf-32")
            head = head.decode(encoding, errors="ignore").encode("utf-8")
            break
    start = head.lstrip()
    return start.startswith(b"<") and _HTML_TAG.search(start[:4096]) is not None


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
