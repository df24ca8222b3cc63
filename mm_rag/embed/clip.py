"""`OpenCLIPEmbedder`: texts and images into one aligned CLIP space, with open_clip models."""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mm_rag._optional import require
from mm_rag.embed.base import encode_in_batches, pick_device, shared_model
from mm_rag.embed.identity import fingerprint
from mm_rag.embed.media import MAX_IMAGE_PIXELS, ImageSource, load_image
from mm_rag.errors import InvalidInputError, ModelNotFoundError

DEFAULT_MODEL = "ViT-B-32"
# +8 points text→image R@1 on Flickr30k over the OpenAI weights at the same cost.
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".npz")


class OpenCLIPEmbedder:
    """Embeds texts and images with an open_clip model into the same space (default space name ``"clip"``).

    Args:
        model: An open_clip architecture name (``open_clip.list_models()``), or the path of a model config
            JSON file (its file name, without ``.json``, becomes the architecture name).
        pretrained: A pretrained tag of that architecture (downloaded and cached on first use), the path of a
            local checkpoint (``.safetensors``, ``.pt``…), or None for untrained weights.
        device: ``"auto"`` (cuda, else mps, else cpu), ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``.
        precision: ``"auto"`` (fp16 on cuda, fp32 elsewhere), ``"fp32"``, ``"fp16"`` or ``"bf16"``; reduced
            precision runs through autocast on any device (bf16 pays off on CPUs with bf16 instructions).
        batch_size: Items per forward pass.
        space: The store space the vectors belong to.
        cache_dir: Where downloaded weights are cached (open_clip's default when None).
        max_image_pixels: Larger images are refused before decoding.
        local_files_only: Never download: a pretrained tag whose weights are not cached fails at once (the hub
            is unreachable). Passed per load; no environment variable is changed.

    The model loads on first use and is shared between embedders with the same model, weights and device.
    Texts longer than the model's context are truncated; outputs are L2-normalised float32 rows.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        pretrained: str | os.PathLike[str] | None = DEFAULT_PRETRAINED,
        *,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 64,
        space: str = "clip",
        cache_dir: str | None = None,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        local_files_only: bool = False,
    ) -> None:
        self.model_name, self._config, self._config_file = _resolve_architecture(model)
        self.pretrained = _resolve_pretrained(pretrained)
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.space = space
        self.cache_dir = cache_dir
        self.max_image_pixels = max_image_pixels
        self.local_files_only = local_files_only

    @property
    def spec(self) -> dict[str, Any]:
        """What makes its vectors, as JSON data (recorded with a store's space; `embedder_from_spec` rebuilds it).

        Local files (a config JSON, a checkpoint) also give a ``fingerprint`` of their contents, so the same
        files at another path are the same model (`mm_rag.store.config.same_model`).
        """
        model = str(self._config_file.resolve()) if self._config_file else self.model_name
        pretrained = str(self.pretrained.resolve()) if isinstance(self.pretrained, Path) else self.pretrained
        spec: dict[str, Any] = {"kind": "open_clip", "model": model, "pretrained": pretrained}
        files = [path for path in (self._config_file, self.pretrained) if isinstance(path, Path)]
        if files:
            spec["fingerprint"] = fingerprint(*files)
        return spec

    @property
    def dim(self) -> int:
        """Output dimension, read from the model configuration (no model load needed)."""
        return int(self._config["embed_dim"])

    @property
    def context_length(self) -> int:
        """Tokens per text; longer texts are truncated."""
        return int(self._config.get("text_cfg", {}).get("context_length", 77))

    @property
    def image_size(self) -> tuple[int, int]:
        """The (width, height) the model takes (JPEGs decode at a reduced scale no smaller than this)."""
        size = self._config.get("vision_cfg", {}).get("image_size", 224)
        width, height = (size, size) if isinstance(size, int) else (size[1], size[0])
        return int(width), int(height)

    @property
    def logit_scale(self) -> float:
        """The temperature CLIP learned for turning cosine similarities into logits (about 100; loads the model)."""
        model = self._loaded()[0]
        scale = getattr(model, "logit_scale", None)
        return float(scale.exp().item()) if scale is not None else 100.0

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One normalised row per text; texts over the context length are truncated, not rejected."""
        _check_texts(texts)
        model, _, tokenizer, device, precision = self._loaded()
        torch = require("torch", "CLIP embedding")

        def encode(batch: list[str]) -> Any:
            tokens = tokenizer(batch).to(device)
            with torch.inference_mode(), _autocast(torch, device, precision):
                return model.encode_text(tokens)

        return encode_in_batches(texts, encode, dim=self.dim, batch_size=self.batch_size, size_of=len)

    def embed_images(self, images: Sequence[ImageSource], progress: str | None = None) -> np.ndarray:
        """One normalised row per image (path, bytes or PIL image). Decoding runs ahead on worker threads.

        Raises:
            MediaError: naming the first image that cannot be decoded.
        """
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
            raise InvalidInputError("embed_images: expected a list of images")
        model, preprocess, _, device, precision = self._loaded()
        torch = require("torch", "CLIP embedding")
        limit, size = self.max_image_pixels, self.image_size

        def prepare(source: ImageSource) -> Any:
            return preprocess(load_image(source, limit, draft_size=size))

        def encode(pixels: list[Any]) -> Any:
            batch = torch.stack(pixels).to(device)
            with torch.inference_mode(), _autocast(torch, device, precision):
                return model.encode_image(batch)

        return encode_in_batches(
            images, encode, dim=self.dim, batch_size=self.batch_size, prepare=prepare, progress=progress
        )

    def load(self) -> OpenCLIPEmbedder:
        """Load the model now instead of at the first embedding, and return self.

        Lets an application find out at start-up that weights are missing (e.g. offline and not cached).

        Raises:
            InvalidInputError: the weights cannot be loaded (unknown tag, download impossible, bad checkpoint).
        """
        self._loaded()
        return self

    def _loaded(self) -> tuple[Any, Any, Any, str, str]:
        device = pick_device(self.device)
        precision = self.precision if self.precision != "auto" else ("fp16" if device.startswith("cuda") else "fp32")
        if precision not in ("fp32", "fp16", "bf16"):
            raise InvalidInputError(f"unknown precision {precision!r}; expected auto, fp32, fp16 or bf16")
        # A config file's path, not only its name: two configs both called "tiny.json" are different models.
        architecture = str(self._config_file.resolve()) if self._config_file else self.model_name
        key = ("open_clip", architecture, str(self.pretrained), device, self.cache_dir)
        model, preprocess, tokenizer = shared_model(key, lambda: self._load(device))
        return model, preprocess, tokenizer, device, precision

    def _load(self, device: str) -> tuple[Any, Any, Any]:
        """The model in float32; half precision runs through autocast (mixed precision: float32 inputs and
        normalisation layers, fp16/bf16 matrix products), which casting the weights alone would break."""
        open_clip = require("open_clip", "CLIP embedding")
        if self._config_file is not None:
            open_clip.add_model_config(self._config_file)
        if isinstance(self.pretrained, str):
            tags = open_clip.list_pretrained_tags_by_model(self.model_name)
            if self.pretrained not in tags:
                raise InvalidInputError(
                    f"unknown pretrained tag {self.pretrained!r} for open_clip model {self.model_name!r};"
                    f" known tags: {tags or 'none'} (or pass a local checkpoint path)"
                )
        weights, settings = self._cached_weights(open_clip)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model_name,
                pretrained=weights,
                **settings,
                device=device,
                precision="fp32",
                cache_dir=self.cache_dir,
                require_pretrained=self.pretrained is not None,  # never fall back to random weights silently
            )
        except Exception as error:  # a damaged checkpoint raises torch's, safetensors' or pickle's own types
            offline = isinstance(self.pretrained, str) and (
                self.local_files_only or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
            )
            hint = (
                "; downloads are off (HF_HUB_OFFLINE, or the hub cannot be reached), so weights not already cached"
                " cannot be fetched: fetch them on a connected machine (same cache_dir) or pass a local checkpoint path"
                if offline
                else ""
            )
            raise InvalidInputError(
                f"cannot load open_clip model {self.model_name!r} with weights {self.pretrained!r}: {error}{hint}"
            ) from error
        model.eval()
        return model, preprocess, open_clip.get_tokenizer(self.model_name)

    def _cached_weights(self, open_clip: Any) -> tuple[str | None, dict[str, Any]]:
        """What to pass open_clip as `pretrained`, with the settings a tag carries: a checkpoint path; or the
        cached file of a tag when there is one, so that nothing is asked of the hub; else the tag itself
        (downloaded, unless `local_files_only`).

        open_clip has no offline switch of its own; looking in the cache here is how a load stays local
        without setting ``HF_HUB_OFFLINE`` for the whole process. A tag also brings its image normalisation and
        QuickGELU setting, which open_clip applies only for a tag, so they are passed along with the file.
        """
        if not isinstance(self.pretrained, str):
            return (None if self.pretrained is None else str(self.pretrained)), {}
        tag = open_clip.get_pretrained_cfg(self.model_name, self.pretrained)
        repo, filename = os.path.split(tag.get("hf_hub", ""))
        names: list[str] = []
        if repo:
            from huggingface_hub import try_to_load_from_cache

            filename = filename or "open_clip_pytorch_model.bin"
            # open_clip downloads the safetensors alternative first, when the repository has one.
            safe = "open_clip_model.safetensors" if filename == "open_clip_pytorch_model.bin" else None
            if safe is None and filename.endswith((".bin", ".pth")):
                safe = filename[:-4] + ".safetensors"
            names = [name for name in (safe, filename) if name]
            for name in names:
                cached = try_to_load_from_cache(repo, name, cache_dir=self.cache_dir)
                if isinstance(cached, str) and os.path.isfile(cached):
                    settings: dict[str, Any] = {"force_quick_gelu": bool(tag.get("quick_gelu", False))}
                    for key in ("mean", "std", "interpolation", "resize_mode"):
                        if tag.get(key) is not None:
                            settings[f"image_{key}"] = tag[key]
                    return cached, settings
        if self.local_files_only:
            watch = tuple(f"hub:{repo}:{name}" for name in names) if names and self.cache_dir is None else None
            raise ModelNotFoundError(
                f"cannot load open_clip model {self.model_name!r} with weights {self.pretrained!r}: they are not"
                " cached and downloads are off (HF_HUB_OFFLINE is set, or the hub cannot be reached): fetch them on"
                " a connected machine (same cache_dir) or pass a local checkpoint path",
                watch,
            )
        return self.pretrained, {}

    def __repr__(self) -> str:
        return f"OpenCLIPEmbedder({self.model_name!r}, pretrained={self.pretrained!r}, space={self.space!r})"


