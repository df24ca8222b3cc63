"""Files skipped for want of a model, remembered so that re-running an ingestion does not load every model to
find them wanting again.

A picture skipped because CLIP could not load (weights not cached, downloads off), a recording where the
transcriber heard no speech: run again on the same content, with the same models asked for and nothing new
on the machine, the outcome is the same. The store keeps, per such file, its content hash, the reason, and
per model *role* (``"clip"``, ``"text"``, ``"audio"``, ``"ocr"``) whose model would change the outcome: what
was asked for, and what would let a missing one load (a file in the Hugging Face cache, a local path). A
later run that finds the same content, the same requests and none of those files repeats the reason without
loading anything; a new download, another model named, or a changed file puts the file back in the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The store setting holding doc_id → {"hash", "reason", "needs": {role: {"request", "watch"}}}.
WAITING = "ingest.waiting"


@dataclass(frozen=True)
class ModelRequest:
    """What an ingestion run asked of one model role, and what would change the answer.

    Attributes:
        request: The model asked for (its name, ``"off"`` when left out on purpose).
        watch: When the model could not load, what would let it: ``"hub:REPO:FILE"`` (a file in the Hugging
            Face cache; downloads being possible counts too) or a local path. Empty when it loaded or was
            left out; None when nobody can tell, and then nothing waiting on it is remembered.
    """

    request: str
    watch: tuple[str, ...] | None = ()


def remember(
    store: Any,
    outcomes: Iterable[tuple[str, str | None, str | None, tuple[str, ...]]],
    requests: Mapping[str, ModelRequest],
) -> None:
    """Record, for each (doc_id, content hash, skip reason, roles needed) of a run, whether it waits on a model.

    A file that was stored, failed, or skipped for a reason no model changes (or one nobody can watch for)
    loses its record; one skipped for want of the models of `roles` gets one. Nothing is written when
    nothing changes (an unchanged run leaves the store clean).
    """
    waiting: dict[str, Any] = dict(store.state(WAITING) or {})
    before = dict(waiting)
    for doc_id, digest, reason, roles in outcomes:
        needs = {role: requests.get(role) for role in roles}
        if (
            digest is None
            or reason is None
            or not needs
            or any(need is None or need.watch is None for need in needs.values())
        ):
            waiting.pop(doc_id, None)
            continue
        waiting[doc_id] = {
            "hash": digest,
            "reason": reason,
            "needs": {role: {"request": need.request, "watch": list(need.watch)} for role, need in needs.items()},
        }
    if waiting != before:
        store.put_state(WAITING, waiting)


def still_waiting(store: Any, requests: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """doc_id → (content hash, reason) of the remembered files whose outcome would not change now: every model
    they wait on is asked for as before (`requests`: role → request) and none of its watched files appeared."""
    found: dict[str, tuple[str, str]] = {}
    for doc_id, entry in (store.state(WAITING) or {}).items():
        needs = entry.get("needs", {})
        if all(
            requests.get(role) == need["request"] and not _any_present(need["watch"]) for role, need in needs.items()
        ):
            found[doc_id] = (entry["hash"], entry["reason"])
    return found


def _any_present(watch: Iterable[str]) -> bool:
    return any(_present(item) for item in watch)


def _present(item: str) -> bool:
    """Whether a watched file now exists (for a hub file: is cached, or could be downloaded)."""
    if not item.startswith("hub:"):
        return Path(item).exists()
    _, repo, filename = item.split(":", 2)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo, filename)
    if isinstance(cached, str) and os.path.isfile(cached):
        return True
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    from mm_rag.embed.loading import hub_reachable

    return hub_reachable()
