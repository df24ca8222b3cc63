"""`mm-rag search`: a text, image or spoken query against a store, with the models it records."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mm_rag.cli._common import (
    ClipModelOption,
    ClipPretrainedOption,
    DeviceOption,
    JsonOption,
    StoreOption,
    TextModelOption,
    WhisperModelOption,
    clock,
    fail,
    load_models,
    model_choice,
    no_clip,
    open_store,
    parse_filter,
)
from mm_rag.records import LEXICAL
from mm_rag.retrieval import DEFAULT_FUSION, FUSION_HELP, RRF_K

if TYPE_CHECKING:
    from mm_rag.retrieval import Retrieved

SNIPPET_CHARS = 80


class Fusion(str, Enum):
    """How the ranked lists of the spaces are fused."""

    convex = "convex"
    rrf = "rrf"
    relative = "relative"


DEFAULT_CLI_FUSION = Fusion(DEFAULT_FUSION)


class Mode(str, Enum):
    """What a text query searches: embeddings and keywords, embeddings only, or keywords (BM25) only."""

    hybrid = "hybrid"
    dense = "dense"
    lexical = "lexical"


# Shared with `mm-rag eval`, which measures the same retrieval.
FusionOption = Annotated[Fusion, typer.Option("--fusion", help=FUSION_HELP)]
ModeOption = Annotated[
    Mode,
    typer.Option("--mode", help="hybrid: embeddings and keywords (BM25) fused; dense: embeddings; lexical: keywords."),
]


def _count_option(name: str, what: str) -> Any:
    return typer.Option(name, min=0, help=f"Results kept among {what} (0 leaves them out).")


def search(
    store: StoreOption,
    query: Annotated[str | None, typer.Argument(help="The question or description.", show_default=False)] = None,
    image: Annotated[
        Path | None,
        typer.Option(
            "--image", exists=True, dir_okay=False, help="Query image (searched in the CLIP space).", show_default=False
        ),
    ] = None,
    audio: Annotated[
        Path | None,
        typer.Option(
            "--audio", exists=True, dir_okay=False, help="Spoken query, transcribed first.", show_default=False
        ),
    ] = None,
    filter: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help='Metadata filter as JSON, e.g. \'{"modality": "image"}\' or \'{"year": {"$gte": 2020}}\'.',
            show_default=False,
        ),
    ] = None,
    text_k: Annotated[int, _count_option("--text-k", "text passages")] = 5,
    image_k: Annotated[int, _count_option("--image-k", "images")] = 5,
    audio_k: Annotated[int, _count_option("--audio-k", "audio transcript moments")] = 3,
    video_k: Annotated[int, _count_option("--video-k", "video moments and keyframes")] = 3,
    fusion: FusionOption = DEFAULT_CLI_FUSION,
    rrf_k: Annotated[float, typer.Option("--rrf-k", min=0, help="The constant of reciprocal-rank fusion.")] = RRF_K,
    min_score: Annotated[
        str | None,
        typer.Option(
            "--min-score",
            help="Drop weak hits: a cosine floor for every embedding space (0.3), or floors per space"
            " (text=0.35,lexical=2; lexical is BM25).",
            show_default=False,
        ),
    ] = None,
    mode: ModeOption = Mode.hybrid,
    clip_model: ClipModelOption = None,
    clip_pretrained: ClipPretrainedOption = None,
    text_model: TextModelOption = None,
    whisper_model: WhisperModelOption = None,
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Search a store with text, an image (--image) or a voice clip (--audio); results of every modality, fused.

    The embedders are those recorded in the store, found wherever a copy of them lies (the Hugging Face cache,
    the folder they were loaded from, a packaged copy); --clip-model/--text-model name another copy. Each line shows rank, modality, fused score with the raw
    score of each ranking that found the result (cosine per space, BM25 for keywords), source, the time range
    (audio and video) and a snippet of the text. Query words that carry no information (stop words, words in
    half the records) are left out of the keyword search; with --mode lexical a note says which.
    """
    from mm_rag.embed.audio import SAMPLE_RATE, load_audio
    from mm_rag.embed.media import load_image
    from mm_rag.filters import compile_filter
    from mm_rag.retrieval import MultimodalRetriever, parse_min_score

    conditions = parse_filter(filter)
    compile_filter(conditions)  # a malformed filter, floor, image or clip fails before any model loads
    floors = parse_min_score(min_score)
    query_image = None if image is None else load_image(image)
    query_audio = None if audio is None else load_audio(audio, SAMPLE_RATE)
    choice = model_choice(
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        text_model=text_model,
        whisper_model=whisper_model,
        audio=audio is not None,
        device=device,
        queries_only=True,
    )
    with open_store(store) as opened:
        models = load_models(opened, choice, recorded_only=True)
        if models.embedders == 0 and mode is not Mode.lexical:
            fail("no embedder could be loaded for this store" + ("" if models.unavailable else " (is it empty?)"))
        retriever = MultimodalRetriever(
            opened,
            clip=models.clip,
            text=models.text,
            transcriber=models.transcriber,
            text_k=text_k,
            image_k=image_k,
            audio_k=audio_k,
            video_k=video_k,
            fusion=fusion.value,
            mode=mode.value,
            rrf_k=rrf_k,
            min_score=floors,
        )
        if query_image is not None and models.clip is None and mode is not Mode.lexical:
            no_clip(f"--image {image}", models, store)
        results = retriever.retrieve(query, image=query_image, audio=query_audio, filter=conditions)
        # Keywords alone can come back short or empty: say which words were not searched for, and why.
        ignored = opened.keywords(query).ignored if query and mode is Mode.lexical else ()
    if ignored and not json_output:
        typer.echo(f"note: left out of the keyword search, as carrying no information: {' '.join(ignored)}", err=True)
    if json_output:
        typer.echo(json.dumps([result.to_dict() for result in results], indent=2, ensure_ascii=False))
    elif not results:
        typer.echo("no results")
    else:
        for rank, result in enumerate(results, 1):
            typer.echo(_line(rank, result))


def _line(rank: int, result: Retrieved) -> str:
    """``rank. modality score (raw scores) source [mm:ss-mm:ss] "snippet"``."""
    raw = ", ".join(f"{'bm25' if space == LEXICAL else space} {score:.3f}" for space, score in result.scores.items())
    parts = [f"{rank:>2}.", f"{result.modality:<5}", f"{result.score:.4f} ({raw})", result.source or result.record.id]
    if result.start is not None:
        parts.append(f"[{clock(result.start)}-{clock(result.end if result.end is not None else result.start)}]")
    text = " ".join((result.record.text or "").split())
    if text:
        parts.append(
            json.dumps(text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…", ensure_ascii=False)
        )
    return "  ".join(parts)


def register(app: typer.Typer) -> None:
    """Add `search` to `app`."""
    app.command()(search)
