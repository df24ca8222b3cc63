"""Commands to look around: `info` about a store, its `keywords` settings, and the `demo` over the example media."""

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


def keywords(
    store: Annotated[Path, typer.Argument(help="Store directory.", show_default=False)],
    stemming: Annotated[
        str | None,
        typer.Option(
            "--stemming",
            help="porter: English stemming (maps finds map); none: words as written. Re-indexes the text.",
            show_default=False,
        ),
    ] = None,
    languages: Annotated[
        str | None,
        typer.Option(
            "--languages",
            help="Comma-separated languages whose stop words are left out of keyword queries (en, de, fr, es).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show, or change with --stemming/--languages, how the store's keyword index reads words (as JSON)."""
    with open_store(store) as opened:
        if stemming is not None or languages is not None:
            chosen = None if languages is None else [code.strip() for code in languages.split(",") if code.strip()]
            opened.configure_keywords(stemming=stemming, languages=chosen)  # type: ignore[arg-type]
            opened.save()
        typer.echo(json.dumps(opened.keyword_settings))


def register(app: typer.Typer) -> None:
    """Add `demo`, `info` and `keywords` to `app`."""
    app.command()(demo)
    app.command()(info)
    app.command()(keywords)
