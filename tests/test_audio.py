"""Audio decoding: every container to 16-kHz mono float32, and a `MediaError` naming each bad input."""

from __future__ import annotations

import importlib
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from mm_rag.embed.audio import SAMPLE_RATE, audio_duration, load_audio
from mm_rag.embed.media import MediaError
from mm_rag.errors import InvalidInputError

soundfile = importlib.import_module("soundfile")
importlib.import_module("soxr")
importlib.import_module("av")

VARIANTS = ("wav", "flac", "ogg", "mp3", "m4a", "webm", "mp4")


def envelope_contrast(samples: np.ndarray, spoken_sentences) -> float:
    """Mean level inside the spoken sentences over the mean level in the silences between them."""
    inside = np.zeros(len(samples), dtype=bool)
    for start, end in spoken_sentences.spans:
        inside[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)] = True
    margin = int(0.2 * SAMPLE_RATE)  # codecs shift and smear edges a little
    near = np.convolve(inside, np.ones(2 * margin + 1), mode="same") > 0
    level = np.abs(samples)
    return float(level[inside].mean() / max(level[~near].mean(), 1e-9))


@pytest.mark.parametrize("kind", VARIANTS)
def test_every_container_decodes_to_16k_mono_float(spoken_sentences, kind: str) -> None:
    samples = load_audio(spoken_sentences.variants[kind])
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert -1.0 <= samples.min() and samples.max() <= 1.0
    # lossy codecs add a few ms of priming/padding; the length must still be the spoken_sentences's
    assert len(samples) / SAMPLE_RATE == pytest.approx(spoken_sentences.duration, abs=0.1)  # audio length, not time
    assert envelope_contrast(samples, spoken_sentences) > 20  # the sentences are where the fixture put them


def test_lossless_decode_matches_a_one_shot_resample(spoken_sentences) -> None:
    import soxr

    original, rate = soundfile.read(spoken_sentences.path, dtype="float32")
    expected = soxr.resample(original, rate, SAMPLE_RATE)
    for kind in ("wav", "flac"):  # decoded block by block with a streaming resampler
        samples = load_audio(spoken_sentences.variants[kind])
        assert len(samples) == len(expected)
        assert np.abs(samples - expected).max() < 1e-3


def test_bytes_and_paths_decode_alike(spoken_sentences) -> None:
    for kind in ("wav", "mp3", "m4a"):
        path = spoken_sentences.variants[kind]
        np.testing.assert_array_equal(load_audio(path.read_bytes()), load_audio(path))
        np.testing.assert_array_equal(load_audio(str(path)), load_audio(path))


def test_sample_rate_channels_and_range(tmp_path: Path) -> None:
    rate = 44_100
    t = np.arange(rate) / rate
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), -0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = tmp_path / "stereo.wav"
    soundfile.write(stereo, np.stack([left, right + 0.25], axis=1), rate, subtype="PCM_16")
    mono = load_audio(stereo)
    assert len(mono) == SAMPLE_RATE and np.abs(mono[200:-200] - 0.125).max() < 0.01  # channels averaged
    assert len(load_audio(stereo, sample_rate=8_000)) == 8_000
    loud = tmp_path / "loud.wav"
    soundfile.write(loud, 3 * left, rate, subtype="FLOAT")  # float WAVs may exceed full scale
    assert np.abs(load_audio(loud)).max() == pytest.approx(1.0)


def test_silence_is_valid_audio(silent_wav: Path) -> None:
    samples = load_audio(silent_wav)
    assert len(samples) == 4 * SAMPLE_RATE and not samples.any()


def test_audio_duration_reads_the_header(spoken_sentences) -> None:
    for kind in ("wav", "mp3", "m4a", "mp4"):
        assert audio_duration(spoken_sentences.variants[kind]) == pytest.approx(spoken_sentences.duration, abs=0.1)


