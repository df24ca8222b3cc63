"""What a space is: its configuration, and the model whose vectors it holds (compared by identity)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mm_rag.errors import InvalidInputError
from mm_rag.records import LEXICAL
from mm_rag.store import indexing


@dataclass(frozen=True, slots=True)
class SpaceConfig:
    """What a space is: its name, vector size, similarity metric and index choice.

    Attributes:
        name: Space name, e.g. ``"clip"`` or ``"text"``.
        dim: Vector dimension.
        metric: ``"cosine"`` (vectors are L2-normalised, inner product), ``"ip"`` or ``"l2"``.
        index: ``"auto"`` for the size/memory rule, or any Faiss ``index_factory`` string (``"HNSW32"``,
            ``"IVF1024,Flat"``, ``"OPQ64,IVF4096,PQ64"``…).
        memory_budget: Bytes the index may use; the ``"auto"`` rule moves to compressed codes beyond it.
        model: The embedder whose vectors the space holds, as its `spec` (``{"kind": "open_clip", "model": …}``),
            when known: searches rebuild the same embedder from it, and vectors of another model are refused.
            It says what the model is (``model``: a canonical name where one is known, ``fingerprint``: a hash
            of its files) apart from where it was last loaded from (``source``), so that the same model at
            another path is the same model (see `same_model` and `mm_rag.embed.identity`).
    """

    name: str
    dim: int
    metric: str = "cosine"
    index: str = "auto"
    memory_budget: int = indexing.DEFAULT_MEMORY_BUDGET
    model: dict[str, Any] | None = None

    def validate(self) -> None:
        if not isinstance(self.name, str) or not self.name.replace("_", "").replace("-", "").isalnum():
            raise InvalidInputError(f"space name must be letters, digits, '-' or '_', got {self.name!r}")
        if self.name == LEXICAL:
            raise InvalidInputError(f"space name {LEXICAL!r} is reserved for the keyword index (store.search_text)")
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim <= 0:
            raise InvalidInputError(f"space {self.name!r}: dim must be a positive integer, got {self.dim!r}")
        if self.metric not in indexing.METRICS:
            raise InvalidInputError(
                f"space {self.name!r}: unknown metric {self.metric!r}; expected one of {list(indexing.METRICS)}"
            )
        if self.index != "auto":
            indexing.new_index(self.index, self.dim, self.metric)  # raises on a bad factory string


# Keys of a recorded model that say where it was loaded from or what it is; every other key (the query prompt,
# say) changes the vectors and must match as it is.
_IDENTITY_KEYS = frozenset({"model", "pretrained", "fingerprint", "source"})


def same_model(recorded: dict[str, Any] | None, wanted: dict[str, Any] | None) -> bool:
    """Whether two recorded models (embedder `spec`s) make the same vectors, wherever each was loaded from.

    Both with a fingerprint: the fingerprints decide (and an open_clip architecture must match by name). A
    record without one (written before fingerprints, or a model not downloaded yet) is the same model when the
    two share a name or a folder: the recorded ``model`` or ``source`` of one is the other's. Only recorded
    data is compared: nothing is read from disk.
    """
    if recorded is None or wanted is None or recorded == wanted:
        return recorded == wanted
    if recorded.get("kind") != wanted.get("kind"):
        return False
    if {k: v for k, v in recorded.items() if k not in _IDENTITY_KEYS} != {
        k: v for k, v in wanted.items() if k not in _IDENTITY_KEYS
    }:
        return False
    if recorded.get("kind") == "open_clip":
        if Path(str(recorded.get("model"))).stem != Path(str(wanted.get("model"))).stem:
            return False
        if recorded.get("fingerprint") and wanted.get("fingerprint"):
            return bool(recorded["fingerprint"] == wanted["fingerprint"])
        return (recorded.get("model"), recorded.get("pretrained")) == (wanted.get("model"), wanted.get("pretrained"))
    if recorded.get("fingerprint") and wanted.get("fingerprint"):
        return bool(recorded["fingerprint"] == wanted["fingerprint"])
    return bool(_places(recorded) & _places(wanted))


def describe_model(spec: dict[str, Any] | None) -> str:
    """A recorded model in words, for messages: its name or folder, fingerprint and where it was loaded from."""
    if not isinstance(spec, dict):
        return repr(spec)
    what = str(spec.get("model"))
    if spec.get("pretrained") is not None:
        what += f" with weights {spec['pretrained']}"
    extras = [f"fingerprint {spec['fingerprint']}"] if spec.get("fingerprint") else []
    if spec.get("source") and spec.get("source") != spec.get("model"):
        extras.append(f"loaded from {spec['source']}")
    return what + (f" ({', '.join(extras)})" if extras else "")


def _places(spec: dict[str, Any]) -> set[str]:
    return {str(spec[key]) for key in ("model", "source") if spec.get(key)}
