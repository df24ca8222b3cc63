"""No invented words: recordings without speech give no transcript, short and music-covered speech is kept.

Real models (Whisper tiny.en on both backends, Silero VAD from faster-whisper) on the generated set of
``fixtures/nonspeech.py``; the measurements behind the thresholds are in ``benchmarks/bench_no_speech.py``.
"""

from __future__ import annotations

import importlib
import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures.nonspeech import RATE, Clip, words, write_clip_set
from typer.testing import CliRunner

from mm_rag import MultimodalStore, TextEmbedder, ingest
from mm_rag.cli import app
from mm_rag.embed.audio import load_audio
from mm_rag.embed.vad import Stitched, speech_regions
from mm_rag.embed.whisper import WhisperTranscriber

TIMING_SLACK = 1.0  # seconds: a segment's start/end against where its words are audible
BACKENDS = ["faster", "openai"]


def recall(expected: str, heard: str) -> float:
    """The share of the expected words that were heard."""
    return len(words(expected) & words(heard)) / len(words(expected))


def of_kind(clips: dict[str, Clip], kind: str) -> list[Clip]:
    return [clip for clip in clips.values() if clip.kind == kind]


@pytest.fixture(scope="module")
def clip_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    """The generated set (see `fixtures.nonspeech`) by clip name, written once for this module."""
    return {clip.name: clip for clip in write_clip_set(tmp_path_factory.mktemp("nonspeech"))}


@pytest.fixture(scope="module")
def transcribers(whisper_ct2_dir: Path, whisper_openai_checkpoint: Path) -> dict[str, WhisperTranscriber]:
    """One transcriber per backend on the same tiny.en weights, default settings (VAD on) but a greedy decoder:
    the gates do not depend on the beam, and beam 5 triples the runtime (the benchmark measures beam 5)."""
    importlib.import_module("faster_whisper")
    importlib.import_module("whisper")
    return {
        "faster": WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu", language="en", beam_size=1),
        "openai": WhisperTranscriber(
            whisper_openai_checkpoint, backend="openai", device="cpu", language="en", beam_size=1
        ),
    }


@pytest.fixture(scope="module")
def heard(transcribers, clip_set) -> dict[tuple[str, str], object]:
    """(backend, clip name) → transcript, each clip transcribed once per backend."""
    return {
        (backend, name): t.transcribe(clip.path)
        for backend, t in transcribers.items()
        for name, clip in clip_set.items()
    }


# --------------------------------------------------------------------------------------------------------------
# the VAD and the timeline (no Whisper)
# --------------------------------------------------------------------------------------------------------------
def test_stitched_times_map_back_onto_the_original_timeline() -> None:
    audio = np.arange(10 * RATE, dtype=np.float32)
    stitched = Stitched.cut(audio, [(1 * RATE, 3 * RATE), (6 * RATE, 7 * RATE)])
    assert len(stitched.audio) == 3 * RATE and stitched.audio[0] == RATE and stitched.audio[2 * RATE] == 6 * RATE
    assert stitched.original_time(0.5) == pytest.approx(1.5)
    assert stitched.original_time(2.0) == pytest.approx(6.0)  # a start on the seam opens the second region
    assert stitched.original_time(2.0, is_end=True) == pytest.approx(3.0)  # an end on it closes the first
    assert stitched.original_time(2.5, is_end=True) == pytest.approx(6.5)
    assert stitched.original_time(30.0, is_end=True) == pytest.approx(7.0)  # past the end: the last region's end
    assert Stitched.cut(audio, []).audio.size == 0


def test_the_vad_hears_speech_only_where_it_is(clip_set) -> None:
    for clip in clip_set.values():
        regions = speech_regions(load_audio(clip.path))
        if clip.kind == "nonspeech":
            assert regions == [], clip.name
            continue
        assert regions, clip.name
        first, last = clip.speech
        assert regions[0][0] / RATE <= first and regions[-1][1] / RATE >= last, (clip.name, regions, clip.speech)
        assert all(b[0] > a[1] for a, b in itertools.pairwise(regions)), regions  # sorted and disjoint