# --------------------------------------------------------------------------------------------------------------
# bad inputs: a MediaError (an InvalidInputError) that names the file and the problem
# --------------------------------------------------------------------------------------------------------------
def wav_bytes(fmt_tag: int = 1, channels: int = 1, frames: int = 1600) -> bytes:
    data = np.zeros(frames * channels, dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, 16_000, 32_000 * channels, 2 * channels, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bad_inputs(spoken_sentences, folder: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, a phrase the error must contain)."""
    random = np.random.default_rng(7).bytes(20_000)
    wav, mp3, flac = (spoken_sentences.variants[kind].read_bytes() for kind in ("wav", "mp3", "flac"))
    ogg = spoken_sentences.variants["ogg"].read_bytes()
    cases = {
        "zero-bytes.wav": (b"", "empty"),
        "random.wav": (random, "not an audio or video file"),
        "random.mp3": (random, "not an audio or video file"),
        "text.wav": (b"this is not audio at all\n" * 40, "not an audio or video file"),
        "broken-header.wav": (wav[:12] + b"\xff" * 32 + wav[44:], "not an audio or video file"),
        "zero-channels.wav": (wav_bytes(channels=0), "broken header"),
        "unknown-codec.wav": (wav_bytes(fmt_tag=0x1234), "unsupported audio codec"),
        "truncated.wav": (wav[: len(wav) // 2], "truncated"),
        "truncated.mp3": (mp3[: len(mp3) // 2], "truncated"),
        "truncated.flac": (flac[: len(flac) // 2], "truncated"),
        "truncated.ogg": (ogg[: len(ogg) // 2], "truncated"),
    }
    out = {}
    for name, (data, phrase) in cases.items():
        (folder / name).write_bytes(data)
        out[name] = (folder / name, phrase)
    return out


def test_bad_files_raise_media_errors_naming_them(spoken_sentences, tmp_path: Path) -> None:
    for name, (path, phrase) in bad_inputs(spoken_sentences, tmp_path).items():
        with pytest.raises(MediaError) as caught:
            load_audio(path)
        message = str(caught.value)
        assert str(path) in message, name
        assert phrase in message, (name, message)
        assert isinstance(caught.value, InvalidInputError)


def test_decoder_errors_are_chained(spoken_sentences, tmp_path: Path) -> None:
    with pytest.raises(MediaError) as caught:
        load_audio(np.random.default_rng(1).bytes(5000))
    assert caught.value.__cause__ is not None  # PyAV's own error, after soundfile's


def test_bad_bytes_name_their_size(spoken_sentences) -> None:
    with pytest.raises(MediaError, match=r"<0 bytes>: empty"):
        load_audio(b"")
    with pytest.raises(MediaError, match=r"<5 bytes>"):
        load_audio(b"RIFF!")


def test_missing_file_directory_and_wrong_type(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(MediaError, match=rf"{missing}: cannot read: No such file"):
        load_audio(missing)
    with pytest.raises(MediaError, match=rf"{tmp_path}: is a directory"):
        load_audio(tmp_path)
    with pytest.raises(MediaError, match="expected a path or bytes"):
        load_audio(12)  # type: ignore[arg-type]
    with pytest.raises(MediaError, match="sample_rate"):
        load_audio(missing, sample_rate=0)


def test_unreadable_file(tmp_path: Path) -> None:
    # chmod 000 does not stop root (the tests run as root in CI), so a dangling link stands in for a file
    # that exists in the folder listing but cannot be read.
    dangling = tmp_path / "gone.wav"
    dangling.symlink_to(tmp_path / "deleted-target.wav")
    with pytest.raises(MediaError, match=re.escape(str(dangling))):
        load_audio(dangling)


def test_video_without_audio_track(spoken_sentences, tmp_path: Path) -> None:
    from fixtures.speech import encode_with_av

    silent_film = encode_with_av(np.zeros(SAMPLE_RATE), SAMPLE_RATE, tmp_path / "film.mp4", codec=None, video=True)
    with pytest.raises(MediaError, match=rf"{silent_film}: no audio stream \(streams: video\)"):
        load_audio(silent_film)
    with pytest.raises(MediaError, match="no audio stream"):
        audio_duration(silent_film)
