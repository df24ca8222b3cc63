"""Regenerate the bundled example media in `examples/media/` (run from the repository root; needs espeak-ng).

The files are committed, so the demo never needs this script; it documents how they were made and remakes them
after a change. Everything is synthetic: drawn pictures, speech spoken by espeak-ng, a video of coloured scenes
with a spoken soundtrack, and a few short documents.
"""

from __future__ import annotations

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
    print(f"example media written to {MEDIA}")


if __name__ == "__main__":
    main()
