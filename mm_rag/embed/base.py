"""What every embedder shares: the interface, one batching engine, device choice and a model cache."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from mm_rag.errors import InvalidInputError

Item = TypeVar("Item")


@runtime_checkable
class Embedder(Protocol):
    """Embeds texts into one space. `space` names the store space its vectors belong to."""

    space: str

    @property
    def dim(self) -> int: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text, in order."""
        ...


@runtime_checkable
class MultimodalEmbedder(Embedder, Protocol):
    """Embeds texts and images into one aligned space (CLIP)."""

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        """One L2-normalised float32 row per image (path, bytes or PIL image), in order."""
        ...


def encode_in_batches(
    items: Sequence[Item],
    encode: Callable[[list[Any]], Any],
    *,
    dim: int,
    batch_size: int,
    size_of: Callable[[Item], int] | None = None,
    prepare: Callable[[Item], Any] | None = None,
    workers: int | None = None,
    progress: str | None = None,
) -> np.ndarray:
    """Run `encode` over `items` in batches and return L2-normalised float32 rows in the caller's order.

    Items are sorted by `size_of` (longest first) so each batch pads little, then put back in order.
    `prepare` (decode + preprocess one item) runs on `workers` threads one batch ahead of `encode`, so
    decoding hides behind model compute; `workers` defaults to one per core, at most 4 (more decoding
    threads than cores only contend with the model's own threads). `encode` receives a list of (prepared)
    items and returns an ``(len, dim)`` array or tensor. `progress` labels a progress bar shown on long runs;
    None is quiet.
    """
    if isinstance(items, (str, bytes)):
        raise InvalidInputError("expected a list of items, got a single string; wrap it in a list")
    count = len(items)
    output = np.empty((count, dim), dtype=np.float32)
    if count == 0:
        return output
    order = sorted(range(count), key=lambda i: -size_of(items[i])) if size_of else list(range(count))
    batches = [order[start : start + batch_size] for start in range(0, count, batch_size)]
    steps: Any = batches
    if progress is not None and len(batches) > 4:
        from tqdm.auto import tqdm

        steps = tqdm(batches, desc=progress, unit="batch", leave=False)
    if prepare is None:
        for chosen in steps:
            output[chosen] = _to_numpy(encode([items[i] for i in chosen]))
    else:
        threads = workers or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mm-rag-prepare") as pool:
            ahead = [pool.submit(prepare, items[i]) for i in batches[0]]
            for number, chosen in enumerate(steps):
                ready = [future.result() for future in ahead]
                if number + 1 < len(batches):
                    ahead = [pool.submit(prepare, items[i]) for i in batches[number + 1]]
                output[chosen] = _to_numpy(encode(ready))
    norms = np.linalg.norm(output, axis=1, keepdims=True)
    np.divide(output, norms, out=output, where=norms > 0)
    return output


def _to_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


def pick_device(device: str = "auto") -> str:
    """``"auto"`` → ``cuda`` when available, else ``mps``, else ``cpu``; other names are checked and returned."""
    from mm_rag._optional import require

    torch = require("torch", "choosing a device")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} requested but CUDA is not available")
    if kind not in ("cpu", "cuda", "mps"):
        raise InvalidInputError(f"unknown device {device!r}; expected auto, cpu, cuda[:N] or mps")
    return device


_MODELS: dict[tuple[Any, ...], Any] = {}
_MODELS_LOCK = threading.Lock()


def shared_model(key: tuple[Any, ...], load: Callable[[], Any]) -> Any:
    """Load a model once per `key` (kind, name or path, device, precision…) and share it between embedders."""
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = _MODELS[key] = load()
        return model


def is_shared_model_loaded(key: tuple[Any, ...]) -> bool:
    """Whether `shared_model` has loaded a model for `key` already (loads nothing)."""
    with _MODELS_LOCK:
        return key in _MODELS