def _resolve_architecture(model: str | os.PathLike[str]) -> tuple[str, dict[str, Any], Path | None]:
    """(name, config, config file to register) — read from JSON, without importing torch or open_clip."""
    path = Path(model)
    if path.suffix == ".json":
        if not path.is_file():
            raise InvalidInputError(f"open_clip model config {path} does not exist")
        return path.stem, _read_config(path), path
    name = str(model)
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        require("open_clip", "CLIP embedding")  # raises the install hint
    configs = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    config_file = configs / f"{name}.json"
    if not config_file.is_file():
        known = [p.stem for p in configs.glob("*.json")]
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        close += sorted(k for k in known if name.lower() in k.lower() and k not in close)[: 8 - len(close)]
        raise InvalidInputError(
            f"unknown open_clip model {name!r}"
            + (f"; did you mean one of {close}?" if close else "")
            + " (pass the path of a model config .json for a custom architecture)"
        )
    return name, _read_config(config_file), None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
        int(config["embed_dim"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InvalidInputError(f"{path} is not an open_clip model config with an embed_dim: {error}") from error
    return config


def _resolve_pretrained(pretrained: str | os.PathLike[str] | None) -> str | Path | None:
    """A local checkpoint path (checked now) or a pretrained tag (checked against open_clip's table at load)."""
    if pretrained is None:
        return None
    path = Path(pretrained)
    if path.suffix in _CHECKPOINT_SUFFIXES or path.exists():
        if not path.is_file():
            raise InvalidInputError(f"checkpoint {path} does not exist")
        return path
    return str(pretrained)


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InvalidInputError(f"embed_texts: expected a list of strings, got {type(texts).__name__}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"embed_texts: item {index} is {type(text).__name__}, not a string")


def _autocast(torch: Any, device: str, precision: str) -> Any:
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    # Reduced precision where it was asked for, CPU included (bf16 is fast on CPUs with AMX/AVX512-BF16).
    return torch.autocast(device.split(":")[0], dtype=torch.float16 if precision == "fp16" else torch.bfloat16)
