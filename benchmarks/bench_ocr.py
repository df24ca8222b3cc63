"""OCR engines compared: Tesseract (tesserocr) against RapidOCR (PP-OCRv4 ONNX) on the same labelled pictures.

Run from the repository root (needs the ``ocr`` extra and Tesseract's English data)::

    .venv/bin/python benchmarks/bench_ocr.py                 # seed 0's 38 pictures, best of 3 runs each (~2 min)
    .venv/bin/python benchmarks/bench_ocr.py --seeds 0,1,2 --repeats 2 --sweep   # the README's figures (~10 min)
    .venv/bin/python benchmarks/bench_ocr.py --repeats 1 --engines tesseract

The pictures come from ``tests/fixtures/ocrset.py`` (38 per seed, ``--seeds``): rendered text in DejaVu Sans,
Serif, Mono and Bold at 12-48 px, rotated, blurred, JPEG-compressed and "scanned" pages, invoice and dark-mode
dashboard screenshots, figures (a sign on a photo, a chart), and pictures without text. Each engine is loaded
and warmed up first (not timed), then ``engine.read(image)`` (the engine called directly) runs ``--repeats``
times per picture; the fastest run of each picture counts (other processes only ever add time) and the
median over a category's pictures is reported. Figures:

- *char acc*: 1 - CER, the Levenshtein distance between what was read and the ground truth (whitespace runs
  and line breaks collapsed to one space) over the ground truth's length, floored at 0; mean per picture.
- *word acc*: the same on words (1 - WER).
- *exact*: the share of codes and amounts (``PO-77812-B``, ``$1,284.50``, ``1.284,50 EUR``...) found
  character for character in the output.
- *false text*: the share of pictures without text for which the engine returned any text.
- *s / image*: median seconds of one ``read`` (1 thread); *CPU s*: the CPU seconds of the process in that
  call (what the call costs when other jobs share the cores); *4 threads*: pictures per second with 4 threads
  calling ``read`` at once, as ingestion does, and the ratio to 1 thread (the first seed's text pictures).

With ``--sweep`` each engine reads the pictures once more, unfiltered, and the filters of
``mm_rag.embed.ocr`` (line/box confidence, share of letters/digits, garbage lines, RapidOCR's space
probability) are replayed over a grid, printing text accuracy against false text: how the thresholds there were
chosen. Results go to ``benchmarks/results/ocr.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "tests"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from fixtures.ocrset import CATEGORIES, OcrSample, build_set, char_accuracy, flat, word_accuracy

from mm_rag.embed import ocr


def score(samples: list[OcrSample], texts: list[str]) -> dict[str, float | None]:
    """Accuracy figures of `texts` read from `samples` (one category or all)."""
    with_text = [(s, t) for s, t in zip(samples, texts) if s.text]
    without = [t for s, t in zip(samples, texts) if not s.text]
    exact = [code in flat(t) for s, t in with_text for code in s.exact]
    mean = statistics.fmean
    return {
        "char_acc": mean(char_accuracy(s.text, t) for s, t in with_text) if with_text else None,
        "word_acc": mean(word_accuracy(s.text, t) for s, t in with_text) if with_text else None,
        "exact": mean(exact) if exact else None,
        "exact_n": len(exact),
        "false_text": mean(bool(t) for t in without) if without else None,
    }


def run_engine(name: str, samples: list[OcrSample], repeats: int) -> dict[str, Any]:
    engine = ocr.load_ocr(name)
    engine.read(samples[0].image)  # warm-up: first-call allocations, ONNX Runtime's kernels
    texts, seconds, cpu_seconds, confidences = [], [], [], []
    for sample in samples:
        wall = cpu = float("inf")
        for _ in range(repeats):
            started, cpu_started = time.perf_counter(), time.process_time()
            result = engine.read(sample.image)
            wall, cpu = min(wall, time.perf_counter() - started), min(cpu, time.process_time() - cpu_started)
        texts.append(result.text)
        confidences.append(result.confidence)
        seconds.append(wall)
        cpu_seconds.append(cpu)
    return {
        "engine": engine,
        "texts": texts,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "confidences": confidences,
    }


def throughput(engine: ocr.OcrEngine, samples: list[OcrSample], threads: int) -> float:
    """Pictures per second with `threads` threads calling `engine.read` at once (each picture once)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda s: engine.read(s.image), samples))
    return len(samples) / (time.perf_counter() - started)


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_tables(samples: list[OcrSample], runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    names = list(runs)
    out: dict[str, Any] = {}
    print(
        "\n| category | images | engine | char acc | word acc | exact (codes, amounts) | false text | s / image | CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    groups = [(c, [i for i, s in enumerate(samples) if s.category == c]) for c in CATEGORIES]
    groups.append(("**all**", list(range(len(samples)))))
    for category, indexes in groups:
        if not indexes:
            continue
        for name in names:
            texts = [runs[name]["texts"][i] for i in indexes]
            figures = score([samples[i] for i in indexes], texts)
            figures["median_s"] = statistics.median(runs[name]["seconds"][i] for i in indexes)
            figures["median_cpu_s"] = statistics.median(runs[name]["cpu_seconds"][i] for i in indexes)
            out.setdefault(name, {})[category.strip("*")] = figures
            exact = f"{fmt(figures['exact'])} of {figures['exact_n']}" if figures["exact_n"] else "-"
            print(f"| {category} | {len(indexes)} | {name} | {fmt(figures['char_acc'])} | {fmt(figures['word_acc'])}"
                  f" | {exact} | {fmt(figures['false_text'])} | {figures['median_s']:.3f} | {figures['median_cpu_s']:.3f} |")  # fmt: skip
    return out


def filtered(units: list[Any], name: str, confidence: float | None = None, share: float | None = None,
             garbage: int | None = None) -> str:  # fmt: skip
    """The text `mm_rag.embed.ocr` keeps of an engine's unfiltered units, with its thresholds unless given."""
    confidence = ocr.MIN_CONFIDENCE[name] if confidence is None else confidence
    share = ocr.MIN_ALNUM_SHARE if share is None else share
    garbage = ocr.MAX_GARBAGE_LINE_ALNUM if garbage is None else garbage
    return ocr._finish(units, name, confidence, share, garbage).text


def sweep(samples: list[OcrSample], names: list[str]) -> dict[str, Any]:
    """Replay the filters over a grid on each engine's unfiltered units (read once per picture)."""
    results: dict[str, Any] = {}
    for name in names:
        engine = ocr.load_ocr(name)
        raw = [engine._read_lines(s.image) for s in samples]  # unfiltered, to replay the filters on
        rows = []
        default = ocr.MIN_CONFIDENCE[name]
        print(f"\n{name}, {len(samples)} pictures: minimum confidence of a line/box (the other filters on)")
        print("| min confidence | char acc | word acc | exact | false text |")
        print("|---|---|---|---|---|")
        for confidence in (0.0, 0.3, 0.5, 0.6, 0.65, 0.7, 0.8, 0.85, 0.9, 0.95):
            figures = score(samples, [filtered(units, name, confidence) for units in raw])
            rows.append({"min_confidence": confidence, **figures})
            mark = " (default)" if confidence == default else ""
            print(f"| {confidence}{mark} | {fmt(figures['char_acc'])} | {fmt(figures['word_acc'])}"
                  f" | {fmt(figures['exact'])} | {fmt(figures['false_text'])} |")  # fmt: skip
        print(f"\n{name}: the other filters, at min confidence {default} and at 0")
        print(
            "| min confidence | min alnum share | drop lines with <= N letters/digits | char acc | exact | false text |"
        )
        print("|---|---|---|---|---|---|")
        for confidence in (default, 0.0):
            for share, garbage in ((0.0, -1), (ocr.MIN_ALNUM_SHARE, -1), (0.0, ocr.MAX_GARBAGE_LINE_ALNUM),
                                   (ocr.MIN_ALNUM_SHARE, ocr.MAX_GARBAGE_LINE_ALNUM)):  # fmt: skip
                figures = score(samples, [filtered(units, name, confidence, share, garbage) for units in raw])
                rows.append({"min_confidence": confidence, "min_alnum_share": share, "garbage": garbage, **figures})
                print(f"| {confidence} | {share} | {garbage if garbage >= 0 else 'off'} | {fmt(figures['char_acc'])}"
                      f" | {fmt(figures['exact'])} | {fmt(figures['false_text'])} |")  # fmt: skip
        results[name] = rows
        if name == "rapidocr":
            results["rapidocr_spaces"] = sweep_spaces(engine, samples)
    return results


def sweep_spaces(engine: Any, samples: list[OcrSample]) -> list[dict[str, Any]]:
    """RapidOCR's space restoration: word accuracy as the space-probability threshold varies (1.0: off)."""
    texts_only = [s for s in samples if s.text]
    outputs = [engine._outputs(s.image) for s in texts_only]  # recogniser probabilities, computed once
    rows = []
    print("\nrapidocr: space probability threshold (1.0 = the model's own spaces only)")
    print("| threshold | char acc | word acc | exact |")
    print("|---|---|---|---|")
    for threshold in (1.0, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005):
        texts = []
        for out in outputs:
            texts.append(filtered([[engine._word(probs, corners, threshold)] for probs, corners in out], engine.name))
        figures = score(texts_only, texts)
        rows.append({"threshold": threshold, **figures})
        print(f"| {threshold} | {fmt(figures['char_acc'])} | {fmt(figures['word_acc'])} | {fmt(figures['exact'])} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default=",".join(ocr.ENGINES), help="comma-separated engine names")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the test sets read (38 pictures each)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per picture; the fastest counts")
    parser.add_argument("--threads", type=int, default=4, help="caller threads for the throughput figure (0: skip)")
    parser.add_argument("--sweep", action="store_true", help="also replay the filters over a grid of thresholds")
    parser.add_argument("--verbose", action="store_true", help="print every picture's text")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ocr.json")
    args = parser.parse_args(argv)
    names = args.engines.split(",")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    samples = [sample for seed in seeds for sample in build_set(seed)]
    load_start = os.getloadavg()
    print(f"{len(samples)} pictures (seeds {args.seeds}), engines {', '.join(names)}, {os.cpu_count()} cores, "
          f"best of {args.repeats} runs per picture; load average {load_start[0]:.1f}")  # fmt: skip
    runs = {}
    for name in names:
        started = time.perf_counter()
        runs[name] = run_engine(name, samples, args.repeats)
        print(f"  {name}: {time.perf_counter() - started:.1f}s", flush=True)
        if args.verbose:
            for sample, text in zip(samples, runs[name]["texts"]):
                print(f"    {sample.name}: {text!r}")
    figures = print_tables(samples, runs)
    speed: dict[str, Any] = {}
    if args.threads:
        text_samples = [s for s in build_set(seeds[0]) if s.text]
        print(f"\n| engine | 1 thread | {args.threads} threads | speed-up | s / image vs {names[0]} |")
        print("|---|---|---|---|---|")
        base = figures[names[0]]["all"]["median_s"]
        for name in names:
            one = throughput(runs[name]["engine"], text_samples, 1)
            many = throughput(runs[name]["engine"], text_samples, args.threads)
            speed[name] = {"images_per_s_1": one, f"images_per_s_{args.threads}": many}
            ratio = figures[name]["all"]["median_s"] / base
            print(f"| {name} | {one:.2f} images/s | {many:.2f} images/s | {many / one:.2f}x | {ratio:.2f}x |")
    results = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "python": platform.python_version()},
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "settings": {"seeds": seeds, "repeats": args.repeats, "default_engine": ocr.DEFAULT_ENGINE},
        "figures": figures,
        "throughput": speed,
        "pictures": {
            name: [
                {"name": s.name, "text": t, "confidence": c, "seconds": sec, "cpu_seconds": cpu}
                for s, t, c, sec, cpu in zip(
                    samples, run["texts"], run["confidences"], run["seconds"], run["cpu_seconds"]
                )
            ]
            for name, run in runs.items()
        },
    }
    if args.sweep:
        results["sweep"] = sweep(samples, names)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
