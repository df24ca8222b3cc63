"""`ingest_to_shards`: the decode → embed pipeline of `mm_rag.ingest` on Ray Data, writing embedding shards.

The driver lists the files, extends the saved shard plan (`mm_rag.distributed.plan`) and hands the shards
that are not finished to a Ray Data pipeline: one row per shard, `map_batches` over a pool of `ShardWorker`
actors (each loads its models once, on a GPU when it has one) with one shard per batch. Each actor writes its
shards itself with `mm_rag.shards.ShardSet.write`, atomically, so whatever a killed run finished stays
finished and the next run skips it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_rag._optional import require
from mm_rag.distributed.models import ModelSpec, embedder_spec, transcriber_spec
from mm_rag.distributed.plan import PlannedShard, extend_plan, load_plan, save_plan
from mm_rag.distributed.sources import list_sources
from mm_rag.distributed.worker import ShardWorker
from mm_rag.errors import InvalidInputError
from mm_rag.ingestion.extract import ExtractOptions
from mm_rag.shards import ShardSet


@dataclass
class ShardReport:
    """What a distributed ingestion run did.

    Attributes:
        shards_dir: The shard root.
        written: Shards written by this run.
        skipped: Shards finished before this run, left alone.
        redone: Finished shards whose files had changed: deleted, then written again (also in `written`).
        failed: Files (or locations that could not be listed) that could not be ingested, with the reason.
        skipped_files: Files of the written shards left out without an error (no model for their kind, silence).
        records: Records written by this run.
    """

    shards_dir: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    redone: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped_files: dict[str, str] = field(default_factory=dict)
    records: int = 0

    def summary(self) -> str:
        return (
            f"{len(self.written)} shards written ({len(self.redone)} redone), {len(self.skipped)} already finished;"
            f" {self.records} records, {len(self.failed)} files failed, {len(self.skipped_files)} skipped"
        )


def ingest_to_shards(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    shards_dir: str | os.PathLike[str],
    *,
    clip: Any | None = None,
    text: Any | None = None,
    transcriber: Any | None = None,
    ocr: str | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    options: ExtractOptions | None = None,
    files_per_shard: int = 64,
    address: str | None = None,
    actors: int | None = None,
    num_cpus_per_actor: float | None = None,
    num_gpus_per_actor: float | None = None,
    decode_threads: int = 2,
    progress: bool = False,
    ray_init: dict[str, Any] | None = None,
) -> ShardReport:
    """Ingest files, folders and object-store prefixes into embedding shards, with a pool of Ray actors.

    The records and vectors are those `mm_rag.ingest` stores for the same files and models. A re-run skips
    finished shards, appends shards for new files and redoes finished shards whose files changed (see
    `mm_rag.distributed.plan`); a run with nothing to do does not touch Ray at all.

    Args:
        paths: Local files and folders, ``file://`` URIs, or object-store URIs/prefixes (``s3://bucket/photos``).
        shards_dir: The shard root (see `mm_rag.shards` for the layout), created when missing.
        clip, text: Embedders, or their specs (``{"kind": …, "model": …}``, optionally with a ``"space"``).
        transcriber: A `WhisperTranscriber`, or its spec (``{"kind": "whisper", "model": …, …}``).
        ocr: The OCR engine each actor loads to read text inside pictures (a name for
            `mm_rag.embed.ocr.load_ocr`: ``"auto"``, ``"rapidocr"``, ``"tesseract"``), or None.
        include, exclude: Glob patterns on file names or relative paths.
        options: Chunking, transcript windows and keyframe sampling settings.
        files_per_shard: Files per shard (a new run's plan; a saved plan keeps its shards).
        address: The Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``"local"`` for a new local
            instance; None: ``RAY_ADDRESS``, else a new local instance), shut down again at the end. When Ray is
            already initialised in this process, that instance is used and `address` is ignored.
        actors: Actors in the pool (default: one per GPU, else the CPUs less one divided by `num_cpus_per_actor`,
            never more than the shards to write).
        num_cpus_per_actor: CPUs each actor reserves (default 1, or 0.5 on clusters under 4 CPUs); keep a CPU
            free for Ray Data's own tasks.
        num_gpus_per_actor: GPUs per actor (default 1 when the cluster has GPUs, else 0); models then run on cuda.
        decode_threads: Threads per actor decoding the files of a shard.
        progress: Show Ray Data's progress bars.
        ray_init: More keyword arguments for ``ray.init`` when this call starts or joins Ray.

    Raises:
        InvalidInputError: no embedder, or models other than those the shard root records.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if files_per_shard < 1:
        raise InvalidInputError(f"files_per_shard must be at least 1, got {files_per_shard}")
    clip_spec, text_spec = embedder_spec(clip, "clip"), embedder_spec(text, "text")
    if clip_spec is None and text_spec is None:
        raise InvalidInputError("ingest_to_shards: give at least one embedder (clip= and/or text=)")
    whisper = transcriber_spec(transcriber)
    root = Path(shards_dir)
    shards = ShardSet(root)
    _check_recorded_models(shards, [spec for spec in (clip_spec, text_spec) if spec is not None])
    report = ShardReport(str(root))
    sources, problems = list_sources(list(paths), include, exclude)
    report.failed.update(problems)
    plan, changed = extend_plan(load_plan(root), sources, files_per_shard)
    finished = set(shards.finished())
    report.redone = [name for name in changed if name in finished]
    for name in report.redone:  # before the plan that says so is saved: a kill in between redoes them anyway
        shutil.rmtree(root / name)
        finished.discard(name)
    save_plan(root, plan)
    shards.remove_debris()
    pending = [shard for shard in plan if shard.name not in finished]
    report.skipped = [shard.name for shard in plan if shard.name in finished]
    if not pending:
        return report
    settings = {"root": str(root), "clip": clip_spec, "text": text_spec, "transcriber": whisper, "ocr": ocr}
    settings.update(options=options or ExtractOptions(), workers=decode_threads)
    for row in _run_on_ray(
        pending, settings, address, actors, num_cpus_per_actor, num_gpus_per_actor, progress, ray_init
    ):
        report.written.append(str(row["name"]))
        report.records += int(row["records"])
        report.failed.update(json.loads(row["failed"]))
        report.skipped_files.update(json.loads(row["skipped"]))
    report.written.sort()
    return report


