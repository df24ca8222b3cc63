"""`mm-rag build-index`: a new store from the embedding shards that distributed ingestion wrote."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Annotated

import typer

from mm_rag.cli._common import JsonOption, StoreOption, fail

_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kb": 2**10,
    "m": 2**20,
    "mb": 2**20,
    "g": 2**30,
    "gb": 2**30,
    "t": 2**40,
    "tb": 2**40,
}


def parse_size(text: str) -> int:
    """Bytes in ``"8GB"``, ``"512m"``, ``"1.5g"`` or ``"1073741824"`` (binary units); raises `ValueError`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (try 8GB, 512MB or a number of bytes)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def build_index(
    shards: Annotated[
        Path, typer.Argument(help="Folder of embedding shards (shards.json inside).", show_default=False)
    ],
    store: StoreOption,
    index: Annotated[
        str, typer.Option("--index", help="Faiss factory string for every space, or 'auto' for the size/memory rule.")
    ] = "auto",
    memory_budget: Annotated[
        str,
        typer.Option("--memory-budget", help="Memory an index may take (e.g. 8GB); beyond it codes are compressed."),
    ] = "8GB",
    train_size: Annotated[
        int | None, typer.Option("--train-size", help="Training vectors for IVF/PQ (default: by centroid count).")
    ] = None,
    on_disk: Annotated[
        bool | None,
        typer.Option("--on-disk/--in-memory", help="IVF inverted lists in a mapped file (default) or in the index."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Build a new store at --store from finished shards: catalog, exact vectors, and one trained index per
    space (IVF lists merged on disk), without loading every vector into memory."""
    from mm_rag.indexbuild import build_store

    try:
        budget = parse_size(memory_budget)
    except ValueError as error:
        fail(f"--memory-budget: {error}")
    report = build_store(shards, store, index=index, memory_budget=budget, train_size=train_size, on_disk=on_disk)
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(report), indent=2, default=str))
    else:
        typer.echo(report.summary())


def register(app: typer.Typer) -> None:
    """Add `build-index` to `app`."""
    app.command("build-index")(build_index)
