"""Regenerate the bundled example media in `examples/media/` (run from the repository root; needs espeak-ng).

The files are committed, so the demo never needs this script; it documents how they were made and remakes them
after a change. Everything is synthetic: drawn pictures, speech spoken by espeak-ng, a video of coloured scenes
with a spoken soundtrack, a few short documents, a scanned letter (a PDF page that is only a picture), a
screenshot of an invoice and a slide deck with a site map.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fixtures.mediagen import Scene, write_video
from fixtures.speech import speak_sentences
from fixtures.tiny_clip import draw_shape

MEDIA = ROOT / "examples" / "media"
MEETING = (
    "Welcome to the planning meeting for the harbour festival.",
    "The fireworks start at ten in the evening on Saturday.",
    "The budget for the stage is four thousand euros.",
)
TOUR = (
    "First the red room, where the old maps hang.",
    "Then the green garden with the fountain.",
    "Finally the blue hall.",
)
DOCUMENTS = {
    "festival-notes.md": "# Harbour festival\n\nThe festival runs for three days in July. Food stalls line the quay, "
    "and the sailing race starts from the lighthouse on Sunday morning.\n",
    "recipes.txt": "Plum cake: bake the plums with brown sugar and cinnamon for forty minutes at 180 degrees.\n",
    "museum.html": "<html><head><title>Museum guide</title></head><body><h1>Museum guide</h1>"
    "<p>The map collection in the red room dates from the sixteenth century.</p></body></html>\n",
}


LETTER = (
    "Harbour Library",
    "12 Quay Street",
    "",
    "Dear festival committee,",
    "",
    "During the harbour festival the library",
    "closes at six in the evening on Fridays.",
    "The reading room stays open for visitors",
    "of the map exhibition until nine.",
    "",
    "Kind regards, Ada Lindqvist",
)
INVOICE = (
    ("Invoice", "INV-2024-0413"),
    ("Customer", "Harbour festival committee"),
    ("Item", "Stage lighting rental"),
    ("Due date", "2024-07-01"),
    ("Total", "EUR 1,284.50"),
)
FONTS = Path("/usr/share/fonts/truetype/dejavu")


def scanned_letter(path: Path) -> None:
    """A one-page PDF that is only a picture of a typed letter (no text layer), like a scanner makes."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter, ImageFont
    from reportlab.lib.pagesizes import A5
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    page = Image.new("L", (874, 1240), 236)  # A5 at 150 dpi, greyish paper
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(str(FONTS / "DejaVuSerif.ttf"), 30)
    for number, line in enumerate(LETTER):
        draw.text((90, 120 + number * 52), line, fill=25, font=font)
    speckle = np.random.default_rng(7).normal(0, 5, (page.height, page.width))
    page = Image.fromarray(np.clip(np.asarray(page, dtype=float) + speckle, 0, 255).astype("uint8"))
    page = page.rotate(0.6, fillcolor=236, resample=Image.BICUBIC).filter(ImageFilter.GaussianBlur(0.6))
    scan = io.BytesIO()
    page.save(scan, format="JPEG", quality=55)  # scanners store pages as JPEG, which the PDF keeps as it is
    pdf = canvas.Canvas(str(path), pagesize=A5)
    pdf.drawImage(ImageReader(io.BytesIO(scan.getvalue())), 0, 0, *A5)
    pdf.showPage()
    pdf.save()


def invoice_screenshot(path: Path) -> None:
    """A screenshot of an accounting app showing one invoice."""
    from PIL import Image, ImageDraw, ImageFont

    screen = Image.new("RGB", (720, 360), (246, 247, 250))
    draw = ImageDraw.Draw(screen)
    bold = ImageFont.truetype(str(FONTS / "DejaVuSans-Bold.ttf"), 22)
    regular = ImageFont.truetype(str(FONTS / "DejaVuSans.ttf"), 20)
    draw.rectangle((0, 0, 720, 52), fill=(38, 70, 120))
    draw.text((20, 13), "Accounts - Invoices", fill="white", font=bold)
    for number, (label, value) in enumerate(INVOICE):
        top = 80 + number * 52
        draw.rectangle((20, top - 8, 700, top + 36), outline=(210, 214, 222), fill="white")
        draw.text((36, top), label, fill=(90, 96, 110), font=regular)
        draw.text((250, top), value, fill=(20, 24, 32), font=bold if label in ("Invoice", "Total") else regular)
    screen.save(path)


