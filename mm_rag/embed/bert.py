"""A query-time BERT encoder for sentence-transformers models, without importing sentence-transformers.

``import sentence_transformers`` costs 6–9 s on 2 cores (it pulls transformers' model zoo, torch._dynamo,
scikit-learn, scipy and sympy for its training code), while embedding one search query needs ~50 ms of
arithmetic. For the most common kind of text model (a sentence-transformers folder that is exactly a BERT
``Transformer`` → mean/CLS ``Pooling`` → ``Normalize``, with ``model.safetensors`` and ``tokenizer.json``,
e.g. all-MiniLM-L6-v2) this module runs the same computation with plain torch ops, the tokenizers library
and safetensors: about 2 s from a cold process, most of it ``import torch``. Folders of any other shape are
refused (`light_encoder_config` returns None) and `TextEmbedder` falls back to sentence-transformers.

The operations are the ones transformers' ``BertModel`` runs in eval mode with SDPA attention, in the same
order and precision, so a query vector equals sentence-transformers' own (the tests compare them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mm_rag.errors import InvalidInputError

# The module types sentence-transformers writes in modules.json, by the name of their last part.
_TRANSFORMER, _POOLING, _NORMALIZE = "Transformer", "Pooling", "Normalize"
_MEAN, _CLS = "pooling_mode_mean_tokens", "pooling_mode_cls_token"


@dataclass(frozen=True)
class LightEncoderConfig:
    """What `LightBertEncoder` needs from a sentence-transformers folder that it can run.

    Attributes:
        folder: The model folder.
        max_seq_length: Tokens kept per text (longer texts are truncated, as sentence-transformers does).
        pooling: ``"mean"`` (mean of the token vectors over the attention mask) or ``"cls"``.
        normalize: Whether the model ends with a ``Normalize`` module.
        bert: The BERT ``config.json`` as a dict.
    """

    folder: Path
    max_seq_length: int
    pooling: str
    normalize: bool
    bert: dict[str, Any]


def light_encoder_config(model: str) -> LightEncoderConfig | None:
    """The config of the local folder `model` when `LightBertEncoder` can run it exactly, else None."""
    folder = Path(model)
    try:
        modules = _read_json(folder / "modules.json")
        kinds = [str(module["type"]).rsplit(".", 1)[-1] for module in modules]
        if kinds not in ([_TRANSFORMER, _POOLING], [_TRANSFORMER, _POOLING, _NORMALIZE]):
            return None
        if modules[0].get("path", "") != "":
            return None
        pooling_config = _read_json(folder / modules[1]["path"] / "config.json")
        bert = _read_json(folder / "config.json")
        sentence = _read_json(folder / "sentence_bert_config.json")
        tokenizer = _read_json(folder / "tokenizer_config.json", missing={})
        st_config = _read_json(folder / "config_sentence_transformers.json", missing={})
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    pooling = _pooling_mode(pooling_config)
    plain_bert = (
        bert.get("model_type") == "bert"
        and bert.get("hidden_act") == "gelu"
        and bert.get("position_embedding_type", "absolute") == "absolute"
        and not bert.get("is_decoder", False)
    )
    # Prompts, lower-casing and a tokenizer other than the fast one saved in tokenizer.json change the input
    # in ways only sentence-transformers knows: leave those models to it.
    plain_input = (
        not sentence.get("do_lower_case", False)
        and st_config.get("model_type", "SentenceTransformer") == "SentenceTransformer"
        and not st_config.get("prompts")
        and not st_config.get("default_prompt_name")
        and isinstance(sentence.get("max_seq_length"), int)
        and tokenizer.get("tokenizer_class") in (None, "BertTokenizer", "BertTokenizerFast")
    )
    files = (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    if pooling is None or not plain_bert or not plain_input or not files:
        return None
    return LightEncoderConfig(
        folder=folder,
        max_seq_length=int(sentence["max_seq_length"]),
        pooling=pooling,
        normalize=kinds[-1] == _NORMALIZE,
        bert=bert,
    )


def _pooling_mode(config: dict[str, Any]) -> str | None:
    """``"mean"`` or ``"cls"`` when that is the only pooling `config` asks for, else None.

    Pooling configs come in two spellings: older ones set booleans (``pooling_mode_mean_tokens: true``),
    newer ones name the mode (``pooling_mode: "mean"``). Excluding prompt tokens from the mean
    (``include_prompt: false``) is left to sentence-transformers.
    """
    if config.get("include_prompt", True) is not True:
        return None
    named = config.get("pooling_mode")
    if named is not None:
        modes = set(named) if isinstance(named, list) else {named}
    else:
        modes = {key for key, value in config.items() if key.startswith("pooling_mode_") and value}
        modes = {{_MEAN: "mean", _CLS: "cls"}.get(key, key) for key in modes}
    return next(iter(modes)) if len(modes) == 1 and modes <= {"mean", "cls"} else None


def _read_json(path: Path, missing: Any = None) -> Any:
    """The JSON in `path`; `missing` when given and the file does not exist (else OSError)."""
    if missing is not None and not path.is_file():
        return missing
    with open(path, encoding="utf-8") as file:
        return json.load(file)


class LightBertEncoder:
    """Encodes texts one at a time with a BERT sentence-transformers model described by `config`.

    One text per forward pass means no padding, so no attention mask is needed and the result does not
    depend on what else is in a batch: the shape of a search query.
    """

    def __init__(self, config: LightEncoderConfig, device: str = "cpu") -> None:
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        self.config = config
        self.device = device
        self.dim = int(config.bert["hidden_size"])
        self._torch = torch
        self._heads = int(config.bert["num_attention_heads"])
        self._layers = int(config.bert["num_hidden_layers"])
        self._eps = float(config.bert.get("layer_norm_eps", 1e-12))
        try:
            self._tokenizer = Tokenizer.from_file(str(config.folder / "tokenizer.json"))
        except Exception as error:  # tokenizers raises a bare Exception for every malformed file
            raise InvalidInputError(f"cannot read the tokenizer of {str(config.folder)!r}: {error}") from error
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(min(config.max_seq_length, int(config.bert["max_position_embeddings"])))
        try:
            weights = load_file(str(config.folder / "model.safetensors"), device=device)
        except (OSError, SafetensorError) as error:
            raise InvalidInputError(f"cannot read the weights of {str(config.folder)!r}: {error}") from error
        # Checkpoints saved from BertModel have bare names, those saved from BertFor… a "bert." prefix.
        self._weights = {name.removeprefix("bert."): tensor for name, tensor in weights.items()}
        missing = sorted(set(self._weight_names()) - set(self._weights))
        if missing:
            raise InvalidInputError(f"{str(config.folder)!r} is not a BERT checkpoint: no {missing[0]!r}")

    def _weight_names(self) -> list[str]:
        """Every tensor the forward pass reads."""
        names = [f"embeddings.{kind}_embeddings.weight" for kind in ("word", "token_type", "position")]
        dense = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "intermediate.dense", "output.dense", "attention.output.LayerNorm", "output.LayerNorm"]  # fmt: skip
        parts = ["embeddings.LayerNorm"] + [f"encoder.layer.{i}.{name}" for i in range(self._layers) for name in dense]
        return names + [f"{part}.{kind}" for part in parts for kind in ("weight", "bias")]

    def encode(self, text: str, *, prompt: str | None = None, normalize: bool = True) -> np.ndarray:
        """The float32 sentence vector of `prompt` + `text`.

        The model's own ``Normalize`` module runs when it has one; `normalize` L2-normalises once more, as
        sentence-transformers' ``encode(normalize_embeddings=True)`` does (the second pass moves the last bit).
        """
        torch = self._torch
        encoding = self._tokenizer.encode((prompt or "") + text)
        with torch.inference_mode():
            ids = torch.tensor([encoding.ids], dtype=torch.long, device=self.device)
            types = torch.tensor([encoding.type_ids], dtype=torch.long, device=self.device)
            tokens = self._forward(ids, types)
            vector = tokens[:, 0] if self.config.pooling == "cls" else tokens.sum(1) / tokens.shape[1]
            if self.config.normalize:
                vector = torch.nn.functional.normalize(vector, p=2, dim=1)
            if normalize:
                vector = torch.nn.functional.normalize(vector, p=2, dim=1)
        return vector[0].float().cpu().numpy()

    def _forward(self, ids: Any, types: Any) -> Any:
        functional = self._torch.nn.functional
        w = self._weights
        positions = self._torch.arange(ids.shape[1], device=self.device).unsqueeze(0)
        hidden = (
            functional.embedding(ids, w["embeddings.word_embeddings.weight"])
            + functional.embedding(types, w["embeddings.token_type_embeddings.weight"])
            + functional.embedding(positions, w["embeddings.position_embeddings.weight"])
        )
        hidden = self._norm(hidden, "embeddings.LayerNorm")
        for layer in range(self._layers):
            hidden = self._layer(hidden, f"encoder.layer.{layer}.")
        return hidden

    def _layer(self, hidden: Any, prefix: str) -> Any:
        functional = self._torch.nn.functional
        batch, length, width = hidden.shape
        head_size = width // self._heads

        def heads(name: str) -> Any:
            projected = self._linear(hidden, prefix + f"attention.self.{name}")
            return projected.view(batch, length, self._heads, head_size).transpose(1, 2)

        attended = functional.scaled_dot_product_attention(
            heads("query"), heads("key"), heads("value"), scale=1.0 / math.sqrt(head_size)
        )
        attended = attended.transpose(1, 2).reshape(batch, length, width).contiguous()
        hidden = self._norm(
            self._linear(attended, prefix + "attention.output.dense") + hidden, prefix + "attention.output.LayerNorm"
        )
        inner = functional.gelu(self._linear(hidden, prefix + "intermediate.dense"))
        return self._norm(self._linear(inner, prefix + "output.dense") + hidden, prefix + "output.LayerNorm")

    def _linear(self, x: Any, name: str) -> Any:
        return self._torch.nn.functional.linear(x, self._weights[name + ".weight"], self._weights[name + ".bias"])

    def _norm(self, x: Any, name: str) -> Any:
        w = self._weights
        return self._torch.nn.functional.layer_norm(
            x, (x.shape[-1],), w[name + ".weight"], w[name + ".bias"], self._eps
        )
