"""The examples' embedder: CLIP when its weights load here, else the text model, with one line saying so.

The examples are about text *and* pictures, which needs CLIP weights (downloaded once, or a local config JSON
and checkpoint). A machine without them still runs every example as documented: like ``mm-rag demo``, it says
in one line that CLIP cannot load and goes on with the text model (the packaged all-MiniLM-L6-v2 copy when the
model hub cannot be reached), leaving the pictures out. Both come from `mm_rag.embed.loading.load_models`, the
path the command line and the servers load their models by.
"""

from __future__ import annotations

from mm_rag import OpenCLIPEmbedder, TextEmbedder
from mm_rag.embed.loading import ModelChoice, load_models, one_line


def load_embedder(model: str, pretrained: str, *, device: str = "cpu") -> OpenCLIPEmbedder | TextEmbedder:
    """The CLIP model `model` with weights `pretrained`, or, when it cannot load, the default text model.

    Args:
        model: open_clip architecture name or config JSON path.
        pretrained: Pretrained tag or checkpoint path.
        device: Device of the model.

    Returns:
        A loaded `OpenCLIPEmbedder` (texts and pictures) or `TextEmbedder` (texts only; check with
        ``isinstance(embedder, OpenCLIPEmbedder)`` before adding or searching pictures).

    Raises:
        SystemExit: neither model can load, with the reasons.
    """
    clip = load_models(None, ModelChoice(clip_model=model, clip_pretrained=pretrained, text=False, audio=False,
                                         device=device))  # fmt: skip
    if clip.clip is not None:
        return clip.clip
    reason = one_line(clip.unavailable.get("clip", "unknown reason"), 240)
    print(f"note: CLIP cannot load here ({reason}); going on with text only, pictures left out")
    text = load_models(None, ModelChoice(clip=False, audio=False, device=device))
    if text.text is None:
        raise SystemExit(f"error: no embedder can load: CLIP: {reason}; text: {text.unavailable.get('text')}")
    return text.text