# --------------------------------------------------------------------------------------------------------------
# both backends, real models
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_nonspeech_recording_gives_segments(heard, clip_set, backend: str) -> None:
    nonspeech = of_kind(clip_set, "nonspeech")
    assert len(nonspeech) >= 15
    invented = {clip.name: heard[backend, clip.name].text for clip in nonspeech if heard[backend, clip.name].segments}
    assert invented == {}
    for clip in nonspeech:
        assert heard[backend, clip.name].duration == pytest.approx(len(load_audio(clip.path)) / RATE)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_short_spoken_clip_is_transcribed(heard, clip_set, backend: str) -> None:
    short = of_kind(clip_set, "speech")
    right = 0
    for clip in short:
        transcript = heard[backend, clip.name]
        assert words(transcript.text), clip.name  # one word of about a second is still heard
        first, last = clip.speech
        assert abs(transcript.segments[0].start - first) <= TIMING_SLACK, (clip.name, transcript.segments)
        assert abs(transcript.segments[-1].end - last) <= TIMING_SLACK, (clip.name, transcript.segments)
        right += recall(clip.text, transcript.text) >= 0.5
    # tiny.en mishears a few of espeak's voices ("Thanks." as "Onyx."), with or without the VAD
    assert right >= len(short) - 2, [heard[backend, clip.name].text for clip in short]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_speech_over_music_or_noise_is_kept(heard, clip_set, backend: str) -> None:
    mixed = of_kind(clip_set, "mixed")
    for clip in mixed:
        assert words(heard[backend, clip.name].text), clip.name
    right = sum(recall(clip.text, heard[backend, clip.name].text) >= 0.5 for clip in mixed)
    # "The meeting starts at nine." under the band comes out as "…start to set in" with or without the VAD
    assert right >= len(mixed) - 1, [heard[backend, clip.name].text for clip in mixed]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_speech_after_a_long_lead_keeps_its_time(heard, clip_set, backend: str) -> None:
    for name in ("late-after-silence", "late-after-band"):
        clip = clip_set[name]
        transcript = heard[backend, name]
        first, last = clip.speech
        assert first >= 9.0  # the lead the VAD cuts out is long
        (segment,) = [s for s in transcript.segments if recall(clip.text, s.text) >= 0.5]
        assert abs(segment.start - first) <= TIMING_SLACK and abs(segment.end - last) <= TIMING_SLACK, segment
        assert segment.end <= transcript.duration


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_vad_off_transcribes_the_whole_file_as_whisper_alone(transcribers, clip_set, backend, monkeypatch) -> None:
    gated = transcribers[backend]
    plain = WhisperTranscriber(gated.model, backend=backend, device="cpu", language="en", beam_size=1, vad=False)
    clip = clip_set["late-after-silence"]
    audio = load_audio(clip.path)
    seen: list[int] = []
    run = f"_run_{backend}"
    original = getattr(WhisperTranscriber, run)
    monkeypatch.setattr(
        WhisperTranscriber, run, lambda self, samples: seen.append(len(samples)) or original(self, samples)
    )
    monkeypatch.setattr("mm_rag.embed.whisper.speech_regions", lambda audio: pytest.fail("the VAD ran with vad=False"))
    transcript = plain.transcribe(clip.path)
    assert seen == [len(audio)]  # the model had the whole file, silence included
    # no content check: after 12 s of silence Whisper alone often falls back to sampling (temperature > 0),
    # so its words vary from run to run; the times stay on the file's timeline
    assert all(0 <= s.start <= s.end <= transcript.duration for s in transcript.segments), transcript.segments
    monkeypatch.undo()
    monkeypatch.setattr(
        WhisperTranscriber, run, lambda self, samples: seen.append(len(samples)) or original(self, samples)
    )
    gated.transcribe(clip.path)
    assert seen[1] < len(audio) / 3  # with the VAD: only the sentence and its padding


# --------------------------------------------------------------------------------------------------------------
# through ingestion
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ingest_reports_nonspeech_files_and_stores_only_speech(tmp_path, clip_set, minilm_dir, whisper_ct2_dir) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    spoken = ["sentence-door-us", "mix-band-5db"]
    silent = ["chime", "band", "noise-pink", "hum-50hz"]  # each gave words or "." without the VAD
    for name in spoken + silent:
        shutil.copyfile(clip_set[name].path, folder / f"{name}.wav")
    transcriber = WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu", language="en", beam_size=1)
    store = MultimodalStore(tmp_path / "store")
    try:
        report = ingest(folder, store, text=TextEmbedder(minilm_dir, device="cpu"), transcriber=transcriber)
        records = store.find()
    finally:
        store.close()
    assert {Path(path).stem: reason for path, reason in report.skipped.items()} == dict.fromkeys(
        silent, "no speech found"
    )
    assert sorted(Path(path).stem for path in report.added) == sorted(spoken) and report.failed == {}
    by_file: dict[str, str] = {}
    for record in records:  # only the spoken files are stored, with their words
        by_file[Path(record.doc_id).stem] = by_file.get(Path(record.doc_id).stem, "") + " " + record.text
    assert sorted(by_file) == sorted(spoken)
    for name in spoken:
        assert recall(clip_set[name].text, by_file[name]) >= 0.5, by_file[name]
    # the command line prints the same reason for each file
    result = CliRunner().invoke(
        app,
        ["ingest", str(folder), "--store", str(tmp_path / "cli-store"), "--no-clip", "--no-ocr",
         "--text-model", str(minilm_dir), "--whisper-model", str(whisper_ct2_dir), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 added" in result.output and "4 skipped" in result.output, result.output
    for name in silent:
        assert f"skipped: {folder / name}.wav: no speech found" in result.output
