"""Video decoding with PyAV: keyframes for the CLIP space and the audio track for transcription.

A video becomes two kinds of records that share its ``doc_id`` and a clock (seconds from the first video
frame): keyframe images (`sample_keyframes` → `keyframe_records`), embedded like images, and transcript
windows of its audio track (`video_audio` → Whisper), so a hit in one can be joined with the other by time.
"""

from __future__ import annotations

import io
import math
import mimetypes
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from mm_rag._optional import require
from mm_rag.embed.media import MAX_IMAGE_PIXELS, MediaError, describe
from mm_rag.embed.sniff import read_head
from mm_rag.errors import InvalidInputError
from mm_rag.records import Record, make_id

VideoSource = Any  # str | os.PathLike | bytes

MAX_KEYFRAMES = 500  # keyframes per video, at most; long videos get a longer sampling interval
SCENE_THRESHOLD = 0.1  # scene-change score (0..1) above which a frame starts a new scene
KEYFRAME_MAX_SIDE = 512  # keyframes are downscaled to this longest side (CLIP looks at 224-336 px)
_THUMB_SIDE = 32  # scene detection compares 32×32 RGB thumbnails
_SEEK_AHEAD = 4.0  # without scene detection, seek when the next sample is further ahead than this (seconds)
_EPSILON = 1e-3


@dataclass(frozen=True, slots=True)
class Keyframe:
    """One sampled video frame.

    Attributes:
        time: When the frame is shown, in seconds from the video's first frame.
        end: When the next keyframe is shown (or the video ends): the span this frame stands for.
        image: The frame as an RGB PIL image, at most `max_side` pixels on its longest side.
        scene_change: Whether it was taken because the picture changed, rather than by the sampling clock.
    """

    time: float
    end: float
    image: Any
    scene_change: bool = False


