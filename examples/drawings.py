"""The examples' shared pictures: small drawings of coloured shapes, like those the tiny test CLIP knows."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (215, 35, 35), "green": (40, 165, 55), "blue": (35, 70, 215), "yellow": (230, 205, 35)}


def draw(colour: str, shape: str, path: Path) -> Path:
    """Save a 64-pixel drawing of one coloured circle, square, triangle or cross on grey at `path`."""
    image = Image.new("RGB", (64, 64), (128, 128, 128))
    pen, fill = ImageDraw.Draw(image), COLOURS[colour]
    if shape == "circle":
        pen.ellipse((14, 14, 50, 50), fill=fill)
    elif shape == "square":
        pen.rectangle((14, 14, 50, 50), fill=fill)
    elif shape == "triangle":
        pen.polygon([(32, 12), (52, 50), (12, 50)], fill=fill)
    else:
        pen.rectangle((26, 12, 38, 52), fill=fill)
        pen.rectangle((12, 26, 52, 38), fill=fill)
    image.save(path)
    return path
