"""`mm-rag ask`, `caption` and `eval`: question answering, captioning and retrieval evaluation on a store."""

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
    StoreOption,
    TextModelOption,
    WhisperModelOption,
    fail,
    load_models,
    model_choice,
    no_clip,
    open_store,
    parse_filter,
)
from mm_rag.cli.searching import DEFAULT_CLI_FUSION, FusionOption, Mode, ModeOption
from mm_rag.retrieval import DEFAULT_FUSION

if TYPE_CHECKING:
    from mm_rag.apps import OpenAIChat
    from mm_rag.embed.loading import ModelChoice

LlmUrlOption = Annotated[
    str | None,
    typer.Option(
        "--llm-base-url", help="OpenAI-compatible API root (default: $MM_RAG_LLM_BASE_URL).", show_default=False
    ),
]
LlmModelOption = Annotated[
    str | None,
    typer.Option("--llm-model", help="Model name at that endpoint (default: $MM_RAG_LLM_MODEL).", show_default=False),
]
LlmKeyOption = Annotated[
    str | None,
    typer.Option(
        "--llm-api-key", help="API key (default: $MM_RAG_LLM_API_KEY or $OPENAI_API_KEY).", show_default=False
    ),
]
FilterOption = Annotated[str | None, typer.Option("--filter", help="Metadata filter as JSON.", show_default=False)]


