"""The `mm-rag` command. Heavy modules load inside each command, so `mm-rag --help` stays fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="mm-rag: multimodal retrieval for LLM applications.", no_args_is_help=True, add_completion=False)


@app.command()
def demo(
    store: Annotated[Path | None, typer.Option(help="Directory to keep the demo store in (default: temporary).")] = None,
    count: Annotated[int, typer.Option(min=100, help="Number of synthetic records.")] = 20_000,
) -> None:
    """Build a store of synthetic records, then search it with and without filters."""
    from mm_rag.demo import run_store_demo

    run_store_demo(store, count, typer.echo)


@app.command()
def info(store: Annotated[Path, typer.Argument(help="Store directory.")]) -> None:
    """Print a store's spaces, counts and index types as JSON."""
    from mm_rag import MMRagError, MultimodalStore

    try:
        with MultimodalStore.open(store) as opened:
            typer.echo(json.dumps(opened.info(), indent=2))
    except MMRagError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
