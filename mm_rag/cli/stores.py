"""Commands to look around: `info` about a store, and the `demo` over the bundled example media."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mm_rag.cli._common import (
    ClipModelOption,
    ClipPretrainedOption,
    DeviceOption,
    TextModelOption,
    WhisperModelOption,
    open_store,
)


def demo(
    store: Annotated[
        Path | None, typer.Option("--store", help="Directory to keep the demo store in (default: temporary).")
    ] = None,
    clip_model: ClipModelOption = None,
    clip_pretrained: ClipPretrainedOption = None,
    text_model: TextModelOption = None,
    whisper_model: WhisperModelOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Ingest the bundled example media, then ask text, image and voice questions and show what each finds.

    Models that ship in installed packages are preferred, so it runs offline; a model that cannot load is
    named in one line and the demo goes on without it.
    """
    from mm_rag.demo import run_demo

    models = {"clip_model": clip_model, "clip_pretrained": clip_pretrained, "text_model": text_model}
    stored = run_demo(store, typer.echo, **models, whisper_model=whisper_model, device=device)
    if not stored:
        raise typer.Exit(1)


def info(store: Annotated[Path, typer.Argument(help="Store directory.", show_default=False)]) -> None:
    """Print a store's spaces, counts, models and index types as JSON."""
    with open_store(store) as opened:
        typer.echo(json.dumps(opened.info(), indent=2))


def register(app: typer.Typer) -> None:
    """Add `demo` and `info` to `app`."""
    app.command()(demo)
    app.command()(info)
