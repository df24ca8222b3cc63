"""Decoding media into what models take: images (Pillow) now; audio and video decoders live beside it.

Every decoder names the input and the problem when it fails (`MediaError`), so a batch can report the one
bad file and go on with the rest.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from mm_rag._optional import require
from mm_rag.errors import InvalidInputError

# Images above this many pixels are refused before decoding (decompression bombs): 8K × 8K is plenty for
# any embedder, which downsizes to a few hundred pixels anyway.
MAX_IMAGE_PIXELS = 64_000_000

ImageSource = Any  # str | os.PathLike | bytes | PIL.Image.Image


class MediaError(InvalidInputError):
    """A media input is unreadable, corrupt, truncated, empty, unsupported or too large."""


def describe(source: Any) -> str:
    """A short name for an input in messages: its path, or its kind and size."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def load_image(
    source: ImageSource, max_pixels: int = MAX_IMAGE_PIXELS, *, draft_size: tuple[int, int] | None = None
) -> Any:
    """Decode an image from a path, bytes or PIL image into an RGB PIL image, upright per its EXIF tag.

    `draft_size` lets a JPEG decode at a reduced scale (1/2, 1/4 or 1/8, done in the DCT, several times
    cheaper than a full decode and a resize) while staying at least that large in both dimensions; pass the
    size the model resizes to. Other formats decode at full size.

    Pillow's process-wide limit applies as well (it refuses twice ``PIL.Image.MAX_IMAGE_PIXELS``, ~179 Mpx by
    default); an application that really means to embed larger images raises that setting itself.

    Raises:
        MediaError: unreadable, empty, not an image, truncated/corrupt, or more than `max_pixels` pixels.
    """
    Image = require("PIL.Image", "image decoding")
    ImageOps = require("PIL.ImageOps", "image decoding")
    name = describe(source)
    if isinstance(source, Image.Image):
        image = source
        source_size = image.size
    else:
        try:
            data = Path(source).read_bytes() if isinstance(source, (str, os.PathLike)) else bytes(source)
        except OSError as error:
            raise MediaError(f"{name}: cannot read: {error.strerror or error}") from error
        except TypeError as error:
            raise MediaError(f"{name}: expected a path, bytes or a PIL image") from error
        if not data:
            raise MediaError(f"{name}: empty file")
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as error:
            raise MediaError(f"{name}: image too large (decompression bomb?): {error}") from error
        except Image.UnidentifiedImageError as error:
            raise MediaError(f"{name}: not an image Pillow can read") from error
        except (OSError, SyntaxError, ValueError) as error:
            raise MediaError(f"{name}: corrupt image header: {error}") from error
        _check_pixels(image, name, max_pixels)
        source_size = image.size
        if draft_size is not None and image.format == "JPEG":
            image.draft("RGB", draft_size)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise MediaError(f"{name}: corrupt or truncated image: {error}") from error
    _check_pixels(image, name, max_pixels)
    turned = image
    try:
        turned = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError):  # a damaged EXIF block: keep the pixels as stored
        pass
    if turned.size != image.size:  # rotated a quarter turn: the source's upright size swaps too
        source_size = source_size[::-1]
    upright = turned if turned.mode == "RGB" else turned.convert("RGB")
    upright.info["source_size"] = source_size  # before any reduced-scale (draft) decoding
    upright.info["format"] = image.format  # e.g. "JPEG": conversions drop the attribute
    return upright


def _check_pixels(image: Any, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise MediaError(f"{name}: {width}x{height} image exceeds the {max_pixels}-pixel limit (decompression bomb?)")
    if width == 0 or height == 0:
        raise MediaError(f"{name}: image has no pixels")
