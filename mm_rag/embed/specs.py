"""Rebuilding an embedder from the `spec` a store recorded for its space (registry as data).

A space remembers which model filled it (`SpaceConfig.model`); the command line, the HTTP service and
`embedders_for` rebuild the same embedder from that record instead of asking the user again.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from mm_rag.errors import InvalidInputError

# kind → (module, class): the classes whose `spec` property writes that kind.
EMBEDDER_KINDS: dict[str, tuple[str, str]] = {
    "open_clip": ("mm_rag.embed.clip", "OpenCLIPEmbedder"),
    "sentence_transformers": ("mm_rag.embed.text", "TextEmbedder"),
}


def embedder_from_spec(spec: Mapping[str, Any], *, space: str, **options: Any) -> Any:
    """The embedder a `spec` describes, writing to `space`; `options` (e.g. ``device="cpu"``) go to its constructor.

    Raises:
        InvalidInputError: an unknown kind or a malformed spec.
    """
    if not isinstance(spec, Mapping) or spec.get("kind") not in EMBEDDER_KINDS:
        kind = spec.get("kind") if isinstance(spec, Mapping) else spec
        raise InvalidInputError(f"unknown embedder kind {kind!r}; known kinds: {sorted(EMBEDDER_KINDS)}")
    module, name = EMBEDDER_KINDS[spec["kind"]]
    arguments = {key: value for key, value in spec.items() if key != "kind"}
    model = arguments.pop("model", None)
    if not isinstance(model, str):
        raise InvalidInputError(f"embedder spec {dict(spec)} names no model")
    embedder_class = getattr(importlib.import_module(module), name)
    return embedder_class(model, **arguments, space=space, **options)


def embedders_for(store: Any, **options: Any) -> tuple[Any | None, Any | None]:
    """(clip, text): the embedders recorded for the store's spaces, rebuilt (None where no space records one).

    Raises:
        InvalidInputError: two spaces of one kind (say which to use by building the embedders yourself).
    """
    found: dict[str, Any] = {}
    for name, config in store.spaces.items():
        if config.model is None:
            continue
        role = "clip" if config.model.get("kind") == "open_clip" else "text"
        if role in found:
            raise InvalidInputError(
                f"spaces {found[role].space!r} and {name!r} both hold {role} vectors: build the embedders explicitly"
            )
        found[role] = embedder_from_spec(config.model, space=name, **options)
    return found.get("clip"), found.get("text")
