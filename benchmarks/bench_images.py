"""Image ingestion throughput on CPU: `OpenCLIPEmbedder.embed_images` against the model alone and per-item loops.

Run from the repository root::

    .venv/bin/python benchmarks/bench_images.py              # 512 JPEGs of 640x480, tiny model and ViT-B-32
    .venv/bin/python benchmarks/bench_images.py --quick      # 128 JPEGs
    .venv/bin/python benchmarks/bench_images.py --models ViT-B-32 --images 256 --batch-size 32

For each model (random weights: throughput does not depend on them) and the same folder of generated JPEGs:

(a) ``forward``: the model's own batched ``encode_image`` on already decoded and preprocessed tensors, same
    batch size: the ceiling for anything that also has to decode.
(b) ``embed_images``: ``OpenCLIPEmbedder.embed_images(paths)``: decode + preprocess on worker threads one batch
    ahead of the model, then encode and normalise. Target: (b)/(a) >= 0.9.
(c) ``LangChain``: ``langchain_experimental.open_clip.OpenCLIPEmbeddings.embed_image`` when installed, otherwise
    a faithful copy of its loop: open every image, then per image preprocess, ``encode_image`` on a batch of one
    *without* ``torch.no_grad``, normalise, ``tolist``. Target: (b)/(c) >= 2.
(d) ``LlamaIndex``: the per-image loop of LlamaIndex's ``ClipEmbedding._get_image_embedding``: inside
    ``torch.no_grad`` open, preprocess, ``encode_image`` on a batch of one, ``tolist``. Target: (b)/(d) >= 2.
(e) ``ingest``: the whole `mm_rag.ingest` pipeline into a fresh temporary store: hash, sniff, decode on worker
    threads, embed in batches, write records and vectors. (e)/(a) is ingestion's share of the model's speed.

All five share one loaded model and run ``--repeats`` times, interleaved; each keeps its best run, so a
neighbour's burst of CPU use skews no ratio. ``cos(b,d)`` is the smallest cosine between the vectors of (b)
and (d): the same embeddings, up to JPEG draft decoding. Results go to ``benchmarks/results/images.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
import torch
from PIL import Image, ImageDraw

from mm_rag import MultimodalStore, ingest
from mm_rag.embed.clip import OpenCLIPEmbedder
from mm_rag.embed.media import load_image

sys.path.insert(0, str(ROOT / "tests"))
from fixtures.tiny_clip import CONFIG as TINY_CONFIG  # the test suite's tiny model; random weights here


def make_jpegs(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """Photo-like JPEGs (smooth colour fields, shapes, sensor-like noise; ~60-90 KB each), made once and reused."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"image-{index:05d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            r = int(rng.integers(20, 120))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x - r, y - r, x + r, y + r), fill=fill)
        noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 6, size=(height, width, 3)).astype(np.int16)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
    return paths


def bench_model(name: str, model_arg: str, paths: list[Path], batch_size: int, repeats: int) -> dict[str, Any]:
    """Time (a)-(d) `repeats` times, interleaved, and keep each one's best (least disturbed) run."""
    embedder = OpenCLIPEmbedder(model_arg, None, device="cpu", batch_size=batch_size)
    model, preprocess = embedder._loaded()[:2]  # the model embed_images uses, shared by every loop below
    count = len(paths)
    embedder.embed_images(paths[:batch_size])  # warm-up: model load, thread pool, allocator
    pixels = [preprocess(load_image(path)) for path in paths]
    batches = [torch.stack(pixels[i : i + batch_size]) for i in range(0, count, batch_size)]
    del pixels

    def forward() -> None:  # (a) the model alone on preprocessed tensors, batched like embed_images
        with torch.inference_mode():
            for batch in batches:
                model.encode_image(batch)

    outputs: dict[str, Any] = {}
    runs: dict[str, Callable[[], Any]] = {
        "forward": forward,
        "embed_images": lambda: embedder.embed_images(paths),
        "langchain": lambda: langchain_embed_image(model, preprocess, [str(p) for p in paths]),
        "llama_index": lambda: llama_index_loop(model, preprocess, paths),
        "ingest": lambda: ingest_into_new_store(embedder, paths, batch_size),
    }
    kind = "reimplemented"
    try:
        from langchain_experimental.open_clip import OpenCLIPEmbeddings
    except ImportError:
        pass
    else:
        lc = OpenCLIPEmbeddings.model_construct(model=model, preprocess=preprocess, tokenizer=None)
        runs["langchain"], kind = (lambda: lc.embed_image([str(p) for p in paths])), "langchain_experimental"
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for key, run in runs.items():
            started = time.perf_counter()
            outputs[key] = run()
            best[key] = min(best[key], time.perf_counter() - started)
    # The same vectors? JPEGs decode at reduced DCT scale in embed_images, so "close", not "equal".
    ours, theirs = np.asarray(outputs["embed_images"]), np.asarray(outputs["llama_index"], dtype=np.float32)
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    return {
        "model": name,
        "images": count,
        "batch_size": batch_size,
        "repeats": repeats,
        "parameters": sum(p.numel() for p in model.parameters()),
        "forward_s": best["forward"],
        "embed_images_s": best["embed_images"],
        "langchain_s": best["langchain"],
        "langchain_kind": kind,
        "llama_index_s": best["llama_index"],
        "b_over_a": best["forward"] / best["embed_images"],
        "b_over_c": best["langchain"] / best["embed_images"],
        "b_over_d": best["llama_index"] / best["embed_images"],
        "ingest_s": best["ingest"],
        "e_over_a": best["forward"] / best["ingest"],
        "min_cosine_b_vs_d": float((ours * theirs).sum(axis=1).min()),
    }


