"""Models as specs: the driver turns embedders and the transcriber into JSON data, each actor rebuilds them.

Nothing big is shipped to the actors: an embedder becomes its `spec` (the record a store keeps with a space,
rebuilt by `mm_rag.embed.specs.embedder_from_spec`) plus its space name; a `WhisperTranscriber` becomes the
settings below (its device is chosen per actor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mm_rag.errors import InvalidInputError

WHISPER_KIND = "whisper"
_WHISPER_SETTINGS = (
    "backend",
    "compute_type",
    "language",
    "beam_size",
    "download_root",
    "cpu_threads",
    "silence_peak",
    "vad",
    "trim_silence",
)


@dataclass(frozen=True)
class ModelSpec:
    """An embedder to rebuild on an actor: its spec and the space its vectors go to."""

    spec: dict[str, Any]
    space: str

    def build(self, device: str) -> Any:
        """The embedder, loaded, on `device`."""
        from mm_rag.embed.specs import embedder_from_spec

        return embedder_from_spec(self.spec, space=self.space, device=device).load()


def embedder_spec(embedder: Any | None, default_space: str) -> ModelSpec | None:
    """The `ModelSpec` of an embedder instance, or of a spec mapping (whose optional ``"space"`` key names
    its space, else `default_space`); None stays None.

    Raises:
        InvalidInputError: neither an embedder with a ``spec`` nor a mapping with a ``"kind"``.
    """
    if embedder is None:
        return None
    if isinstance(embedder, Mapping):
        if "kind" not in embedder:
            raise InvalidInputError(f"an embedder spec needs a 'kind', got {dict(embedder)}")
        spec = {key: value for key, value in embedder.items() if key != "space"}
        return ModelSpec(spec, str(embedder.get("space", default_space)))
    spec = getattr(embedder, "spec", None)
    if not isinstance(spec, Mapping):
        raise InvalidInputError(f"{type(embedder).__name__} has no spec: distributed ingestion cannot rebuild it")
    return ModelSpec(dict(spec), embedder.space)


def transcriber_spec(transcriber: Any | None) -> dict[str, Any] | None:
    """The settings that rebuild a `WhisperTranscriber` (or a ``{"kind": "whisper", "model": …}`` mapping as is).

    Raises:
        InvalidInputError: neither a `WhisperTranscriber` nor a whisper spec.
    """
    if transcriber is None:
        return None
    if isinstance(transcriber, Mapping):
        if transcriber.get("kind") != WHISPER_KIND or "model" not in transcriber:
            raise InvalidInputError(f"a transcriber spec needs kind 'whisper' and a 'model', got {dict(transcriber)}")
        return dict(transcriber)
    from mm_rag.embed.whisper import WhisperTranscriber

    if not isinstance(transcriber, WhisperTranscriber):
        raise InvalidInputError(
            f"cannot rebuild a {type(transcriber).__name__} on the actors; pass a WhisperTranscriber"
        )
    return {
        "kind": WHISPER_KIND,
        "model": str(transcriber.model),
        **{name: getattr(transcriber, name) for name in _WHISPER_SETTINGS},
    }


def build_transcriber(spec: Mapping[str, Any], device: str) -> Any:
    """The `WhisperTranscriber` a `transcriber_spec` describes, loaded, on `device`."""
    from mm_rag.embed.whisper import WhisperTranscriber

    settings = {key: value for key, value in spec.items() if key not in ("kind", "model")}
    return WhisperTranscriber(spec["model"], device=device, **settings).load()
