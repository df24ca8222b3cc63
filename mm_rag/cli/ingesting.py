"""`mm-rag ingest`: files and folders into a store, with the models the store records (or those named)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mm_rag.cli._common import (
    ClipModelOption,
    ClipPretrainedOption,
    DeviceOption,
    JsonOption,
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
from mm_rag.embed.transcript import DEFAULT_MAX_SENTENCES, DEFAULT_OVERLAP_SECONDS, DEFAULT_WINDOW_SECONDS

if TYPE_CHECKING:
    from mm_rag.embed.loading import LoadedModels
    from mm_rag.ingestion.extract import ExtractOptions
    from mm_rag.ingestion.pipeline import IngestReport

# Transcript windows, shared by every command that ingests (ingest, serve, mcp): the library's defaults.
WindowSecondsOption = Annotated[
    float,
    typer.Option(
        "--window-seconds",
        help="Longest transcript window (audio and video soundtracks), in seconds: a search hit spans at most this.",
    ),
]
WindowOverlapOption = Annotated[
    float,
    typer.Option(
        "--window-overlap",
        help="Each transcript window starts again this many seconds before the previous one ends (0: no overlap;"
        " above 0 at least the previous window's last sentence comes again).",
    ),
]
WindowSentencesOption = Annotated[
    int,
    typer.Option("--window-sentences", help="Most sentences in a transcript window (0: no limit but the seconds)."),
]


def window_options(seconds: float, overlap: float, sentences: int) -> ExtractOptions:
    """The ingestion settings for the transcript window options, or exit status 2 naming the bad option."""
    from mm_rag.errors import InvalidInputError
    from mm_rag.ingestion.extract import ExtractOptions

    if sentences < 0:
        fail(f"--window-sentences must be 0 (no limit) or more, got {sentences}")
    try:
        return ExtractOptions(window_seconds=seconds, window_overlap=overlap, window_sentences=sentences or None)
    except InvalidInputError as error:
        message = str(error).replace("window_seconds", "--window-seconds").replace("window_overlap", "--window-overlap")
        fail(message.replace("window_sentences", "--window-sentences"))


def ingest(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Files and folders to ingest (folders are walked recursively); with --ray also file://, s3://,"
            " gs://… URIs and prefixes.",
            show_default=False,
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
    ocr_engine: OcrEngineOption = "auto",
    no_ocr: NoOcrOption = False,
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
    window_seconds: WindowSecondsOption = DEFAULT_WINDOW_SECONDS,
    window_overlap: WindowOverlapOption = DEFAULT_OVERLAP_SECONDS,
    window_sentences: WindowSentencesOption = DEFAULT_MAX_SENTENCES,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Ingest on Ray into embedding shards, then build or update the store from them. ADDRESS: 'local'"
            " (a Ray instance for this command), 'auto' (the running cluster) or 'ray://host:10001'.",
            show_default=False,
        ),
    ] = None,
    shards: Annotated[
        Path | None,
        typer.Option(
            "--shards",
            help="Embedding shards folder for --ray (default: a 'shards' folder inside the --store folder).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Ingest images, audio, video and documents into a store (created when missing).

    Documents: text, Markdown, HTML, PDF, Word (.docx), PowerPoint (.pptx), Excel (.xlsx), CSV, EPUB, Jupyter
    notebooks and e-mail (.eml). Pictures inside documents become image records linked to their page or slide;
    text inside pictures and scanned pages is read by OCR (--no-ocr to turn it off).

    Unchanged files are skipped, changed ones replaced. The models recorded in the store are used unless
    others are named; a model that cannot load (e.g. weights not downloaded) is reported in one line and its
    modality left out. Files that cannot be ingested are listed with the reason; they do not stop the run.

    Speech (audio files, video soundtracks) is indexed in short transcript windows, a sentence or two each,
    overlapping by a sentence, so a hit points at the moment something was said (--window-seconds,
    --window-overlap, --window-sentences change them; a changed setting applies to files ingested afterwards).

    With `--ray ADDRESS` the files are decoded and embedded by a pool of Ray actors into resumable embedding
    shards (`--shards`; a re-run skips finished shards); a new store is then built from the shards, an
    existing one gets the documents it lacks or holds in an older version.
    """
    from mm_rag.embed.loading import ModelChoice, model_requests
    from mm_rag.ingestion import ingest as run_ingest
    from mm_rag.ingestion.pipeline import pending
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
        ocr=None if no_ocr else ocr_engine,
    )
    options = window_options(window_seconds, window_overlap, window_sentences)
    _check_paths(paths, ray is not None)
    if ray is not None and prune:
        fail("--prune does not work with --ray (the shards record what was ingested, not what was removed)")
    opened = MultimodalStore.open(store) if (store / MANIFEST).is_file() else None
    try:
        if opened is not None and ray is None:
            # Hash and compare first: an unchanged folder needs no model (loading them all costs seconds), and
            # a change needs only the models its kinds of file use (no Whisper for an edited text file).
            requests = model_requests(opened, choice)
            plan = pending(paths, opened, include=include, exclude=exclude, prune=prune, requests=requests)
            if plan.report is not None:
                _print_report(plan.report, {}, quiet, json_output)
                return
            choice = dataclasses.replace(
                choice,
                audio=choice.audio and bool(plan.kinds & _SPEECH_KINDS),
                ocr=choice.ocr if plan.kinds - _PLAIN_TEXT_KINDS - {"audio"} else None,
            )
        models = load_models(opened, choice)
        if models.embedders == 0:
            fail("no embedder could be loaded (see the notes above); nothing was ingested")
        if ray is not None:
            _ingest_on_ray(
                paths, store, opened, ray, shards or store / "shards", models, include, exclude, quiet, json_output,
                options,
            )  # fmt: skip
            return
        opened = opened if opened is not None else MultimodalStore(store)
        report = run_ingest(
            paths,
            opened,
            clip=models.clip,
            text=models.text,
            transcriber=models.transcriber,
            ocr=models.ocr,
            include=include,
            exclude=exclude,
            prune=prune,
            progress=not quiet and not json_output,
            options=options,
            requests=models.requests,
        )
    finally:
        if opened is not None:
            opened.close()
    _print_report(report, models.unavailable, quiet, json_output)


