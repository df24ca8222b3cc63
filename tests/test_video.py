"""Video decoding: keyframes on the clock and at scene cuts, the audio track, records, and bad inputs."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from fixtures import mediagen
from fixtures.corpus import VIDEO_DURATION, VIDEO_FPS, VIDEO_SCENES
from fixtures.mediagen import Scene

from mm_rag.embed.media import MediaError
from mm_rag.embed.video import iter_keyframes, keyframe_records, sample_keyframes, video_audio
from mm_rag.errors import InvalidInputError
from mm_rag.records import encode_record

FRAME = 1 / VIDEO_FPS


def _scene_at(time: float) -> int:
    return max(index for index, scene in enumerate(VIDEO_SCENES) if scene.start <= time + 1e-6)


def _colour_scene(image) -> int:
    """Which scene's colour the keyframe shows (the top-left corner is never covered by the moving square)."""
    pixel = np.asarray(image.crop((0, 0, 8, 8))).reshape(-1, 3).mean(axis=0)
    return int(np.argmin([np.abs(pixel - scene.colour).sum() for scene in VIDEO_SCENES]))


@pytest.fixture(scope="module")
def keyframes(media_corpus):
    return sample_keyframes(media_corpus["video"].path, every_seconds=2.0)


def test_keyframes_follow_the_clock_and_the_scene_cuts(keyframes):
    times = [keyframe.time for keyframe in keyframes]
    assert times[0] == 0.0
    assert times == sorted(times)
    # At most one interval apart, plus the scene gap when a cut replaces the clock sample just before it.
    assert all(later - earlier <= 2.0 + 0.5 + 1e-6 for earlier, later in itertools.pairwise(times))
    for cut in VIDEO_SCENES[1:]:  # each cut gives a scene-change keyframe within one frame of it
        near = [keyframe for keyframe in keyframes if abs(keyframe.time - cut.start) <= FRAME + 1e-6]
        assert len(near) == 1 and near[0].scene_change, (cut, times)
    assert sum(keyframe.scene_change for keyframe in keyframes) == len(VIDEO_SCENES) - 1  # motion is no cut
    # The clock sample at 2.0 s, 0.3 s before the first cut, was replaced by the cut frame.
    assert not any(abs(time - 2.0) < 1e-6 for time in times)


def test_every_scene_has_a_keyframe_showing_it(keyframes):
    for keyframe in keyframes:
        assert _colour_scene(keyframe.image) == _scene_at(keyframe.time)
    assert {_colour_scene(keyframe.image) for keyframe in keyframes} == set(range(len(VIDEO_SCENES)))


def test_keyframes_cover_the_video_without_gaps(keyframes):
    for keyframe, following in itertools.pairwise(keyframes):
        assert keyframe.end == following.time
    assert keyframes[-1].end == pytest.approx(VIDEO_DURATION, abs=FRAME)
    assert all(keyframe.image.mode == "RGB" and keyframe.image.size == (160, 120) for keyframe in keyframes)


def test_clock_only_sampling(media_corpus):
    keyframes = sample_keyframes(media_corpus["video"].path, every_seconds=2.0, scene_threshold=None)
    assert [keyframe.time for keyframe in keyframes] == pytest.approx([0.0, 2.0, 4.0, 6.0], abs=1e-6)
    assert not any(keyframe.scene_change for keyframe in keyframes)


@pytest.mark.parametrize("gop", [5, 250])
def test_clock_sampling_of_a_long_video_seeks_or_decodes_through(tmp_path, gop):
    path = mediagen.write_video(tmp_path / "long.mp4", [Scene(0.0, (90, 90, 90))], 40.0, fps=5, size=(32, 32), gop=gop)
    keyframes = sample_keyframes(path, every_seconds=5.0, scene_threshold=None)
    assert [keyframe.time for keyframe in keyframes] == pytest.approx([5.0 * step for step in range(8)], abs=1e-6)
    assert keyframes[-1].end == pytest.approx(40.0, abs=0.2)


def test_caps_on_frames_and_size(media_corpus):
    path = media_corpus["video"].path
    capped = sample_keyframes(path, every_seconds=0.5, max_frames=3)
    assert 1 <= len(capped) <= 3 and capped[-1].end == pytest.approx(VIDEO_DURATION, abs=FRAME)
    assert len(sample_keyframes(path, every_seconds=0.5, scene_threshold=None, max_frames=5)) == 5
    assert {keyframe.image.size for keyframe in sample_keyframes(path, max_side=80)} == {(80, 60)}
    with pytest.raises(MediaError, match="pixel limit"):
        sample_keyframes(path, max_pixels=100 * 100)


