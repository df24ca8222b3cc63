"""Whisper transcription (openai-whisper and faster-whisper on the same tiny.en weights), transcript windows,
transcript records, and retrieval of the right window with a real text embedder."""

from __future__ import annotations

import importlib
import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from mm_rag.embed.audio import load_audio
from mm_rag.embed.media import MediaError
from mm_rag.embed.transcript import Segment, Transcriber, Transcript, transcript_records, transcript_windows
from mm_rag.embed.whisper import WhisperTranscriber, load_openai_checkpoint
from mm_rag.errors import InvalidInputError
from mm_rag.records import encode_record, make_id

TIMING_SLACK = 1.0  # seconds: segment start/end against where each sentence is audible


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def overlap(expected: str, heard: str) -> float:
    """The share of the expected words that were heard."""
    return len(words(expected) & words(heard)) / len(words(expected))


def seg(start: float, end: float, text: str, confidence: float = 0.5) -> Segment:
    return Segment(start, end, text, confidence)


# --------------------------------------------------------------------------------------------------------------
# windows and records (no model)
# --------------------------------------------------------------------------------------------------------------
def test_windows_cover_every_segment_within_limits_and_overlap() -> None:
    segments = [seg(2.0 * i, 2.0 * i + 1.8, f"segment number {i}", confidence=0.1 * (i % 10)) for i in range(40)]
    windows = transcript_windows(segments, window_seconds=10.0, overlap_seconds=3.0)
    covered = sorted({index for window in windows for index in window.segments})
    assert covered == list(range(40))
    for before, after in itertools.pairwise(windows):
        assert after.start > before.start
        assert before.end - after.start >= 1.8 - 1e-9  # the last segment(s) of each window come again
        assert set(before.segments) & set(after.segments)
    for window in windows:
        assert window.end - window.start <= 10.0
        assert window.segments == tuple(range(window.segments[0], window.segments[-1] + 1))
        assert window.text == " ".join(segments[i].text for i in window.segments)
        assert window.start == segments[window.segments[0]].start and window.end == segments[window.segments[-1]].end
        assert isinstance(window.start, float) and isinstance(window.end, float)
        assert 0.0 <= window.confidence <= 1.0
    # by time alone (no sentence limit): 10-s windows of five 2-s segments
    assert len(transcript_windows(segments, window_seconds=10.0, overlap_seconds=0.0, max_sentences=None)) == 8


