"""Which space a vector store uses, and whether an existing one fits its embedding."""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings

from langchain_mm_rag.embeddings import MMRagEmbeddings
from mm_rag.errors import InvalidInputError
from mm_rag.store import MultimodalStore, SpaceConfig
from mm_rag.store.config import describe_model, same_model

DEFAULT_SPACE = "langchain"


class IncompatibleSpaceError(InvalidInputError):
    """The store's space does not fit the embedding: another dimension, metric or model."""


def check_space(existing: SpaceConfig, embedding: Embeddings, metric: str | None) -> None:
    """Refuse an existing space that `embedding` (and an explicit `metric`) cannot search meaningfully."""
    name = existing.name
    if metric is not None and existing.metric != metric:
        raise IncompatibleSpaceError(f"space {name!r} uses metric {existing.metric!r}, not {metric!r}")
    if isinstance(embedding, MMRagEmbeddings) and embedding.dim != existing.dim:
        raise IncompatibleSpaceError(
            f"space {name!r} holds {existing.dim}-dimensional vectors but {embedding!r} makes"
            f" {embedding.dim}-dimensional ones; use another space or the embedding the store was built with"
        )
    spec = model_spec(embedding)
    if spec is not None and existing.model is not None and not same_model(existing.model, spec):
        raise IncompatibleSpaceError(
            f"space {name!r} holds vectors of the model {describe_model(existing.model)}, not of"
            f" {describe_model(spec)}: queries would be compared with another model's vectors (load without an"
            " embedding to rebuild its own)"
        )


def default_space(embedding: Embeddings, store: MultimodalStore) -> str:
    """The adapter's own space; else the store's only space; else `DEFAULT_SPACE`."""
    if isinstance(embedding, MMRagEmbeddings):
        return embedding.space
    spaces = list(store.spaces)
    return spaces[0] if len(spaces) == 1 else DEFAULT_SPACE


def only_space(store: MultimodalStore) -> str:
    """The store's one space (to rebuild its recorded model when no space is named)."""
    if len(store.spaces) != 1:
        raise InvalidInputError(f"the store has spaces {sorted(store.spaces)}: say which one with space=")
    return next(iter(store.spaces))


def model_spec(embedding: Embeddings) -> dict[str, Any] | None:
    """What the adapter's embedder records with a space (its `spec`), None for other embeddings."""
    return getattr(embedding.embedder, "spec", None) if isinstance(embedding, MMRagEmbeddings) else None