def ask(
    question: Annotated[str, typer.Argument(help="The question.", show_default=False)],
    store: StoreOption,
    image: Annotated[
        Path | None, typer.Option("--image", exists=True, dir_okay=False, help="An image that is part of the question.")
    ] = None,
    filter: FilterOption = None,
    llm_base_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    llm_api_key: LlmKeyOption = None,
    clip_model: ClipModelOption = None,
    clip_pretrained: ClipPretrainedOption = None,
    text_model: TextModelOption = None,
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Answer a question from the store with a language model, citing the passages, moments and images used.

    Needs an OpenAI-compatible endpoint: --llm-base-url and --llm-model, or MM_RAG_LLM_BASE_URL and
    MM_RAG_LLM_MODEL (and MM_RAG_LLM_API_KEY) in the environment.
    """
    from mm_rag.apps import answer
    from mm_rag.embed.media import load_image

    llm = _llm(llm_base_url, llm_model, llm_api_key, required=True)
    conditions = parse_filter(filter)
    query_image = None if image is None else load_image(image)
    with open_store(store) as opened:
        models = model_choice(clip_model=clip_model, clip_pretrained=clip_pretrained, text_model=text_model)
        retriever = _retriever(opened, device, models)
        result = answer(question, retriever, llm, image=query_image, filter=conditions)
    if json_output:
        sources = [{"number": c.number, "id": c.id, "modality": c.modality, "source": c.source, "start": c.start,
                    "end": c.end} for c in result.context.citations]  # fmt: skip
        typer.echo(json.dumps({"answer": result.text, "sources": sources}, indent=2, ensure_ascii=False))
        return
    typer.echo(result.text)
    typer.echo("\nsources:")
    for citation in result.context.citations:
        when = (
            f" {citation.start:.1f}-{citation.end:.1f}s"
            if citation.start is not None and citation.end is not None
            else ""
        )
        typer.echo(f"  [{citation.number}] {citation.modality} {citation.source or citation.id}{when}")


def caption(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Image or video to caption.")],
    store: StoreOption,
    candidate: Annotated[
        list[str] | None, typer.Option("--candidate", help="A caption to rank as well (repeatable).")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Candidate captions shown.")] = 5,
    filter: FilterOption = None,
    llm_base_url: LlmUrlOption = None,
    llm_model: LlmModelOption = None,
    llm_api_key: LlmKeyOption = None,
    clip_model: ClipModelOption = None,
    clip_pretrained: ClipPretrainedOption = None,
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Caption an image or a video from what the collection knows.

    Without a language model the caption is the store's nearest text in the CLIP space (ranked candidates are
    listed); with one configured (as for `ask`), the model writes it from the picture and those texts.
    """
    from mm_rag.apps import caption as write_caption

    llm = _llm(llm_base_url, llm_model, llm_api_key, required=False)
    conditions = parse_filter(filter)
    with open_store(store) as opened:
        choice = model_choice(
            clip_model=clip_model, clip_pretrained=clip_pretrained, text=False, audio=False, device=device
        )
        models = load_models(opened, choice, recorded_only=True)
        if models.clip is None:
            no_clip("captioning", models, store)
        result = write_caption(file, models.clip, store=opened, candidates=candidate, llm=llm, k=k, filter=conditions)
    if json_output:
        candidates = [{"text": c.text, "score": c.score, "source": c.source} for c in result.candidates]
        typer.echo(json.dumps({"caption": result.text, "candidates": candidates}, indent=2, ensure_ascii=False))
        return
    typer.echo(result.text or "(no caption: the store holds no texts in the CLIP space and none were given)")
    for rank, found in enumerate(result.candidates, 1):
        typer.echo(f"  {rank}. {found.score:.3f}  {found.text[:100]}" + (f"  ({found.source})" if found.source else ""))


def evaluate(
    queries: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON Lines file of queries.")],
    store: StoreOption,
    ks: Annotated[str, typer.Option("--k", help="Cut-offs, comma-separated.")] = "1,5,10",
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail (exit 2) when a relevant item matches no record, instead of warning.")
    ] = False,
    mode: ModeOption = Mode.hybrid,
    fusion: FusionOption = DEFAULT_CLI_FUSION,
    clip_model: ClipModelOption = None,
    clip_pretrained: ClipPretrainedOption = None,
    text_model: TextModelOption = None,
    whisper_model: WhisperModelOption = None,
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Evaluate retrieval on a query file: recall, precision, F1, MRR and nDCG per modality (and WER for audio
    queries with a reference transcript). Relevant items may be record ids, document ids or file paths (relative
    ones against the query file's folder, then the current directory); a document counts once, found through
    any of its records. Items that match no record are listed on stderr. See `mm_rag.eval` for the format."""
    import warnings

    from mm_rag.eval import evaluate as run_evaluation
    from mm_rag.eval import load_queries

    try:
        cutoffs = [int(value) for value in ks.split(",") if value.strip()]
    except ValueError:
        fail(f"--k must be comma-separated integers, got {ks!r}")
    items = load_queries(queries)
    with open_store(store) as opened:
        spoken = any(item.audio for item in items)
        models = model_choice(
            clip_model=clip_model, clip_pretrained=clip_pretrained, text_model=text_model, whisper_model=whisper_model
        )
        retriever = _retriever(opened, device, models, audio=spoken, mode=mode.value, fusion=fusion.value)
        with warnings.catch_warnings():
            # The report carries the unknown items; they are printed below, once, in the command's own words.
            warnings.simplefilter("ignore", UserWarning)
            report = run_evaluation(items, retriever, cutoffs, strict=strict)
    typer.echo(json.dumps(report.to_dict(), indent=2) if json_output else report.table())
    for line in report.problems():
        typer.echo(f"warning: {line}", err=True)


def _retriever(
    store: Any,
    device: str,
    named: ModelChoice,
    *,
    audio: bool = False,
    mode: str = "hybrid",
    fusion: str = DEFAULT_FUSION,
) -> Any:
    """A retriever over `store` with its recorded models, or the copies `named` names (see `model_choice`)."""
    from mm_rag.retrieval import MultimodalRetriever

    choice = dataclasses.replace(named, audio=audio, device=device, queries_only=True)
    models = load_models(store, choice, recorded_only=True)
    if models.embedders == 0 and mode != "lexical":
        fail("no embedder could be loaded for this store" + ("" if models.unavailable else " (is it empty?)"))
    return MultimodalRetriever(
        store, clip=models.clip, text=models.text, transcriber=models.transcriber, mode=mode, fusion=fusion
    )


def _llm(base_url: str | None, model: str | None, api_key: str | None, *, required: bool) -> OpenAIChat | None:
    """The endpoint from the options, else from the environment; None when optional and nothing is set."""
    from mm_rag.apps import LLMNotConfiguredError, OpenAIChat

    if base_url or model or api_key:
        if not model:
            fail("--llm-model is needed with --llm-base-url/--llm-api-key: name the model to use")
        return OpenAIChat(
            base_url or "https://api.openai.com/v1", model, api_key or os.environ.get("MM_RAG_LLM_API_KEY")
        )
    try:
        return OpenAIChat.from_env()
    except LLMNotConfiguredError:
        if required:
            raise
        return None


def register(app: typer.Typer) -> None:
    """Add `ask`, `caption` and `eval` to `app`."""
    app.command()(ask)
    app.command()(caption)
    app.command("eval")(evaluate)