def ingest_into_new_store(embedder: OpenCLIPEmbedder, paths: list[Path], batch_size: int) -> int:
    store = MultimodalStore()
    try:
        report = ingest(paths, store, clip=embedder, batch_size=batch_size)
        if report.failed or len(report.added) != len(paths):
            raise RuntimeError(f"ingest did not store every image: {report.summary()}")
        return store.count()
    finally:
        store.close()


def langchain_embed_image(model: Any, preprocess: Any, uris: list[str]) -> list[list[float]]:
    """langchain_experimental's ``OpenCLIPEmbeddings.embed_image``, step for step (no torch.no_grad there)."""
    pil_images = [Image.open(uri) for uri in uris]
    image_features = []
    for pil_image in pil_images:
        preprocessed_image = preprocess(pil_image).unsqueeze(0)
        embeddings_tensor = model.encode_image(preprocessed_image)
        norm = embeddings_tensor.norm(p=2, dim=1, keepdim=True)
        normalized_embeddings_tensor = embeddings_tensor.div(norm)
        image_features.append(normalized_embeddings_tensor.squeeze(0).tolist())
    return image_features


def llama_index_loop(model: Any, preprocess: Any, paths: list[Path]) -> list[list[float]]:
    """LlamaIndex ``ClipEmbedding._get_image_embeddings``: ``_get_image_embedding`` once per image."""

    def get_image_embedding(img_file_path: Path) -> list[float]:
        with torch.no_grad():
            image = preprocess(Image.open(img_file_path)).unsqueeze(0).to("cpu")
            return model.encode_image(image).tolist()[0]

    return [get_image_embedding(path) for path in paths]


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'model':<10} {'images':>6} {'(a) forward':>13} {'(b) embed_images':>17} {'b/a':>5}"
        f" {'(c) LangChain':>14} {'b/c':>5} {'(d) LlamaIndex':>15} {'b/d':>5} {'cos(b,d)':>9}"
        f" {'(e) ingest':>12} {'e/a':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        keys = ("forward_s", "embed_images_s", "langchain_s", "llama_index_s", "ingest_s")
        rate = {key: r["images"] / r[key] for key in keys}
        print(
            f"{r['model']:<10} {r['images']:>6} {rate['forward_s']:>9.1f} im/s {rate['embed_images_s']:>13.1f} im/s"
            f" {r['b_over_a']:>5.2f} {rate['langchain_s']:>10.1f} im/s {r['b_over_c']:>5.2f}"
            f" {rate['llama_index_s']:>11.1f} im/s {r['b_over_d']:>5.2f} {r['min_cosine_b_vs_d']:>9.4f}"
            f" {rate['ingest_s']:>8.1f} im/s {r['e_over_a']:>5.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None, help="JPEGs to embed (default 512; 128 with --quick)")
    parser.add_argument("--size", default="640x480", help="JPEG size WIDTHxHEIGHT")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default="tiny,ViT-B-32", help="comma-separated: tiny and/or open_clip names")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, interleaved; the best is kept")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--folder", type=Path, default=None, help="where the JPEGs are cached")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "images.json")
    args = parser.parse_args(argv)
    count = args.images or (128 if args.quick else 512)
    width, height = (int(v) for v in args.size.lower().split("x"))
    folder = args.folder or Path.home() / ".cache" / "mm-rag-bench" / f"jpeg-{width}x{height}"
    started = time.perf_counter()
    paths = make_jpegs(folder, count, width, height)
    print(f"{count} JPEGs of {width}x{height} in {folder} ({time.perf_counter() - started:.1f}s to make/check)")
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            model_arg = name
            if name == "tiny":
                model_arg = str(Path(scratch) / "mm-rag-tiny-clip.json")
                Path(model_arg).write_text(json.dumps(TINY_CONFIG))
            rows.append(bench_model(name, model_arg, paths, args.batch_size, args.repeats))
            print(f"  {name}: done", flush=True)
    print()
    print_table(rows)
    results = {
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "jpeg": {"count": count, "width": width, "height": height},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nload average {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
