"""Voice-activity detection: where in a recording someone speaks, so Whisper hears only that.

Whisper decodes whatever it is given, and on music, alert sounds or noise it invents the phrases it saw most
in training ("Thank you very much.", "You"); those become search hits. Silero VAD (the ONNX model shipped inside
the faster-whisper wheel, run by onnxruntime) scores every 32-ms frame for speech. `speech_regions` turns the
scores into sample ranges, `Stitched` cuts them out and joins them for the model, and maps the model's
timestamps back onto the original timeline.

The thresholds below were chosen on the set in ``tests/fixtures/nonspeech.py`` (16 non-speech recordings:
silence, hum, noises, clicks, tones, sweeps, alerts, chimes, chords, melody, a band; 8 one-word and one-sentence
clips in several voices; 7 sentences over music or noise): see ``benchmarks/bench_no_speech.py`` and the
"No invented words" section of ``benchmarks/README.md``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from mm_rag._optional import require
from mm_rag.embed.audio import SAMPLE_RATE

__all__ = ["SPEECH_THRESHOLD", "Stitched", "speech_regions"]

# A frame is speech when Silero's probability reaches this. Measured: every non-speech recording of the set peaks
# below 0.49 (a sweep; most stay under 0.15), every speech clip, also 0 dB under music, reaches 0.95 and more.
# 0.5 is Silero's own default and sits in that gap with room on both sides.
SPEECH_THRESHOLD = 0.5
# Speech shorter than this is dropped: a 250-ms burst is shorter than any word in the set (the shortest, "Yes.",
# is audible for ~0.38 s) and longer than the clicks and beeps that briefly score as speech.
MIN_SPEECH_MS = 250
# Stretches without speech shorter than this stay in, between regions and at both ends of the file: a talk then
# reaches Whisper exactly as recorded, and only long ones (a music intro or interlude, an alert between talks)
# are cut. Whisper tiny is that sensitive: on examples/media's meeting, cutting its 1.4-s pauses to 0.6 s, or
# only its first 0.2 s, turned "The Fireworks Start at 10 … 4000 euros" into "The firework star test at 10 …
# 4,000 euros".
MIN_SILENCE_MS = 3000
# Each region is widened by this on both sides: Silero's onsets lag the first soft consonant (a 'th', an 's')
# by one or two frames, and Whisper needs a little context around the words.
SPEECH_PAD_MS = 300


def speech_regions(
    audio: np.ndarray,
    *,
    threshold: float = SPEECH_THRESHOLD,
    min_speech_ms: int = MIN_SPEECH_MS,
    min_silence_ms: int = MIN_SILENCE_MS,
    pad_ms: int = SPEECH_PAD_MS,
) -> list[tuple[int, int]]:
    """Where `audio` (16-kHz mono float32) holds speech: sorted, disjoint ``(start, end)`` sample ranges.

    An empty list means no speech at all.

    Raises:
        MissingDependencyError: faster-whisper (which ships the Silero model) or onnxruntime is missing.
    """
    vad = require("faster_whisper.vad", "voice-activity detection (Silero VAD in faster-whisper)")
    require("onnxruntime", "voice-activity detection (Silero VAD in faster-whisper)")
    if audio.size == 0:
        return []
    options = vad.VadOptions(
        threshold=threshold,
        min_speech_duration_ms=min_speech_ms,
        min_silence_duration_ms=min_silence_ms,
        speech_pad_ms=pad_ms,
    )
    found = vad.get_speech_timestamps(np.ascontiguousarray(audio, dtype=np.float32), options, SAMPLE_RATE)
    regions: list[tuple[int, int]] = []
    for item in found:  # padding may make neighbours touch: merge them so the map stays one-to-one
        start, end = int(item["start"]), min(int(item["end"]), len(audio))
        if regions and start <= regions[-1][1]:
            regions[-1] = (regions[-1][0], max(end, regions[-1][1]))
        elif end > start:
            regions.append((start, end))
    if regions:  # a short lead-in or tail is part of the talk, like a short pause (see MIN_SILENCE_MS)
        edge = min_silence_ms * SAMPLE_RATE // 1000
        if regions[0][0] < edge:
            regions[0] = (0, regions[0][1])
        if len(audio) - regions[-1][1] < edge:
            regions[-1] = (regions[-1][0], len(audio))
    return regions


@dataclass(frozen=True)
class Stitched:
    """The speech regions of a recording joined end to end, and the way back to the recording's timeline.

    Attributes:
        audio: The regions' samples, concatenated (what the model transcribes).
        regions: The ``(start, end)`` sample ranges in the original recording, in order.
    """

    audio: np.ndarray
    regions: tuple[tuple[int, int], ...]

    @classmethod
    def cut(cls, audio: np.ndarray, regions: list[tuple[int, int]]) -> Stitched:
        """Join `regions` of `audio` (from `speech_regions`)."""
        joined = np.concatenate([audio[start:end] for start, end in regions]) if regions else audio[:0]
        return cls(np.ascontiguousarray(joined, dtype=np.float32), tuple(regions))

    def original_time(self, seconds: float, *, is_end: bool = False) -> float:
        """A time in the stitched audio, in seconds, as the same instant of the original recording.

        A time exactly on a seam belongs to the region before it when it ends something (`is_end`), to the one
        after it when it starts something, so a segment never stretches over the silence cut out between them.
        """
        if not self.regions:
            return seconds
        ends = np.cumsum([end - start for start, end in self.regions])
        sample = seconds * SAMPLE_RATE
        index = (bisect.bisect_left if is_end else bisect.bisect_right)(ends.tolist(), sample)
        index = min(index, len(self.regions) - 1)
        before = float(ends[index - 1]) if index else 0.0
        start, end = self.regions[index]
        return min(start + (sample - before), end) / SAMPLE_RATE