def test_windows_respect_max_chars_and_keep_long_segments_whole() -> None:
    segments = [seg(0, 1, "a" * 30), seg(1, 2, "b" * 30), seg(2, 3, "c" * 500), seg(3, 4, "d" * 10)]
    windows = transcript_windows(segments, window_seconds=60, overlap_seconds=0, max_chars=70)
    assert [window.segments for window in windows] == [(0, 1), (2,), (3,)]
    assert transcript_windows([]) == []
    single = transcript_windows([seg(5.0, 95.0, "a long monologue")], window_seconds=30)
    assert [(w.start, w.end, w.segments) for w in single] == [(5.0, 95.0, (0,))]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window_seconds": 0}, "window_seconds"),
        ({"window_seconds": float("nan")}, "window_seconds"),
        ({"window_seconds": 10, "overlap_seconds": 10}, "overlap_seconds"),
        ({"overlap_seconds": -1}, "overlap_seconds"),
        ({"max_chars": 0}, "max_chars"),
    ],
)
def test_window_arguments_are_checked(options: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        transcript_windows([seg(0, 1, "x")], **options)


def test_records_are_stable_storable_and_carry_the_time_range() -> None:
    segments = [seg(0.0, 4.0, "hello there"), seg(4.5, 9.0, "general kenobi", 0.9), seg(9.5, 12.25, "bye")]
    windows = transcript_windows(segments, window_seconds=5, overlap_seconds=0)
    records = transcript_records(
        windows, content_hash="abc123", doc_id="/media/talk.mp4", uri="/media/talk.mp4", modality="video",
        language="en", metadata={"speaker": "obi-wan", "start": "ignored"},
    )  # fmt: skip
    assert [r.text for r in records] == ["hello there", "general kenobi", "bye"]
    assert records[1].id == make_id("abc123", "t=4.50-9.00")
    assert records == transcript_records(
        windows, content_hash="abc123", doc_id="/media/talk.mp4", uri="/media/talk.mp4", modality="video",
        language="en", metadata={"speaker": "obi-wan", "start": "ignored"},
    )  # fmt: skip
    assert len({r.id for r in records}) == 3
    for record, window in zip(records, windows):
        assert record.modality == "video" and record.doc_id == "/media/talk.mp4" and record.content_hash == "abc123"
        assert record.metadata["start"] == window.start and record.metadata["end"] == window.end
        assert isinstance(record.metadata["start"], float) and isinstance(record.metadata["end"], float)
        assert record.metadata["language"] == "en" and record.metadata["speaker"] == "obi-wan"
        assert 0 <= record.metadata["confidence"] <= 1
        encode_record(record)  # the store accepts it
    duplicated = transcript_records([windows[0], windows[0]], content_hash="abc123")
    assert duplicated[0].id != duplicated[1].id
    with pytest.raises(InvalidInputError, match="'audio' or 'video'"):
        transcript_records(windows, content_hash="x", modality="image")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------------
# transcriber set-up, silence and bad input (no model is loaded)
# --------------------------------------------------------------------------------------------------------------
def test_backend_follows_the_model_path(whisper_ct2_dir: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not loaded yet")
    assert WhisperTranscriber(whisper_ct2_dir).backend == "faster"
    assert WhisperTranscriber(checkpoint).backend == "openai"
    assert WhisperTranscriber("tiny.en").backend == "faster"  # faster-whisper is installed: the fastest
    assert WhisperTranscriber("tiny.en", backend="openai").backend == "openai"
    assert isinstance(WhisperTranscriber("tiny.en"), Transcriber)


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        ("tiny.en", {"backend": "tensorflow"}, "unknown Whisper backend"),
        ("tiny.en", {"beam_size": 0}, "beam_size"),
        ("/no/such/model.pt", {}, "does not exist"),
        ("CT2", {"backend": "openai"}, "needs a checkpoint file"),
        ("FILE", {"backend": "faster"}, "CTranslate2 model directory"),
        ("tiny.en", {"backend": "openai", "compute_type": "int8"}, "not available with openai-whisper"),
    ],
)
def test_bad_settings_are_refused_up_front(whisper_ct2_dir: Path, tmp_path: Path, model, options, message) -> None:
    (tmp_path / "model.pt").write_bytes(b"x")
    model = {"CT2": whisper_ct2_dir, "FILE": tmp_path / "model.pt"}.get(model, model)
    with pytest.raises(InvalidInputError, match=message):
        WhisperTranscriber(model, **options)


def test_unknown_model_names_fail_clearly_when_loading(tmp_path: Path) -> None:
    # vad=False: a steady tone holds no speech, and with the VAD no model would ever be loaded
    with pytest.raises(InvalidInputError, match="unknown openai-whisper model 'tiny.xx'"):
        WhisperTranscriber("tiny.xx", backend="openai", vad=False).transcribe(np.ones(16_000, dtype=np.float32) * 0.1)
    with pytest.raises(InvalidInputError, match="cannot load faster-whisper model 'tiny.xx'") as caught:
        WhisperTranscriber("tiny.xx", backend="faster", vad=False).transcribe(np.ones(16_000, dtype=np.float32) * 0.1)
    assert caught.value.__cause__ is not None


def test_silence_gives_no_segments_without_a_model(silent_wav: Path) -> None:
    transcriber = WhisperTranscriber("no-such-model-is-ever-loaded", backend="faster", language="en")
    transcript = transcriber.transcribe(silent_wav)
    assert transcript == Transcript([], "en", 4.0)
    assert transcriber.transcribe(np.zeros(0, dtype=np.float32)).segments == []


def test_bad_audio_raises_media_error_naming_the_file(tmp_path: Path) -> None:
    transcriber = WhisperTranscriber("no-such-model-is-ever-loaded", backend="faster")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "noise.mp3").write_bytes(np.random.default_rng(3).bytes(4000))
    for name in ("empty.wav", "noise.mp3", "missing.wav"):
        with pytest.raises(MediaError, match=re.escape(str(tmp_path / name))):
            transcriber.transcribe(tmp_path / name)
    with pytest.raises(InvalidInputError, match="1-D mono"):
        transcriber.transcribe(np.zeros((2, 100), dtype=np.float32))


