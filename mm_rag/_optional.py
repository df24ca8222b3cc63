"""Optional dependencies, gated in one place: import name → the extra that installs it.

Nothing here changes the environment; a missing package raises one error naming exactly what to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from mm_rag.errors import MMRagError

EXTRAS: dict[str, str] = {
    "torch": "clip",
    "open_clip": "clip",
    "PIL": "clip",
    "sentence_transformers": "text",
    "whisper": "audio",
    "faster_whisper": "audio",
    "soundfile": "audio",
    "soxr": "audio",
    "av": "video",
    "pypdf": "docs",
    "pypdfium2": "docs",
    "bs4": "docs",
    "docx": "docs",
    "pptx": "docs",
    "openpyxl": "docs",
    "rapidocr_onnxruntime": "ocr",
    "tesserocr": "ocr",
    "fastapi": "server",
    "uvicorn": "server",
    "mcp": "mcp",
    "pyarrow": "distributed",
    "ray": "distributed",
}


class MissingDependencyError(MMRagError, ImportError):
    """An optional package needed for the requested feature is not installed."""


def require(module: str, feature: str) -> ModuleType:
    """Import `module` for `feature`, or raise `MissingDependencyError` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        hint = f"pip install 'mm-rag[{extra}]'" if extra else f"pip install {top}"
        raise MissingDependencyError(f"{feature} needs the package {top!r}, which is not installed: {hint}") from error


def available(module: str) -> bool:
    """Whether `module` can be imported (without importing it)."""
    return importlib.util.find_spec(module.split(".")[0]) is not None
