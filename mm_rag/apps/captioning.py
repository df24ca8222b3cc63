"""Captioning from what the collection knows, and zero-shot labelling, with the CLIP embedder.

Without a language model a caption is the collection's nearest texts in the CLIP space, ranked (a picture of a
harbour finds the passages and transcript moments about harbours). With one, the picture and those texts go to
the model, which writes the caption. Labelling scores an item against label texts, as CLIP was trained to.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_rag.apps.llm import complete
from mm_rag.context import Context, ImagePart
from mm_rag.errors import InvalidInputError
from mm_rag.filters import Filter
from mm_rag.records import Record

CAPTION_SYSTEM_PROMPT = (
    "You write one concise, factual caption for the image(s) given. Texts from the user's collection that lie"
    " near the image are listed as hints; use them only where the image agrees with them."
)
TEXT_MODALITIES = ["text", "audio", "video"]


@dataclass(frozen=True)
class CaptionCandidate:
    """A text near the item in the CLIP space: the text, its cosine similarity, and where it comes from."""

    text: str
    score: float
    source: str | None = None
    record_id: str | None = None


@dataclass
class Caption:
    """The caption (the model's, or the best candidate's text) and the ranked candidates behind it."""

    text: str
    candidates: list[CaptionCandidate] = field(default_factory=list)


def caption(
    source: Any,
    clip: Any,
    *,
    store: Any = None,
    candidates: Sequence[str] | None = None,
    llm: Any = None,
    k: int = 5,
    filter: Filter | None = None,
    keyframe_every: float = 2.0,
) -> Caption:
    """Caption an image or a video.

    Args:
        source: An image (path, bytes or PIL image) or a video file path (its keyframes are averaged).
        clip: The CLIP embedder (the store's CLIP space must hold its vectors).
        store: The collection whose texts (passages and transcript windows in the CLIP space) are candidates.
        candidates: Extra caption texts to rank, e.g. a list of descriptions.
        llm: None: the best-ranked text is the caption. Otherwise a LangChain chat model, a LlamaIndex LLM or
            an `OpenAIChat` writes it from the picture and the ranked texts.
        k: Candidates kept.
        filter: Restricts the store's candidates.

    Raises:
        InvalidInputError: neither a store nor candidates; MediaError: an unreadable image or video.
    """
    if store is None and not candidates:
        raise InvalidInputError("caption: give a store to draw texts from, or candidate captions, or both")
    pictures = _pictures(source, keyframe_every)
    vectors = clip.embed_images(pictures)
    query = vectors.mean(axis=0)
    query /= max(float(np.linalg.norm(query)), 1e-12)
    ranked = _ranked_candidates(query, clip, store, candidates, k, filter)
    if llm is None:
        return Caption(ranked[0].text if ranked else "", ranked)
    hints = "\n".join(f"- {c.text} (similarity {c.score:.2f})" for c in ranked) or "- (none)"
    context = Context(f"Nearby texts from the collection:\n{hints}", [_encoded(p) for p in pictures[:4]])
    return Caption(complete(llm, CAPTION_SYSTEM_PROMPT, context, "Write the caption.").strip(), ranked)


def label(
    item: Any, labels: Sequence[str], clip: Any, *, store: Any = None, template: str = "{}"
) -> list[tuple[str, float]]:
    """Zero-shot labelling: each label's probability for `item`, most likely first.

    Args:
        item: An image (path, bytes, PIL image), a text, or a stored `Record` (its CLIP vector is used;
            needs `store`).
        labels: The labels, e.g. ``["a happy photo", "a sad photo"]``.
        template: Wraps each label, e.g. ``"a photo of {}"``.

    Probabilities are a softmax over the cosine similarities times CLIP's learned logit scale.
    """
    if isinstance(labels, str) or len(labels) < 2:
        raise InvalidInputError("label: give at least two labels (a list of strings)")
    if isinstance(item, Record):
        if store is None:
            raise InvalidInputError("label: a stored record needs the store (store=)")
        stored = store.vectors(clip.space, [item.id])
        if item.id not in stored:
            raise InvalidInputError(f"label: record {item.id!r} has no vector in space {clip.space!r}")
        vector = stored[item.id]
    elif isinstance(item, str) and not _is_file(item):
        vector = clip.embed_texts([item])[0]
    else:
        vector = clip.embed_images([item])[0]
    label_vectors = clip.embed_texts([template.format(text) for text in labels])
    logits = clip.logit_scale * (label_vectors @ vector)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities, kind="stable")
    return [(labels[i], float(probabilities[i])) for i in order]


def _pictures(source: Any, keyframe_every: float) -> list[Any]:
    from mm_rag.embed.media import load_image
    from mm_rag.embed.sniff import sniff

    if isinstance(source, (str, os.PathLike)) and sniff(Path(source)) == "video":
        from mm_rag.embed.video import sample_keyframes

        return [keyframe.image for keyframe in sample_keyframes(source, keyframe_every)]
    return [load_image(source)]


def _ranked_candidates(
    query: np.ndarray, clip: Any, store: Any, candidates: Sequence[str] | None, k: int, filter: Filter | None
) -> list[CaptionCandidate]:
    found: list[CaptionCandidate] = []
    if candidates:
        scores = clip.embed_texts(list(candidates)) @ query
        found += [CaptionCandidate(text, float(score)) for text, score in zip(candidates, scores)]
    if store is not None and clip.space in store.spaces:
        texts_only = [{"modality": {"$in": TEXT_MODALITIES}}, {"text": {"$exists": True}}]
        condition = {"$and": [filter, *texts_only] if filter else texts_only}
        for hit in store.search(clip.space, query, k=k, filter=condition):
            found.append(CaptionCandidate(hit.record.text, hit.score, hit.record.uri or hit.record.doc_id, hit.record.id))
    found.sort(key=lambda candidate: -candidate.score)
    return found[:k]


def _encoded(picture: Any) -> ImagePart:
    import base64
    import io

    copy = picture.copy()
    copy.thumbnail((512, 512))
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=85)
    return ImagePart(base64.b64encode(buffer.getvalue()).decode("ascii"), "image/jpeg", citation=0)


def _is_file(text: str) -> bool:
    try:
        return len(text) < 4096 and Path(text).is_file()
    except OSError:
        return False
