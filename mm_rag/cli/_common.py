"""Helpers shared by the commands: options, opening stores, loading models, messages."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from mm_rag.embed.loading import LoadedModels, ModelChoice
    from mm_rag.store import MultimodalStore

EXIT_USAGE = 2  # a mistake of the user: bad option, missing store, malformed filter, unreadable file

# Options shared by several commands (the model options also suit future commands that embed or transcribe).
StoreOption = Annotated[Path, typer.Option("--store", "-s", help="Store directory.", show_default=False)]
ClipModelOption = Annotated[
    str | None,
    typer.Option(
        "--clip-model",
        help="open_clip architecture name or model config .json (default: the store's, else ViT-B-32). For a"
        " store, the same model found elsewhere; another model is refused.",
        show_default=False,
    ),
]
ClipPretrainedOption = Annotated[
    str | None,
    typer.Option(
        "--clip-pretrained",
        help="Pretrained tag or local checkpoint of the CLIP model (default: the store's, else laion2b_s34b_b79k).",
        show_default=False,
    ),
]
TextModelOption = Annotated[
    str | None,
    typer.Option(
        "--text-model",
        help="sentence-transformers model name or folder (default: the store's, else all-MiniLM-L6-v2). For a"
        " store, a copy of its model at another path; another model is refused.",
        show_default=False,
    ),
]
WhisperModelOption = Annotated[
    str | None,
    typer.Option(
        "--whisper-model",
        help="Whisper model name (tiny.en, base…) or local model path (default: tiny.en).",
        show_default=False,
    ),
]
NoClipOption = Annotated[bool, typer.Option("--no-clip", help="Leave images and video keyframes out.")]
NoTextOption = Annotated[bool, typer.Option("--no-text", help="Use no text embedder (texts still reach CLIP).")]
NoAudioOption = Annotated[bool, typer.Option("--no-audio", help="Do not transcribe audio and video soundtracks.")]
OcrEngineOption = Annotated[
    str,
    typer.Option(
        "--ocr-engine",
        help="OCR engine reading text inside pictures, scanned pages and video frames: auto (the measured default"
        " among those installed), rapidocr or tesseract.",
    ),
]
NoOcrOption = Annotated[bool, typer.Option("--no-ocr", help="Do not read text inside pictures (OCR).")]
# One key rule for both servers: `serve` (every endpoint but /health) and `mcp --http` (every request).
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="MM_RAG_API_KEY",
        show_envvar=True,
        show_default=False,
        help="Require this key (X-API-Key header or Authorization: Bearer); serve leaves /health open, mcp applies"
        " it with --http.",
    ),
]
DeviceOption = Annotated[str, typer.Option("--device", help="Device for every model: auto, cpu, cuda[:N] or mps.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def error_line(message: str) -> None:
    """Print ``error: <message>`` on stderr, on one line."""
    from mm_rag.embed.loading import one_line

    typer.echo(f"error: {one_line(message, limit=2000)}", err=True)


def fail(message: str) -> NoReturn:
    """End the command with ``error: <message>`` and exit status 2."""
    error_line(message)
    raise typer.Exit(EXIT_USAGE)


def open_store(path: Path) -> MultimodalStore:
    """The existing store at `path` (a missing or damaged one raises `StoreFormatError`: exit status 2)."""
    from mm_rag.store import MultimodalStore

    return MultimodalStore.open(path)


def parse_filter(text: str | None) -> dict[str, Any] | None:
    """The ``--filter`` JSON as a dict (None when not given); malformed JSON raises `FilterError`."""
    from mm_rag.filters import parse_filter as parse

    return parse(text, "--filter")


def load_models(store: Any | None, choice: ModelChoice, *, recorded_only: bool = False) -> LoadedModels:
    """`mm_rag.embed.loading.load_models`, printing one ``note:`` line per model that could not load."""
    from mm_rag.embed import loading

    loaded = loading.load_models(store, choice, recorded_only=recorded_only)
    for note in loaded.notes:
        typer.echo(f"note: {note}", err=True)
    for role, reason in loaded.unavailable.items():
        typer.echo(f"note: {loading.ROLES[role]} are left out, the {role} model cannot load: {reason}", err=True)
    return loaded


def model_choice(
    *,
    clip_model: str | None = None,
    clip_pretrained: str | None = None,
    text_model: str | None = None,
    whisper_model: str | None = None,
    **settings: Any,
) -> ModelChoice:
    """The `ModelChoice` of a command's model options (None: the store's model, else the default) and
    `settings` (``device``, ``audio``, ``queries_only``…), so every command that embeds reads them alike."""
    from mm_rag.embed.loading import ModelChoice

    return ModelChoice(
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        text_model=text_model,
        whisper_model=whisper_model,
        **settings,
    )


def no_clip(what: str, models: LoadedModels, store: Path) -> NoReturn:
    """Exit naming why `what` has no CLIP model and the option or step that gives it one."""
    reason = models.unavailable.get("clip")
    if reason:
        fail(
            f"{what} needs the store's CLIP model, which cannot load here ({reason}): name a copy with"
            " --clip-model NAME_OR_CONFIG --clip-pretrained TAG_OR_CHECKPOINT"
        )
    fail(
        f"{what} needs a CLIP model, and the store {store} has none (no space of pictures): ingest pictures with"
        " a CLIP model first (mm-rag ingest … --clip-model …)"
    )


def clock(seconds: float | None) -> str:
    """``mm:ss`` (``h:mm:ss`` past an hour) for a time in seconds; empty for None."""
    if seconds is None:
        return ""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"