def test_bytes_input_and_early_stop(media_corpus):
    data = media_corpus["video"].path.read_bytes()
    assert [keyframe.time for keyframe in sample_keyframes(data)][:2] == [0.0, pytest.approx(2.3, abs=1e-6)]
    frames = iter_keyframes(media_corpus["video"].path)
    assert next(frames).time == 0.0
    frames.close()  # closes the container


def test_silent_video(media_corpus):
    path = media_corpus["silent_video"].path
    assert video_audio(path) is None
    keyframes = sample_keyframes(path, every_seconds=2.0)
    assert [round(keyframe.time, 3) for keyframe in keyframes] == [0.0, 2.3]  # the cut replaced the 2 s sample
    assert keyframes[-1].scene_change and keyframes[-1].end == pytest.approx(3.0, abs=FRAME)


def test_audio_track(media_corpus, speech):
    samples = video_audio(media_corpus["video"].path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) / 16000 == pytest.approx(VIDEO_DURATION, abs=0.1)
    spoken, rate = speech
    loud = np.abs(samples).max()
    assert 0.05 < loud <= 1.0
    half = video_audio(media_corpus["video"].path, sample_rate=8000, max_seconds=2.0)
    assert len(half) == 16000
    assert np.sqrt(np.mean(samples[: int(min(len(spoken) / rate, 4) * 16000)] ** 2)) > 0.01


@pytest.mark.parametrize("name", ["flac", "ogg", "mp3_id3", "m4a", "webm_audio"])
def test_audio_of_audio_files(media_corpus, name):
    samples = video_audio(media_corpus[name].path)
    assert len(samples) / 16000 == pytest.approx(0.5, abs=0.03)  # codec padding aside
    assert 0.15 < np.abs(samples).max() < 0.25


def test_keyframe_records(keyframes, media_corpus):
    uri = str(media_corpus["video"].path)
    records = keyframe_records(keyframes, doc_id="doc-video", uri=uri, metadata={"source": "test"})
    assert len(records) == len(keyframes)
    assert len({record.id for record in records}) == len(records)
    assert [record.id for record in keyframe_records(keyframes, doc_id="doc-video", uri=uri)] == [
        record.id for record in records
    ]
    for record, keyframe in zip(records, keyframes):
        assert record.modality == "video" and record.uri == uri and record.doc_id == "doc-video"
        assert record.metadata["start"] == record.metadata["frame_time"] == keyframe.time
        assert record.metadata["end"] == keyframe.end
        assert record.metadata["mime_type"] == "video/mp4" and record.metadata["source"] == "test"
        assert record.content_hash
        encode_record(record)  # storable
    other = keyframe_records(keyframes, doc_id="other", uri=uri)
    assert not {record.id for record in other} & {record.id for record in records}


def test_stable_ids_across_decodes(media_corpus, keyframes):
    again = sample_keyframes(media_corpus["video"].path, every_seconds=2.0)
    uri = str(media_corpus["video"].path)
    assert [r.id for r in keyframe_records(again, doc_id="d", uri=uri)] == [
        r.id for r in keyframe_records(keyframes, doc_id="d", uri=uri)
    ]


@pytest.mark.parametrize("name", ["truncated_mp4", "empty.mp4", "random.mp4", "unreadable", "random.wav"])
def test_bad_videos_raise_media_error_naming_the_file(bad_corpus, name):
    path = bad_corpus[name].path
    with pytest.raises(MediaError, match=re.escape(str(path))) as caught:
        sample_keyframes(path)
    assert caught.value.__cause__ is not None or "empty" in str(caught.value)
    with pytest.raises(MediaError, match=re.escape(str(path))):
        video_audio(path)


def test_no_video_stream(media_corpus, tmp_path):
    path = media_corpus["audio_only_mp4"].path
    with pytest.raises(MediaError, match=re.escape(f"{path}: no video stream")):
        sample_keyframes(path)
    with pytest.raises(MediaError, match="not a regular file"):
        sample_keyframes(tmp_path)
    with pytest.raises(MediaError, match="empty"):
        sample_keyframes(b"")


@pytest.mark.parametrize(
    "arguments",
    [{"every_seconds": 0}, {"scene_threshold": 0}, {"scene_threshold": 1.5}, {"max_frames": 0}, {"min_scene_gap": -1}],
)
def test_invalid_arguments(media_corpus, arguments):
    with pytest.raises(InvalidInputError):
        sample_keyframes(media_corpus["video"].path, **arguments)
    with pytest.raises(InvalidInputError):
        video_audio(media_corpus["video"].path, sample_rate=0)
