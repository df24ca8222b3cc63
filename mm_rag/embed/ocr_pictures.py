"""Pictures made readable for OCR: flattened to grey or RGB and bounded in size, light text on dark inverted,
tilted lines levelled. Each step is measured on the OCR benchmark's pictures (benchmarks/README.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image

# Long side bound: an 8000 x 8000 photo costs what a page does. A 300-dpi A4 scan of 6-pt print reads the same
# at 2560 px as at 3508 (1.0 char accuracy; 2048: 0.995) in 30% less time.
MAX_SIDE = 2560
# Tesseract's layout analysis skips light text on dark (title bars, buttons, dark mode): regions darker than
# this are inverted first. Lines tilted 1-8 degrees are levelled (the 5-degree page: 0.24 -> 1.0 char accuracy).
DARK_BACKGROUND = 110
MIN_DESKEW_DEGREES, MAX_DESKEW_DEGREES = 1.0, 8.0


def prepare(image: Image, mode: str) -> Image:
    """`image` as `mode` ("L" or "RGB"), transparency flattened onto white, its long side at most `MAX_SIDE`."""
    from PIL import Image as PILImage

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = PILImage.alpha_composite(PILImage.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    elif image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / float greys: stretched to 8 bits
        pixels = np.asarray(image, dtype=np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        image = PILImage.fromarray(((pixels - low) * (255.0 / max(high - low, 1e-6))).astype(np.uint8))
    image = image.convert(mode)  # before resizing: grey is a third of the pixels to average
    if max(image.size) > MAX_SIDE:  # area averaging: no ringing, 3x faster than Lanczos on 8000 x 8000
        scale = MAX_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, PILImage.Resampling.BOX)
    return image


def _box_filter(mask: np.ndarray, size: int, erode: bool) -> np.ndarray:
    """Binary erosion (or dilation) of `mask` by a `size` x `size` square, separably, with running sums."""
    for axis in (0, 1):
        padding = [(0, 0), (0, 0)]
        padding[axis] = (size // 2 + 1, size // 2)
        counts = np.cumsum(np.pad(mask, padding, constant_values=erode), axis=axis, dtype=np.int32)
        ahead, behind = np.split(counts, [size], axis=axis)[1], np.split(counts, [-size], axis=axis)[0]
        mask = (ahead - behind == size) if erode else (ahead - behind > 0)
    return mask


def _spread_along_rows(seed: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Every run of light cells in a row that holds a seed becomes seed."""
    cells = np.pad(light, ((0, 0), (0, 1))).ravel()  # a dark last column ends each row's final run
    run = np.cumsum(cells & ~np.concatenate(([False], cells[:-1])))
    seeded = np.zeros(int(run[-1]) + 1, dtype=bool)
    seeded[run[np.pad(seed & light, ((0, 0), (0, 1))).ravel()]] = True
    return (seeded[run] & cells).reshape(light.shape[0], -1)[:, :-1]


def light_background(gray: Image) -> Image:
    """Invert dark-background regions (title bars, buttons, dark mode) so that all text is dark on light."""
    from PIL import Image as PILImage

    factor = max(1, min(gray.size) // 250)  # cells of `factor` px, a fraction of a text line
    # An opening removes dark parts thinner than ~10 px (strokes of dark text, bold 48 px headings included);
    # a bar keeps the ~13 px of background above and below its label.
    size = 2 * max(1, round(5 / factor)) + 1
    dark = _box_filter(_box_filter(np.asarray(gray.reduce(factor)) < DARK_BACKGROUND, size, True), size, False)
    if not dark.any():
        return gray
    # Light cells that cannot reach the border without crossing dark ones (the letters inside a bar or on a
    # button) belong to the dark region: the light spreads from the border along rows and columns.
    light, outside = ~dark, np.zeros_like(dark)
    outside[[0, -1], :], outside[:, [0, -1]] = light[[0, -1], :], light[:, [0, -1]]
    while not np.array_equal(grown := _spread_along_rows(_spread_along_rows(outside, light).T, light.T).T, outside):
        outside = grown
    pixels = np.asarray(gray)
    mask = np.repeat(np.repeat(~outside, factor, axis=0), factor, axis=1)[: pixels.shape[0], : pixels.shape[1]]
    return PILImage.fromarray(np.where(mask, 255 - pixels, pixels).astype(np.uint8))


def deskew(gray: Image) -> Image:
    """`gray` (dark text on light) rotated level when its lines lean 1-8 degrees, by projection profile."""
    from PIL import Image as PILImage

    probe = gray.copy()
    probe.thumbnail((800, 800))
    ys, xs = np.nonzero(np.asarray(probe) < 128)
    if len(ys) < 200:
        return gray
    ys, xs = ys[:: 1 + len(ys) // 50_000], xs[:: 1 + len(xs) // 50_000]  # a fixed stride: deterministic
    # A level text line piles its ink into few rows: the angle with the most peaked row histogram (largest sum
    # of squared counts) is the skew; it must beat level by 10%, so a photo is left alone.
    angles = np.arange(-MAX_DESKEW_DEGREES, MAX_DESKEW_DEGREES + 0.01, 0.5)
    scores = []
    for angle in angles:
        shifted = ys - xs * np.tan(np.radians(angle))
        counts = np.bincount((shifted - shifted.min()).astype(np.int64))
        scores.append(float(np.dot(counts, counts)))
    best = float(angles[int(np.argmax(scores))])
    if abs(best) < MIN_DESKEW_DEGREES or max(scores) < 1.1 * scores[len(angles) // 2]:
        return gray
    return gray.rotate(best, PILImage.Resampling.BICUBIC, expand=True, fillcolor=int(np.median(np.asarray(probe))))