def sample_keyframes(
    source: VideoSource,
    every_seconds: float = 2.0,
    scene_threshold: float | None = SCENE_THRESHOLD,
    *,
    min_scene_gap: float = 0.5,
    max_frames: int = MAX_KEYFRAMES,
    max_side: int | None = KEYFRAME_MAX_SIDE,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> list[Keyframe]:
    """Sample keyframes from a video: see `iter_keyframes`, which yields the same frames one at a time."""
    return list(
        iter_keyframes(
            source,
            every_seconds,
            scene_threshold,
            min_scene_gap=min_scene_gap,
            max_frames=max_frames,
            max_side=max_side,
            max_pixels=max_pixels,
        )
    )


def iter_keyframes(
    source: VideoSource,
    every_seconds: float = 2.0,
    scene_threshold: float | None = SCENE_THRESHOLD,
    *,
    min_scene_gap: float = 0.5,
    max_frames: int = MAX_KEYFRAMES,
    max_side: int | None = KEYFRAME_MAX_SIDE,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Iterator[Keyframe]:
    """Yield the first frame, then one frame `every_seconds` after the previous keyframe, plus scene changes.

    A scene change is a frame whose 32×32 thumbnail differs from the previous frame's by more than
    `scene_threshold` (mean absolute difference, 0..1), counted only where the difference jumps (the score is
    ``min(diff, |diff - previous diff|)``), so steady motion does not fire it. A scene change within
    `min_scene_gap` seconds of a clock sample replaces that sample; one that close to the first frame or to
    another scene change is ignored (flicker). Scene detection must look at every frame; with
    ``scene_threshold=None`` only the sampling clock counts and the decoder seeks past long gaps.

    At most `max_frames` keyframes are produced: when the duration is known, the interval is stretched so the
    clock samples use half of them, and scene changes stop once the rest are needed for the clock.

    Raises:
        InvalidInputError: a non-positive interval or cap, or a threshold outside (0, 1].
        MediaError: naming the input: unreadable, empty, not a container, no video stream, frames larger than
            `max_pixels`, or corrupt/truncated data that yields no frame.
    """
    _check_arguments(every_seconds, scene_threshold, min_scene_gap, max_frames, max_side)
    options = _Options(every_seconds, scene_threshold, min_scene_gap, max_frames, max_side, max_pixels)
    av = require("av", "video decoding")
    name = describe(source)
    with _open(av, source, name) as container:
        stream = _video_stream(av, container, name)
        _check_pixels(stream.codec_context.width, stream.codec_context.height, name, max_pixels)
        stream.thread_type = "AUTO"
        try:
            yield from _keyframes(av, container, stream, name, options)
        except av.FFmpegError as error:
            raise MediaError(f"{name}: corrupt or truncated video: {_reason(error)}") from error


def frame_at(source: VideoSource, time: float, *, max_side: int | None = KEYFRAME_MAX_SIDE) -> Any:
    """The frame shown at `time` seconds (the last one at or before it), as an RGB PIL image.

    Raises:
        MediaError: naming the input: unreadable, no video stream, or no frame at all.
    """
    av = require("av", "video decoding")
    name = describe(source)
    with _open(av, source, name) as container:
        stream = _video_stream(av, container, name)
        shown = None
        try:
            for frame in _seek(av, container, stream, max(0.0, time)):
                if shown is not None and frame.time is not None and frame.time > time + 1e-6:
                    break
                shown = frame
        except av.FFmpegError as error:
            raise MediaError(f"{name}: corrupt or truncated video: {_reason(error)}") from error
        if shown is None:
            raise MediaError(f"{name}: no frame at {time:.2f} s")
        return _to_image(av.video.reformatter.VideoReformatter(), shown, max_side)


@dataclass(frozen=True, slots=True)
class _Options:
    every: float
    threshold: float | None
    min_gap: float
    max_frames: int
    max_side: int | None
    max_pixels: int


@dataclass(slots=True)
class _Candidate:
    time: float
    image: Any
    scene_change: bool
    replaceable: bool  # a clock sample that a scene cut just after it may take the place of


def _keyframes(av: Any, container: Any, stream: Any, name: str, options: _Options) -> Iterator[Keyframe]:
    """Choose keyframes; each is yielded once the next one is final (no later cut can replace it)."""
    duration = _duration(container, stream)
    every, max_frames = options.every, options.max_frames
    if duration:  # stretch the interval so the clock alone uses at most half the budget (all of it without cuts)
        every = max(every, duration / max(1, max_frames // 2 if options.threshold is not None else max_frames))
    scaler = av.video.reformatter.VideoReformatter()  # one scaler: its swscale context is reused across frames
    detector = _CutDetector(scaler, options.threshold) if options.threshold is not None else None
    queue: list[_Candidate] = []
    produced, next_sample, time, stop_time = 0, 0.0, 0.0, None
    clock = (lambda: next_sample) if detector is None else None  # without scene detection, seek to each sample
    for time, frame in _timed_frames(av, container, stream, clock):
        scene = detector.is_cut(frame) if detector is not None else False
        periodic = time + _EPSILON >= next_sample
        if scene and queue and time - queue[-1].time < options.min_gap:
            if queue[-1].replaceable:  # a clock sample just before the cut: the cut frame stands for it
                queue.pop()
                produced -= 1
            else:  # right after the first frame or another cut: flicker
                scene = False
        if scene and not periodic and duration and produced + math.ceil((duration - time) / every) >= max_frames:
            scene = False  # the remaining budget belongs to the sampling clock
        if not (scene or periodic):
            continue
        if produced >= max_frames:
            stop_time = time
            break
        _check_pixels(frame.width, frame.height, name, options.max_pixels)
        image = _to_image(scaler, frame, options.max_side)
        queue.append(_Candidate(time, image, scene, periodic and not scene and produced > 0))
        produced += 1
        next_sample = time + every
        while len(queue) >= 2 and (queue[1].scene_change or time - queue[1].time >= options.min_gap):
            done = queue.pop(0)
            yield Keyframe(done.time, queue[0].time, done.image, done.scene_change)
    if not queue:
        raise MediaError(f"{name}: no decodable video frames (corrupt or truncated?)")
    rate = float(stream.average_rate or stream.guessed_rate or 0)
    end = stop_time if stop_time is not None else max(time + (1.0 / rate if rate else 0.0), queue[-1].time)
    for position, done in enumerate(queue):
        following = queue[position + 1].time if position + 1 < len(queue) else end
        yield Keyframe(done.time, following, done.image, done.scene_change)


class _CutDetector:
    """Scene cuts from 32×32 RGB thumbnails: the mean absolute difference to the previous frame (0..1), counted
    where it jumps (``min(diff, |diff - previous diff|)``, as ffmpeg's scdet does), so steady motion is no cut."""

    def __init__(self, scaler: Any, threshold: float) -> None:
        self.scaler, self.threshold = scaler, threshold
        self.previous: np.ndarray | None = None
        self.previous_diff = 0.0

    def is_cut(self, frame: Any) -> bool:
        thumb = self.scaler.reformat(frame, width=_THUMB_SIDE, height=_THUMB_SIDE, format="rgb24", interpolation="AREA")
        pixels = thumb.to_ndarray().astype(np.int16)
        previous, self.previous = self.previous, pixels
        if previous is None:
            return False
        diff = float(np.abs(pixels - previous).mean()) / 255.0
        score = min(diff, abs(diff - self.previous_diff))
        self.previous_diff = diff
        return score > self.threshold


def _timed_frames(
    av: Any, container: Any, stream: Any, wanted: Callable[[], float] | None
) -> Iterator[tuple[float, Any]]:
    """Decoded frames with strictly increasing times in seconds from the first frame.

    With `wanted` (the next time the caller needs), the demuxer seeks ahead over gaps longer than
    `_SEEK_AHEAD`, and stops seeking once a seek fails to move forward (an index too sparse to help).
    """
    rate = float(stream.average_rate or stream.guessed_rate or 0)
    origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else None
    frames, last, sought, index = container.decode(stream), -math.inf, False, -1
    while True:
        if wanted is not None and not sought and wanted() - max(last, 0.0) > _SEEK_AHEAD:
            frames, sought = _seek(av, container, stream, wanted() + (origin or 0.0)), True
        frame = next(frames, None)
        if frame is None:
            return
        index += 1
        time = frame.time if frame.time is not None else (index / rate if rate else 0.0)
        origin = time if origin is None else origin
        time = max(0.0, time - origin)
        if sought:
            sought = False
            wanted = wanted if time > last + _EPSILON else None  # a seek that did not move forward won't help again
        if time <= last:  # replayed after a seek back to an earlier keyframe, or a repeated timestamp
            continue
        last = time
        yield time, frame


def video_audio(
    source: VideoSource, sample_rate: int = 16000, *, max_seconds: float | None = None
) -> np.ndarray | None:
    """The first audio track as float32 mono samples at `sample_rate`, or None when there is no audio.

    Samples are resampled and downmixed with PyAV's ``AudioResampler`` and aligned to the video's clock:
    sample 0 is the time of the first video frame (an audio track that starts later is padded with
    silence), so transcript times match keyframe times. `max_seconds` stops decoding after that much audio.

    Raises:
        InvalidInputError: a non-positive `sample_rate` or `max_seconds`.
        MediaError: naming the input: unreadable, empty, not a container, or corrupt audio data.
    """
    if sample_rate <= 0 or (max_seconds is not None and max_seconds <= 0):
        raise InvalidInputError(f"sample_rate and max_seconds must be positive, got {sample_rate}, {max_seconds}")
    av = require("av", "audio track decoding")
    name = describe(source)
    with _open(av, source, name) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        video = container.streams.video[0] if container.streams.video else None
        origin = (
            float(video.start_time * video.time_base) if video is not None and video.start_time is not None else None
        )
        limit = math.inf if max_seconds is None else max_seconds * sample_rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        parts: list[np.ndarray] = []
        count, first_time = 0, None
        try:
            for frame in container.decode(stream):
                if first_time is None and frame.time is not None:
                    first_time = frame.time
                for output in resampler.resample(frame):
                    parts.append(output.to_ndarray().reshape(-1))
                    count += parts[-1].size
                if count >= limit:
                    break
            else:
                parts.extend(output.to_ndarray().reshape(-1) for output in resampler.resample(None))
        except (av.FFmpegError, ValueError) as error:
            raise MediaError(f"{name}: corrupt or truncated audio track: {_reason(error)}") from error
    if not parts:
        return None
    samples = np.concatenate(parts).astype(np.float32, copy=False)
    if origin is not None and first_time is not None:
        shift = round((first_time - origin) * sample_rate)
        samples = np.concatenate([np.zeros(shift, np.float32), samples]) if shift > 0 else samples[-shift:]
    return samples[: int(limit)] if max_seconds is not None else samples


def keyframe_records(
    keyframes: Sequence[Keyframe],
    *,
    doc_id: str,
    uri: str,
    metadata: Mapping[str, Any] | None = None,
) -> list[Record]:
    """Turn keyframes into ``"video"`` records: one per frame, for embedding its image in the CLIP space.

    Each record has ``uri`` (the video), ``doc_id`` (the video's document id, shared with its transcript
    windows), and metadata ``start``/``end`` (seconds: the frame's time and the next keyframe's),
    ``frame_time``, ``scene_change``, ``mime_type`` (guessed from `uri`) plus any user `metadata`. The id is
    derived from the pixels and ``doc_id#t=…`` (stable across runs); ``content_hash`` from the pixels alone.
    """
    mime_type = mimetypes.guess_type(uri)[0] or "video/*"
    records = []
    for keyframe in keyframes:
        image = keyframe.image
        content_hash = make_id(f"{image.mode}:{image.width}x{image.height}:".encode() + image.tobytes())
        fields = {
            **(metadata or {}),
            "start": keyframe.time,
            "end": keyframe.end,
            "frame_time": keyframe.time,
            "scene_change": keyframe.scene_change,
            "mime_type": mime_type,
        }
        record_id = make_id(content_hash, f"{doc_id}#t={keyframe.time:.3f}")
        records.append(Record(record_id, "video", None, uri, fields, doc_id, content_hash))
    return records


@contextmanager
def _open(av: Any, source: VideoSource, name: str) -> Iterator[Any]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        target: Any = io.BytesIO(bytes(source))
        empty = not source
    elif isinstance(source, (str, os.PathLike)):
        target, empty = os.fspath(source), not read_head(source, 1)
    else:
        raise MediaError(f"{name}: expected a path or bytes")
    if empty:
        raise MediaError(f"{name}: empty file")
    try:
        container = av.open(target, "r")
    except (av.FFmpegError, OSError) as error:
        raise MediaError(f"{name}: not a readable audio/video file: {_reason(error)}") from error
    try:
        yield container
    finally:
        container.close()


def _video_stream(av: Any, container: Any, name: str) -> Any:
    attached = av.stream.Disposition.attached_pic
    for stream in container.streams.video:
        if not attached & stream.disposition:
            return stream
    raise MediaError(f"{name}: no video stream")


def _seek(av: Any, container: Any, stream: Any, time: float) -> Iterator[Any]:
    """Seek to the keyframe before `time` (seconds) and return a fresh frame iterator; none on failure."""
    try:
        container.seek(int(time / stream.time_base), stream=stream, backward=True, any_frame=False)
    except av.FFmpegError:
        pass  # an unseekable input: go on decoding from where we are
    return container.decode(stream)


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None


def _to_image(scaler: Any, frame: Any, max_side: int | None) -> Any:
    width, height = frame.width, frame.height
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    return scaler.reformat(frame, width=width, height=height, format="rgb24", interpolation="AREA").to_image()


def _check_pixels(width: int, height: int, name: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise MediaError(f"{name}: {width}x{height} video exceeds the {max_pixels}-pixel limit")


def _check_arguments(
    every: float, threshold: float | None, min_gap: float, max_frames: int, max_side: int | None
) -> None:
    if not every > 0 or max_frames < 1 or min_gap < 0 or (max_side is not None and max_side < 1):
        raise InvalidInputError(
            f"every_seconds, max_frames and max_side must be positive and min_scene_gap non-negative, got "
            f"{every}, {max_frames}, {max_side}, {min_gap}"
        )
    if threshold is not None and not 0 < threshold <= 1:
        raise InvalidInputError(f"scene_threshold must be in (0, 1] or None, got {threshold}")


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error)