# Kinds of file (`mm_rag.embed.sniff`) that need the transcriber, and kinds with no picture for OCR to read
# (audio files have none either; videos have keyframes).
_SPEECH_KINDS = {"audio", "video"}
_PLAIN_TEXT_KINDS = {"text", "csv", "unknown"}


def _print_report(report: IngestReport, unavailable: dict[str, str], quiet: bool, json_output: bool) -> None:
    """The run's report: JSON, or its summary line (unless `quiet`) and one line per file that needs a word."""
    if json_output:
        typer.echo(json.dumps({**dataclasses.asdict(report), "unavailable": unavailable}, indent=2))
        return
    if not quiet:
        typer.echo(report.summary())
    for line in report.lines():
        typer.echo(line)


def _check_paths(paths: list[str], uris: bool) -> None:
    """Refuse missing local paths (and URIs, unless on Ray) before any model loads."""
    for path in paths:
        if "://" in path:
            if not uris:
                fail(f"{path}: URIs (file://, s3://, gs://…) are read with --ray only")
        elif not os.path.lexists(path):
            fail(f"Invalid value for 'PATHS...': Path '{path}' does not exist.")


def _ingest_on_ray(
    paths: list[str],
    store: Path,
    opened: Any,
    address: str,
    shards: Path,
    models: LoadedModels,
    include: list[str] | None,
    exclude: list[str] | None,
    quiet: bool,
    json_output: bool,
    options: ExtractOptions,
) -> None:
    """Shards on Ray, then the store: built by `mm_rag.indexbuild` when new, else brought up to date."""
    from mm_rag.distributed import ingest_to_shards
    from mm_rag.distributed.update import update_store
    from mm_rag.shards import ShardSet

    report = ingest_to_shards(
        paths,
        shards,
        clip=models.clip,
        text=models.text,
        transcriber=models.transcriber,
        ocr=models.ocr.name if models.ocr is not None else None,
        include=include,
        exclude=exclude,
        address=address,
        progress=not quiet and not json_output,
        options=options,
    )
    if not ShardSet(shards).finished():
        outcome = "no shards to build a store from"
    elif opened is None:
        from mm_rag.indexbuild import build_store

        outcome = build_store(shards, store).summary()
    else:
        applied = update_store(shards, opened)
        opened.save()
        outcome = f"updated {store} from {len(applied)} shards"
    if json_output:
        result = {"shards": dataclasses.asdict(report), "store": outcome, "unavailable": models.unavailable}
        typer.echo(json.dumps(result, indent=2))
        return
    if not quiet:
        typer.echo(report.summary())
        typer.echo(outcome)
    for path, reason in report.failed.items():
        typer.echo(f"failed: {path}: {reason}")


def register(app: typer.Typer) -> None:
    """Add `ingest` to `app`."""
    app.command()(ingest)
