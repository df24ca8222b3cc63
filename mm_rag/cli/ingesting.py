"""`mm-rag ingest`: files and folders into a store, with the models the store records (or those named)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

from mm_rag.cli._common import (
    ClipModelOption,
    ClipPretrainedOption,
    DeviceOption,
    JsonOption,
    NoAudioOption,
    NoClipOption,
    NoTextOption,
    StoreOption,
    TextModelOption,
    WhisperModelOption,
    fail,
    load_models,
)


def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(
            exists=True, help="Files and folders to ingest (folders are walked recursively).", show_default=False
        ),
    ],
    store: StoreOption,
    clip_model: ClipModelOption = None,
    clip_pretrained: ClipPretrainedOption = None,
    no_clip: NoClipOption = False,
    text_model: TextModelOption = None,
    no_text: NoTextOption = False,
    whisper_model: WhisperModelOption = None,
    no_audio: NoAudioOption = False,
    device: DeviceOption = "auto",
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Only files matching this glob (repeatable), e.g. '*.jpg'.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Leave out files matching this glob (repeatable).")
    ] = None,
    prune: Annotated[bool, typer.Option("--prune", help="Delete the records of files that no longer exist.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no summary; failures only.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Ingest images, audio, video and documents into a store (created when missing).

    Unchanged files are skipped, changed ones replaced. The models recorded in the store are used unless
    others are named; a model that cannot load (e.g. weights not downloaded) is reported in one line and its
    modality left out. Files that cannot be ingested are listed with the reason; they do not stop the run.
    """
    from mm_rag.embed.loading import ModelChoice
    from mm_rag.ingestion import ingest as run_ingest
    from mm_rag.store.store import MANIFEST, MultimodalStore

    choice = ModelChoice(
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        text_model=text_model,
        whisper_model=whisper_model,
        clip=not no_clip,
        text=not no_text,
        audio=not no_audio,
        device=device,
    )
    opened = MultimodalStore.open(store) if (store / MANIFEST).is_file() else None
    try:
        models = load_models(opened, choice)
        if models.embedders == 0:
            fail("no embedder could be loaded (see the notes above); nothing was ingested")
        opened = opened if opened is not None else MultimodalStore(store)
        report = run_ingest(
            paths,
            opened,
            clip=models.clip,
            text=models.text,
            transcriber=models.transcriber,
            include=include,
            exclude=exclude,
            prune=prune,
            progress=not quiet and not json_output,
        )
    finally:
        if opened is not None:
            opened.close()
    if json_output:
        typer.echo(json.dumps({**dataclasses.asdict(report), "unavailable": models.unavailable}, indent=2))
        return
    if not quiet:
        typer.echo(report.summary())
    for path, reason in report.failed.items():
        typer.echo(f"failed: {path}: {reason}")


def register(app: typer.Typer) -> None:
    """Add `ingest` to `app`."""
    app.command()(ingest)
