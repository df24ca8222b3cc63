"""A record's media over HTTP: the file it came from (with range requests, for audio and video), or its picture.

Only files inside the store's folder, its uploads folder or the ingest root are served. The path comes from the
stored record, never from the request, and is resolved (links followed) before it is checked, so neither an id
nor a link inside an allowed folder reaches anything outside them.

What the server sends it never lets a browser run: pictures, audio and video are shown inline; anything else (a
text, an HTML page, an SVG, a PDF) goes as an attachment, and every answer forbids scripts and sniffing.
"""

from __future__ import annotations

import io
import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException

from mm_rag.context import has_picture, record_picture
from mm_rag.records import Record

# Largest picture `/media` makes from a picture inside a document (a PDF figure, a slide's image).
MAX_PICTURE_SIDE = 2048
_JPEG_QUALITY = 85
# Types a browser shows without running anything; every other file is sent as an attachment.
_INLINE = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff", "audio/", "video/")
# No script, no plugin, no navigation from what /media sends, even if a browser opens it as a page.
MEDIA_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; media-src 'self'; sandbox",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Media:
    """What `/media` sends: a file as it is (`path`), or a picture made for the request (`data`)."""

    media_type: str
    path: Path | None = None
    data: bytes | None = None

    @property
    def inline(self) -> bool:
        return self.media_type.startswith(_INLINE)


def record_media(record: Record, roots: Iterable[Path], thumb: int | None) -> Media:
    """The media of `record`: with `thumb`, its picture as a JPEG at most `thumb` px on its long side (an image,
    a picture inside a document, a video keyframe); else its file, or its picture when it lives inside a
    document.

    Raises:
        HTTPException: 404 for a record without media (or without a picture, for `thumb`) or whose file is
            gone, 403 for a file outside `roots`, 422 for a picture that cannot be decoded.
    """
    if record.uri is None:
        raise HTTPException(status_code=404, detail=f"record {record.id!r} has no media file")
    path = Path(record.uri).resolve()
    if not any(path.is_relative_to(root) for root in roots):
        raise HTTPException(
            status_code=403,
            detail=f"the file of record {record.id!r} is outside the store's folder and the ingest root: this"
            " server does not send it (serve with --ingest-root on the folder it was ingested from)",
        )
    if not path.is_file():
        raise HTTPException(status_code=404, detail=f"the file of record {record.id!r} is not there any more")
    inside_document = "picture" in record.metadata
    if thumb is None and not inside_document:
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Media(media_type, path=path)
    if not has_picture(record):
        raise HTTPException(status_code=404, detail=f"record {record.id!r} ({record.modality}) shows no picture")
    image = record_picture(record, thumb or MAX_PICTURE_SIDE)  # MediaError: 422, like any undecodable media
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return Media("image/jpeg", data=buffer.getvalue())