def test_segments_are_trimmed_to_the_sound_inside_them() -> None:
    from mm_rag.embed.whisper import _trim_to_sound

    rate = 16_000
    audio = np.zeros(10 * rate, dtype=np.float32)
    audio[1 * rate : 4 * rate] = 0.5 * np.sin(np.arange(3 * rate) * 0.3)  # "speech" from 1 s to 4 s
    audio[5 * rate] = 1.0  # a click in the pause does not move the boundaries
    noisy = audio + np.random.default_rng(0).normal(0, 0.05, len(audio)).astype(np.float32)
    segment = seg(0.0, 6.0, "words")
    (trimmed,) = _trim_to_sound([segment], audio, 1e-3)
    assert (trimmed.start, trimmed.end) == (pytest.approx(1.0, abs=0.02), pytest.approx(4.0, abs=0.02))
    assert trimmed.text == "words" and trimmed.confidence == segment.confidence
    assert _trim_to_sound([segment], noisy, 1e-3) == [segment]  # pauses as loud as that: unchanged
    assert _trim_to_sound([seg(4.5, 4.9, "x")], audio, 1e-3) == [seg(4.5, 4.9, "x")]  # nothing audible


def test_checkpoints_load_without_running_pickled_code(tmp_path: Path) -> None:
    torch = importlib.import_module("torch")
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):  # what a malicious checkpoint does: call something while unpickling
            return (Path.touch, (marker,))

    torch.save({"dims": {}, "model_state_dict": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(InvalidInputError, match="evil.pt: not a loadable openai-whisper checkpoint"):
        load_openai_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(InvalidInputError, match="needs 'dims' and 'model_state_dict'"):
        load_openai_checkpoint(tmp_path / "other.pt")


# --------------------------------------------------------------------------------------------------------------
# real models (tiny.en, CPU)
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def transcripts(spoken_sentences, whisper_ct2_dir: Path, whisper_openai_checkpoint: Path) -> dict[str, Transcript]:
    """The spoken sentences transcribed once by each backend (same tiny.en weights)."""
    importlib.import_module("faster_whisper")
    importlib.import_module("whisper")
    return {
        "faster": WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu").transcribe(spoken_sentences.path),
        "openai": WhisperTranscriber(whisper_openai_checkpoint, backend="openai", device="cpu").transcribe(
            spoken_sentences.path
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["faster", "openai"])
def test_backends_hear_the_sentences_where_they_are_spoken(transcripts, spoken_sentences, backend: str) -> None:
    transcript = transcripts[backend]
    assert transcript.language == "en"
    assert transcript.duration == pytest.approx(spoken_sentences.duration, abs=0.01)
    assert overlap(" ".join(spoken_sentences.sentences), transcript.text) >= 0.6, transcript.text
    assert [s.start for s in transcript.segments] == sorted(s.start for s in transcript.segments)
    for segment in transcript.segments:
        assert 0 <= segment.start <= segment.end <= transcript.duration
        assert 0 <= segment.confidence <= 1 and 0 <= segment.no_speech_prob <= 1
        assert type(segment.start) is float and type(segment.end) is float
    for sentence, (first, last) in zip(spoken_sentences.sentences, spoken_sentences.spans):
        best = max(transcript.segments, key=lambda segment: overlap(sentence, segment.text))
        assert overlap(sentence, best.text) >= 0.5, (sentence, best.text)
        assert abs(best.start - first) <= TIMING_SLACK and abs(best.end - last) <= TIMING_SLACK, (best, first, last)


@pytest.mark.slow
def test_backends_agree_on_the_words(transcripts) -> None:
    faster, openai = (words(transcripts[name].text) for name in ("faster", "openai"))
    assert len(faster & openai) / len(faster | openai) >= 0.7, (faster, openai)


@pytest.mark.slow
def test_the_soundtrack_of_a_video_is_transcribed(spoken_sentences, whisper_ct2_dir: Path) -> None:
    transcriber = WhisperTranscriber(whisper_ct2_dir, device="cpu", beam_size=1)
    transcript = transcriber.transcribe(spoken_sentences.variants["mp4"].read_bytes())
    assert overlap(" ".join(spoken_sentences.sentences), transcript.text) >= 0.5, transcript.text


@pytest.mark.slow
def test_loaded_models_are_shared(transcripts, spoken_sentences, whisper_ct2_dir: Path, monkeypatch) -> None:
    twin = WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu", beam_size=1)  # same model

    def no_second_load(*args: object) -> None:
        raise AssertionError("the model was loaded twice")

    monkeypatch.setattr(WhisperTranscriber, "_load_faster", no_second_load)
    first, last = spoken_sentences.spans[1]
    audio = load_audio(spoken_sentences.path)[int((first - 0.5) * 16_000) : int((last + 0.5) * 16_000)]
    assert "france" in words(twin.transcribe(audio).text)


@pytest.mark.slow
def test_the_right_window_is_retrieved_by_a_text_query(transcripts, spoken_sentences, minilm_dir: Path) -> None:
    sentence_transformers = importlib.import_module("sentence_transformers")
    transcript = transcripts["faster"]
    windows = transcript_windows(transcript.segments, window_seconds=4.0, overlap_seconds=0.0)
    records = transcript_records(windows, content_hash="speech", doc_id=str(spoken_sentences.path),
                                 language=transcript.language)  # fmt: skip
    assert len(records) == 3
    model = sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu")
    passages = model.encode([r.text for r in records], normalize_embeddings=True)
    queries = {
        "Which city is the capital of France?": 1,
        "a fox jumping over a dog": 0,
        "watering plants in the garden": 2,
    }
    scores = model.encode(list(queries), normalize_embeddings=True) @ passages.T
    for (query, expected), row in zip(queries.items(), scores):
        hit = records[int(np.argmax(row))]
        first, last = spoken_sentences.spans[expected]
        assert hit.metadata["start"] <= first + TIMING_SLACK and hit.metadata["end"] >= last - TIMING_SLACK, query


@pytest.mark.slow
def test_converted_checkpoint_matches_ctranslate2(spoken_sentences, whisper_ct2_dir, whisper_openai_checkpoint) -> None:
    """The fixture's CTranslate2 → openai-whisper conversion: same encoder output, same greedy tokens."""
    ctranslate2 = importlib.import_module("ctranslate2")
    torch = importlib.import_module("torch")
    whisper = importlib.import_module("whisper")
    model = load_openai_checkpoint(whisper_openai_checkpoint)
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(load_audio(spoken_sentences.path)))
    reference = ctranslate2.models.Whisper(str(whisper_ct2_dir), device="cpu", compute_type="float32")
    features = ctranslate2.StorageView.from_array(mel[None].numpy())
    with torch.inference_mode():
        encoded = model.encoder(mel[None]).numpy()
    assert np.abs(encoded - np.array(reference.encode(features))).max() < 1e-2
    tokenizer = whisper.tokenizer.get_tokenizer(model.is_multilingual)
    expected = reference.generate(features, [[tokenizer.sot, tokenizer.no_timestamps]], beam_size=1)[0]
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False)
    assert whisper.decode(model, mel, options).tokens == expected.sequences_ids[0]


def test_load_loads_the_model_now_and_returns_the_transcriber(whisper_ct2_dir: Path) -> None:
    from mm_rag.embed import base

    transcriber = WhisperTranscriber(whisper_ct2_dir, backend="faster", device="cpu")
    assert transcriber.load() is transcriber
    assert any(key[:2] == ("whisper-faster", str(whisper_ct2_dir)) for key in base._MODELS)
    with pytest.raises(InvalidInputError, match="cannot load faster-whisper model 'tiny.xx'"):  # no audio needed
        WhisperTranscriber("tiny.xx", backend="faster").load()


def test_loading_on_cpu_prints_no_warning_users_cannot_act_on(whisper_ct2_dir: Path) -> None:
    import subprocess
    import sys

    # CTranslate2 logs from C++ straight to stderr: only a fresh process shows what a user would see.
    script = (
        "from mm_rag.embed.whisper import WhisperTranscriber\n"
        f"WhisperTranscriber({str(whisper_ct2_dir)!r}, backend='faster', device='cpu').load()\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert "float16" not in loaded.stderr and "warning" not in loaded.stderr.lower()
