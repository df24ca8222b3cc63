"""A retrieval tool for agents that answers with text passages and the images found, as content blocks."""

from __future__ import annotations

import base64
import io
import mimetypes
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForToolRun
from langchain_core.documents import Document
from langchain_core.messages.content import create_image_block, create_text_block
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

from langchain_mm_rag._convert import FilterLike
from langchain_mm_rag.vectorstores import MMRagVectorStore
from mm_rag.embed.media import MediaError, load_image

DEFAULT_NAME = "multimodal_search"
DEFAULT_DESCRIPTION = (
    "Search the multimodal knowledge base (documents, transcribed audio and video, images) with a natural-language"
    " query. Returns matching passages with their source and time range, and the matching images themselves."
)
MAX_IMAGE_SIDE = 512


class SearchInput(BaseModel):
    """What the agent sends: a query."""

    query: str = Field(description="What to look for, in natural language")


class MultimodalSearchTool(BaseTool):
    """Searches an `MMRagVectorStore` and returns ``(content blocks, Documents)``.

    The content (what the model reads) is one text block per hit, numbered and cited (``source`` or ``uri``,
    ``start``–``end`` seconds for audio/video), plus an image block (base64, downscaled to `max_image_side`)
    after each hit that is an image or a keyframe saved as a file. The artifact is the list of Documents.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = DEFAULT_NAME
    description: str = DEFAULT_DESCRIPTION
    args_schema: type[BaseModel] = SearchInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    vectorstore: MMRagVectorStore
    k: int = 4
    filter: FilterLike = None
    max_image_side: int = MAX_IMAGE_SIDE

    def _run(
        self, query: str, run_manager: CallbackManagerForToolRun | None = None
    ) -> tuple[list[dict[str, Any]], list[Document]]:
        documents = self.vectorstore.similarity_search(query, self.k, self.filter)
        return content_blocks(documents, self.max_image_side), documents


def create_multimodal_retriever_tool(
    vectorstore: MMRagVectorStore,
    name: str = DEFAULT_NAME,
    description: str = DEFAULT_DESCRIPTION,
    *,
    k: int = 4,
    filter: FilterLike = None,
    max_image_side: int = MAX_IMAGE_SIDE,
) -> MultimodalSearchTool:
    """A `MultimodalSearchTool` over `vectorstore` with the given name, description, `k` and `filter`."""
    return MultimodalSearchTool(
        name=name, description=description, vectorstore=vectorstore, k=k, filter=filter, max_image_side=max_image_side
    )


def content_blocks(documents: list[Document], max_image_side: int = MAX_IMAGE_SIDE) -> list[dict[str, Any]]:
    """Text blocks citing each Document and image blocks for the ones that are images (see the tool)."""
    if not documents:
        return [dict(create_text_block("No results."))]
    blocks: list[dict[str, Any]] = []
    for number, document in enumerate(documents, start=1):
        blocks.append(dict(create_text_block(_citation(number, document))))
        image = image_path(document)
        if image is None:
            continue
        try:
            data, mime_type = encode_image(image, max_image_side)
        except MediaError as error:  # the file moved or broke since it was stored: say so, keep the rest
            blocks.append(dict(create_text_block(f"[{number}] image not available: {error}")))
            continue
        blocks.append(dict(create_image_block(base64=data, mime_type=mime_type)))
    return blocks


def image_path(document: Document) -> str | None:
    """The image file a Document shows: its ``uri`` for an image, its ``frame_uri`` for a saved keyframe."""
    metadata = document.metadata
    if metadata.get("modality") == "image" and isinstance(metadata.get("uri"), str):
        return metadata["uri"]
    frame = metadata.get("frame_uri")
    return frame if isinstance(frame, str) else None


def encode_image(path: str, max_side: int = MAX_IMAGE_SIDE) -> tuple[str, str]:
    """The image at `path`, upright, at most `max_side` pixels on its longest side, as (base64, mime type):
    PNG for a PNG or GIF source (drawings stay sharp), else JPEG.

    Raises:
        MediaError: the file is missing, unreadable or not an image.
    """
    image = load_image(path)
    image.thumbnail((max_side, max_side))
    png = (mimetypes.guess_type(path)[0] or "") in ("image/png", "image/gif")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if png else "JPEG", **({} if png else {"quality": 85}))
    return base64.b64encode(buffer.getvalue()).decode("ascii"), "image/png" if png else "image/jpeg"


def _citation(number: int, document: Document) -> str:
    metadata = document.metadata
    source = metadata.get("source") or metadata.get("uri") or document.id or "unknown source"
    kind = metadata.get("modality", "text")
    where = f"{Path(source).name if isinstance(source, str) and Path(source).name else source}"
    start, end = metadata.get("start"), metadata.get("end")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        where += f", {_clock(start)}–{_clock(end)}"
    body = document.page_content.strip() or ("(image)" if kind in ("image", "video") else "(no text)")
    return f"[{number}] {kind} from {where}: {body}"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(float(seconds), 60.0)
    return f"{int(minutes)}:{rest:05.2f}"
