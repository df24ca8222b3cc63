"""`mm-rag serve`: the HTTP service (search, ingest, records, health) over one store."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from mm_rag.cli._common import (
    ApiKeyOption,
    ClipModelOption,
    ClipPretrainedOption,
    DeviceOption,
    NoAudioOption,
    NoClipOption,
    NoOcrOption,
    NoTextOption,
    OcrEngineOption,
    StoreOption,
    TextModelOption,
    WhisperModelOption,
    fail,
    load_models,
)
from mm_rag.cli.ingesting import (
    WindowOverlapOption,
    WindowSecondsOption,
    WindowSentencesOption,
    window_options,
)
from mm_rag.embed.transcript import DEFAULT_MAX_SENTENCES, DEFAULT_OVERLAP_SECONDS, DEFAULT_WINDOW_SECONDS


def serve(
    store: StoreOption,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8000,
    api_key: ApiKeyOption = None,
    ingest_root: Annotated[
        Path | None,
        typer.Option(
            "--ingest-root",
            exists=True,
            file_okay=False,
            show_default=False,
            help="Allow POST /ingest of server-side paths inside this folder (refused everywhere else).",
        ),
    ] = None,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", min=0.001, help="Largest request body accepted, in MiB.")
    ] = 100.0,
    create: Annotated[bool, typer.Option("--create", help="Create an empty store when DIR holds none.")] = False,
    clip_model: ClipModelOption = None,
    clip_pretrained: ClipPretrainedOption = None,
    no_clip: NoClipOption = False,
    text_model: TextModelOption = None,
    no_text: NoTextOption = False,
    whisper_model: WhisperModelOption = None,
    no_audio: NoAudioOption = False,
    ocr_engine: OcrEngineOption = "auto",
    no_ocr: NoOcrOption = False,
    window_seconds: WindowSecondsOption = DEFAULT_WINDOW_SECONDS,
    window_overlap: WindowOverlapOption = DEFAULT_OVERLAP_SECONDS,
    window_sentences: WindowSentencesOption = DEFAULT_MAX_SENTENCES,
    device: DeviceOption = "auto",
    no_ui: Annotated[bool, typer.Option("--no-ui", help="No search page at / (the JSON API only).")] = False,
) -> None:
    """Serve a store over HTTP: a search page at /; POST /search, /search/media, /ingest; GET /documents;
    DELETE /documents/{id}; GET/DELETE /records/{id}; GET /media/{id}; GET /health.

    The OpenAPI description is at /openapi.json and interactive documentation at /docs.
    """
    from mm_rag._optional import require
    from mm_rag.embed.loading import ModelChoice
    from mm_rag.server import create_app
    from mm_rag.store.store import MANIFEST, MultimodalStore

    uvicorn = require("uvicorn", "mm-rag serve")
    options = window_options(window_seconds, window_overlap, window_sentences)
    if not create and not (store / MANIFEST).is_file():
        fail(f"no mm-rag store at {store} (pass --create to start an empty one)")
    choice = ModelChoice(
        clip_model, clip_pretrained, text_model, whisper_model, not no_clip, not no_text, not no_audio, device,
        ocr=None if no_ocr else ocr_engine,
    )  # fmt: skip
    opened = MultimodalStore(store)
    try:
        models = load_models(opened, choice)
        if models.embedders == 0:
            fail("no embedder could be loaded (see the notes above)")
        app = create_app(
            opened,
            clip=models.clip,
            text=models.text,
            transcriber=models.transcriber,
            ocr=models.ocr,
            api_key=api_key or None,
            ingest_root=ingest_root,
            max_upload_bytes=int(max_upload_mb * 2**20),
            options=options,
            ui=not no_ui,
        )
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has already shut down gracefully
            uvicorn.run(app, host=host, port=port)
    finally:
        opened.close()


def register(app: typer.Typer) -> None:
    """Add `serve` to `app`."""
    app.command()(serve)