def _check_recorded_models(shards: ShardSet, specs: Sequence[ModelSpec]) -> None:
    manifest = shards.manifest(required=False)
    for spec in specs:
        recorded = (manifest or {}).get("spaces", {}).get(spec.space)
        if recorded is not None and recorded.get("model") != spec.spec:
            raise InvalidInputError(
                f"{shards.root}: space {spec.space!r} holds vectors of {recorded.get('model')}, not {spec.spec}:"
                " use another shard directory"
            )


def _run_on_ray(
    pending: Sequence[PlannedShard],
    settings: dict[str, Any],
    address: str | None,
    actors: int | None,
    num_cpus: float | None,
    num_gpus: float | None,
    progress: bool,
    ray_init: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Write `pending` shards on a Ray actor pool; the rows the actors return, one per shard."""
    ray = require("ray", "distributed ingestion")
    require("ray.data", "distributed ingestion")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, **{"log_to_driver": False, **(ray_init or {})})
    try:
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
        if num_gpus is None:
            num_gpus = 1.0 if gpus >= 1 else 0.0
        if num_cpus is None:
            num_cpus = 1.0 if cpus >= 4 else 0.5
        if actors is None:
            capacity = gpus / num_gpus if num_gpus else (cpus - 1) / num_cpus
            actors = max(1, min(len(pending), math.floor(capacity)))
        context = ray.data.DataContext.get_current()
        shown, context.enable_progress_bars = context.enable_progress_bars, progress
        rows = [{"name": shard.name, "files": _files_json(shard)} for shard in pending]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            ShardWorker,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            fn_constructor_kwargs={**settings, "device": "cuda" if num_gpus else "cpu"},
        )
        try:
            return list(dataset.iter_rows())
        finally:
            context.enable_progress_bars = shown
    finally:
        if started_here:
            ray.shutdown()


def _files_json(shard: PlannedShard) -> str:
    return json.dumps([[source.uri, source.size, source.mtime_ns] for source in shard.files])