def festival_slides(path: Path, site_map: Path) -> None:
    """A two-slide deck; the second slide shows the festival's site map, with alt text and speaker notes."""
    from pptx import Presentation
    from pptx.util import Inches, Pt

    deck = Presentation()
    title = deck.slides.add_slide(deck.slide_layouts[0])
    title.shapes.title.text = "Harbour festival plan"
    title.placeholders[1].text = "Stages, stalls and the sailing race"
    slide = deck.slides.add_slide(deck.slide_layouts[5])
    slide.shapes.title.text = "Site map of the stage and the food stalls"
    picture = slide.shapes.add_picture(str(site_map), Inches(2.5), Inches(1.8), height=Inches(4.5))
    picture._element.nvPicPr.cNvPr.set("descr", "Site map: the stage by the lighthouse, food stalls along the quay")
    notes = slide.notes_slide.notes_text_frame
    notes.text = "The stage faces the water; the first-aid tent is next to the food stalls."
    for paragraph in notes.paragraphs:
        paragraph.runs[0].font.size = Pt(12)
    deck.save(str(path))


def site_map(path: Path) -> None:
    """A drawn map: the quay, the lighthouse, the stage and a row of stalls."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (400, 400), (120, 170, 220))  # water
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 250, 400, 400), fill=(210, 200, 170))  # the quay
    draw.polygon([(330, 60), (360, 60), (350, 230), (340, 230)], fill=(240, 240, 240), outline=(180, 30, 30))
    draw.rectangle((150, 180, 290, 250), fill=(150, 40, 40))  # the stage
    for left in range(20, 380, 60):
        draw.rectangle((left, 300, left + 40, 340), fill=(240, 180, 40))  # food stalls
    image.save(path)


def main() -> None:
    import soundfile

    for folder in ("images", "audio", "video", "docs"):
        (MEDIA / folder).mkdir(parents=True, exist_ok=True)
    for colour, shape in (("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross")):
        draw_shape(colour, shape, size=128).save(MEDIA / "images" / f"{colour}-{shape}.jpg", quality=90)
    with tempfile.TemporaryDirectory() as scratch:
        meeting = speak_sentences(MEETING, Path(scratch) / "meeting.wav", gap=1.0, lead=0.5)
        samples, rate = soundfile.read(meeting.path, dtype="float32")
        soundfile.write(MEDIA / "audio" / "planning-meeting.ogg", samples, rate, format="OGG", subtype="VORBIS")
        tour = speak_sentences(TOUR, Path(scratch) / "tour.wav", gap=0.8, lead=0.3)
        samples, rate = soundfile.read(tour.path, dtype="float32")
        starts = [0.0, *(round(start - 0.2, 1) for start, _ in tour.spans[1:])]
        scenes = [Scene(start, colour) for start, colour in zip(starts, [(200, 40, 40), (40, 170, 60), (40, 60, 200)])]
        write_video(MEDIA / "video" / "museum-tour.mp4", scenes, duration=len(samples) / rate, audio=(samples, rate))
    for name, text in DOCUMENTS.items():
        (MEDIA / "docs" / name).write_text(text)
    scanned_letter(MEDIA / "docs" / "scanned-letter.pdf")
    invoice_screenshot(MEDIA / "images" / "invoice-screenshot.png")
    with tempfile.TemporaryDirectory() as scratch:
        site_map(Path(scratch) / "site-map.png")
        festival_slides(MEDIA / "docs" / "festival-plan.pptx", Path(scratch) / "site-map.png")
    print(f"example media written to {MEDIA}")


if __name__ == "__main__":
    main()
