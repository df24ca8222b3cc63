"""Rebuilding an embedder from the `spec` a store recorded for its space (registry as data).

A space remembers which model filled it (`SpaceConfig.model`); the command line, the HTTP service and
`embedders_for` rebuild the same embedder from that record instead of asking the user again.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from mm_rag.embed import identity
from mm_rag.errors import InvalidInputError

# kind → (module, class): the classes whose `spec` property writes that kind.
EMBEDDER_KINDS: dict[str, tuple[str, str]] = {
    "open_clip": ("mm_rag.embed.clip", "OpenCLIPEmbedder"),
    "sentence_transformers": ("mm_rag.embed.text", "TextEmbedder"),
}


def embedder_from_spec(spec: Mapping[str, Any], *, space: str, **options: Any) -> Any:
    """The embedder a `spec` describes, writing to `space`; `options` (e.g. ``device="cpu"``) go to its constructor.

    A sentence-transformers model is found by what it is, not only where it was: its name's cached snapshot,
    the recorded folder, then the copy an installed package ships, each accepted only with the recorded
    fingerprint (`find_text_model`). So a store built online searches offline with the packaged copy, and one
    whose model folder moved finds the model again (in the cache or packaged copy).

    Raises:
        InvalidInputError: an unknown kind, a malformed spec, or a recorded model found nowhere with its files.
    """
    if not isinstance(spec, Mapping) or spec.get("kind") not in EMBEDDER_KINDS:
        kind = spec.get("kind") if isinstance(spec, Mapping) else spec
        raise InvalidInputError(f"unknown embedder kind {kind!r}; known kinds: {sorted(EMBEDDER_KINDS)}")
    module, name = EMBEDDER_KINDS[spec["kind"]]
    # Where the model was loaded from and its fingerprint identify it; they are no constructor arguments.
    arguments = {key: value for key, value in spec.items() if key not in ("kind", "fingerprint", "source")}
    model = arguments.pop("model", None)
    if not isinstance(model, str):
        raise InvalidInputError(f"embedder spec {dict(spec)} names no model")
    if spec["kind"] == "sentence_transformers":
        model = find_text_model(spec, cache_dir=options.get("cache_dir"))
    embedder_class = getattr(importlib.import_module(module), name)
    return embedder_class(model, **arguments, space=space, **options)


def find_text_model(spec: Mapping[str, Any], *, cache_dir: str | None = None) -> str:
    """What to load for a recorded sentence-transformers model: a local folder with its files, else its name.

    Looks in the hub cache, the recorded folders (``source``, and ``model`` when a path), then the packaged
    copy; a folder whose fingerprint differs from the recorded one is passed over. A model recorded by name
    and found nowhere is returned by name (downloaded at load, where the hub can be reached).

    Raises:
        InvalidInputError: a model recorded only by its folder, not found there nor anywhere else with its files.
    """
    model, expected = str(spec["model"]), spec.get("fingerprint")
    recorded_name = None if identity.is_local(model) else model
    # A store written before identities were recorded names a packaged copy by the folder it then had.
    name = recorded_name or identity.packaged_name_of_path(model)
    names = identity.text_model_names(name) if name else []
    folders = [str(spec["source"])] if spec.get("source") else []
    if identity.is_local(model):
        folders.append(model)
    found, passed_over = identity.find_model(names, folders, expected=expected, cache_dir=cache_dir)
    if found is not None:
        return str(found)
    if recorded_name is not None:
        return recorded_name
    others = "; ".join(f"{path} holds {other or 'no model files'}" for path, other in passed_over)
    raise InvalidInputError(
        f"the recorded text model {model}"
        + (f" ({expected})" if expected else "")
        + " cannot be found: "
        + (others or "the folder no longer exists")
        + "; pass --text-model (or the embedder) with a folder of that model"
    )


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
