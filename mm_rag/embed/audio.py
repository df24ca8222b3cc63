"""Decoding audio into what Whisper takes: float32 mono samples in [-1, 1] at a fixed rate.

soundfile (libsndfile) reads wav, flac, ogg/vorbis/opus and mp3 without a system ffmpeg, and soxr resamples;
PyAV reads every other container (m4a, webm, the audio track of a video). Every failure is a `MediaError`
naming the input and the problem, so a batch can report the one bad file and go on with the rest.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from mm_rag._optional import available, require
from mm_rag.embed.media import MediaError, describe

SAMPLE_RATE = 16_000  # what Whisper models take
_BLOCK_FRAMES = 1 << 16  # frames decoded per step, so long files never sit in memory at their native rate
_HEAD_BYTES = 1 << 16  # bytes of a file read to check its header
# A file decodes to fewer samples than its header declares by more than this → truncated.
_TRUNCATION_SLACK_SECONDS = 0.25
_TRUNCATION_SLACK_FRACTION = 0.02

_ESTIMATED_DURATION = frozenset({"mp3", "aac", "ac3", "eac3", "mp2", "dts", "amr", "adts"})

AudioSource = str | os.PathLike | bytes | bytearray | memoryview


def load_audio(source: AudioSource, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file (or a video's first audio track) into float32 mono samples in [-1, 1].

    Args:
        source: A path, or the file's bytes.
        sample_rate: The rate to resample to (Hz); Whisper takes 16 kHz.

    Returns:
        A 1-D float32 array; silence is valid audio (zeros), a file with no samples gives an empty array.

    Raises:
        MediaError: naming the input: missing or unreadable, empty, not an audio format soundfile or PyAV can
            read (broken header, random bytes), truncated or corrupt, or a container without an audio stream.
    """
    if sample_rate <= 0:
        raise MediaError(f"{describe(source)}: sample_rate must be positive, got {sample_rate}")
    name, opened, head, tail, size = _open(source)
    problem = _truncation(head, tail, size)
    if problem:
        raise MediaError(f"{name}: truncated file: {problem}")
    soundfile = require("soundfile", "audio decoding")
    try:
        sound = soundfile.SoundFile(opened())
    except soundfile.LibsndfileError as error:  # not a format libsndfile knows: try PyAV
        return _decode_with_av(name, opened, sample_rate, error)
    # An MP3 declares its exact length only in a Xing/Info/VBRI frame; without one libsndfile estimates it.
    exact = sound.format != "MP3" or any(tag in head for tag in (b"Xing", b"Info", b"VBRI"))
    with sound:
        return _decode_with_soundfile(name, sound, sample_rate, exact)


def audio_duration(source: AudioSource) -> float:
    """The duration in seconds that the file's header declares (nothing is decoded).

    Raises:
        MediaError: as `load_audio`, when the input cannot be opened or declares no duration.
    """
    name, opened, *_ = _open(source)
    soundfile = require("soundfile", "audio decoding")
    try:
        info = soundfile.info(opened())
        return float(info.frames) / info.samplerate
    except soundfile.LibsndfileError as error:
        av = _require_av(name, error)
        with _open_container(av, name, opened, error) as container:
            stream = _audio_stream(container, name)
            seconds = _declared_seconds(av, container, stream)
        if seconds is None:
            raise MediaError(f"{name}: the container does not declare a duration") from None
        return seconds


def _open(source: AudioSource) -> tuple[str, Any, bytes, bytes, int]:
    """Check the input can be read; return its name, a factory of fresh readers, its first and last bytes, size."""
    name = describe(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise MediaError(f"{name}: empty input (no bytes)")
        return name, lambda: io.BytesIO(data), data[:_HEAD_BYTES], data[-_HEAD_BYTES:], len(data)
    if not isinstance(source, (str, os.PathLike)):
        raise MediaError(f"{name}: expected a path or bytes")
    path = Path(source)
    try:
        if path.is_dir():
            raise MediaError(f"{name}: is a directory, not an audio file")
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES)
            handle.seek(max(0, size - _HEAD_BYTES))
            tail = handle.read()
    except OSError as error:
        raise MediaError(f"{name}: cannot read: {error.strerror or error}") from error
    if size == 0:
        raise MediaError(f"{name}: empty file (0 bytes)")
    return name, lambda: str(path), head, tail, size


def _decode_with_soundfile(name: str, sound: Any, sample_rate: int, exact: bool) -> np.ndarray:
    soundfile = require("soundfile", "audio decoding")
    soxr = require("soxr", "audio resampling")
    declared = sound.frames
    rate = sound.samplerate
    resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32") if rate != sample_rate else None
    chunks: list[np.ndarray] = []
    decoded = 0
    try:
        while True:
            block = sound.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
            last = len(block) < _BLOCK_FRAMES
            decoded += len(block)
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            chunks.append(resampler.resample_chunk(mono, last=last) if resampler else mono)
            if last:
                break
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise _decode_error(name, decoded / rate, error) from error
    _check_length(name, decoded / rate, declared / rate if exact and declared > 0 else None)
    return _finish(chunks)


