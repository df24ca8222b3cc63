"""`mm-rag mcp`: the store as a Model Context Protocol server for agents (stdio, or streamable HTTP)."""

from __future__ import annotations

import contextlib
import sys
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

# The SDK turns on its DNS-rebinding protection (Host and Origin checks) for these addresses only.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def mcp(
    store: StoreOption,
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio.")
    ] = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on with --http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on with --http.")] = 8000,
    api_key: ApiKeyOption = None,
    ingest_root: Annotated[
        Path | None,
        typer.Option(
            "--ingest-root",
            exists=True,
            file_okay=False,
            show_default=False,
            help="Offer an `ingest` tool for files inside this folder (refused everywhere else); none without it.",
        ),
    ] = None,
    create: Annotated[
        bool, typer.Option("--create", help="Create an empty store when DIR holds none (with --ingest-root).")
    ] = False,
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
) -> None:
    """Serve a store to agents over MCP: tools `search` and `get_record` (and `ingest`, `list_documents`,
    `delete_document` with --ingest-root), resources mmrag://store and mmrag://records/{id}.

    Register it with an MCP client (Claude Desktop, Cursor…) as the command `mm-rag mcp --store DIR`.
    Notes and errors go to stderr: over stdio, stdout carries the protocol only.
    """
    from mm_rag.embed.loading import ModelChoice
    from mm_rag.mcp_server import create_mcp_server, guarded_http_app
    from mm_rag.store.store import MANIFEST, MultimodalStore

    if create and ingest_root is None:
        fail("--create needs --ingest-root: an empty store that nothing can fill has nothing to serve")
    if not create and not (store / MANIFEST).is_file():
        fail(f"no mm-rag store at {store}" + (" (pass --create to start an empty one)" if ingest_root else ""))
    writes = ingest_root is not None
    options = window_options(window_seconds, window_overlap, window_sentences)
    # Without ingestion the models only embed queries: the store's own, no transcriber, the light text encoder.
    choice = ModelChoice(
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        text_model=text_model,
        whisper_model=whisper_model,
        clip=not no_clip,
        text=not no_text,
        audio=writes and not no_audio,
        device=device,
        queries_only=not writes,
        ocr=None if no_ocr or not writes else ocr_engine,
    )
    opened = MultimodalStore(store)
    try:
        # Before the transport claims stdout, anything a library prints while loading must not reach it.
        with contextlib.redirect_stdout(sys.stderr):
            models = load_models(opened, choice, recorded_only=not writes)
        if models.embedders == 0:
            fail("no embedder could be loaded (see the notes above)")
        server = create_mcp_server(
            opened,
            clip=models.clip,
            text=models.text,
            transcriber=models.transcriber,
            ocr=models.ocr,
            ingest_root=ingest_root,
            host=host,
            port=port,
            options=options,
        )
        if not http:
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the server; nothing more to say
                server.run("stdio")
            return
        import uvicorn  # a dependency of the MCP SDK, installed with it

        # The SDK's public Starlette application, behind the key, run by uvicorn as `server.run` would.
        app = guarded_http_app(server, api_key or None)
        # The server logs warnings only (requests would flood stderr), so uvicorn's own line is not shown.
        guarded = " (API key required)" if api_key else ""
        typer.echo(f"serving MCP (streamable HTTP) at http://{host}:{port}/mcp{guarded}", err=True)
        if not api_key and host not in LOOPBACK:
            typer.echo(
                f"note: the MCP endpoint has no authentication: anyone reaching {host}:{port} can use it"
                " (set --api-key or MM_RAG_API_KEY)",
                err=True,
            )
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has already shut down gracefully
            uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        opened.close()


def register(app: typer.Typer) -> None:
    """Add `mcp` to `app`."""
    app.command()(mcp)