def _decode_with_av(name: str, opened: Any, sample_rate: int, soundfile_error: Exception) -> np.ndarray:
    av = _require_av(name, soundfile_error)
    with _open_container(av, name, opened, soundfile_error) as container:
        stream = _audio_stream(container, name)
        # Raw elementary streams (mp3, aac…) only estimate their duration from the bitrate: no check.
        declared = None if container.format.name in _ESTIMATED_DURATION else _declared_seconds(av, container, stream)
        if stream.codec_context is None:
            raise MediaError(f"{name}: unsupported audio codec (PyAV has no decoder for it)")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        decoded = 0.0
        try:
            for frame in container.decode(stream):
                decoded += frame.samples / frame.sample_rate
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        except av.error.FFmpegError as error:
            raise _decode_error(name, decoded, error) from error
    _check_length(name, decoded, declared)
    return _finish(chunks)


def _require_av(name: str, soundfile_error: Exception) -> Any:
    if not available("av"):
        raise MediaError(
            f"{name}: not a format soundfile can read ({_reason(soundfile_error)}); other containers (m4a, webm, video)"
            " need PyAV: pip install 'mm-rag[video]'"
        ) from soundfile_error
    return require("av", "audio decoding")


def _open_container(av: Any, name: str, opened: Any, soundfile_error: Exception) -> Any:
    try:
        return av.open(opened(), mode="r")
    except av.error.FFmpegError as error:
        raise MediaError(
            f"{name}: not an audio or video file that soundfile or PyAV can read"
            f" (unsupported format or broken header; soundfile: {_reason(soundfile_error)}; PyAV: {_reason(error)})"
        ) from error


def _audio_stream(container: Any, name: str) -> Any:
    if not container.streams.audio:
        kinds = sorted({stream.type for stream in container.streams}) or ["none"]
        raise MediaError(f"{name}: no audio stream (streams: {', '.join(kinds)})")
    return container.streams.audio[0]


def _declared_seconds(av: Any, container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _check_length(name: str, decoded: float, declared: float | None) -> None:
    if declared is None:
        return
    if declared - decoded > max(_TRUNCATION_SLACK_SECONDS, _TRUNCATION_SLACK_FRACTION * declared):
        raise MediaError(f"{name}: truncated audio: header declares {declared:.2f} s, only {decoded:.2f} s decoded")


def _decode_error(name: str, decoded: float, error: BaseException) -> MediaError:
    if decoded == 0:
        return MediaError(f"{name}: cannot decode any audio (broken header or corrupt data): {_reason(error)}")
    return MediaError(f"{name}: corrupt or truncated audio after {decoded:.2f} s: {_reason(error)}")


def _reason(error: BaseException) -> str:
    """The library's own words, without the file object repr that soundfile and PyAV add."""
    text = getattr(error, "error_string", None) or getattr(error, "strerror", None) or str(error)
    return str(text).strip().rstrip(".")


def _finish(chunks: list[np.ndarray]) -> np.ndarray:
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return np.clip(samples, -1.0, 1.0, out=samples.astype(np.float32, copy=False))


def _truncation(head: bytes, tail: bytes, size: int) -> str | None:
    """Why a file is visibly cut short, from its header or last page alone; None when it looks whole.

    Checked: a WAV data chunk that declares more bytes than the file holds, and an Ogg file whose last page
    is cut or lacks the end-of-stream flag. Other formats are checked after decoding (`_check_length`).
    """
    if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        order = "<" if head[:4] == b"RIFF" else ">"
        position = 12
        while position + 8 <= len(head):
            chunk, (length,) = head[position : position + 4], struct.unpack_from(order + "I", head, position + 4)
            if chunk == b"data":
                held = size - position - 8
                if length not in (0, 0xFFFFFFFF) and held < length:  # 0 / ~0: a streaming writer's placeholder
                    return f"the data chunk declares {length} bytes, the file holds {held}"
                return None
            position += 8 + length + (length & 1)
    elif head[:4] == b"OggS":
        position = len(tail)
        while (position := tail.rfind(b"OggS", 0, position)) >= 0:  # the last page that ends where the file does
            if position + 27 > len(tail):
                continue
            count = tail[position + 26]
            lacing = tail[position + 27 : position + 27 + count]
            if len(lacing) == count and position + 27 + count + sum(lacing) == len(tail):
                return None if tail[position + 5] & 0x04 else "the last Ogg page lacks the end-of-stream flag"
        return "the last Ogg page is cut short"
    return None
