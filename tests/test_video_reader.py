"""Reading frames: decord and PyAV agree, rotation/odd sizes/VFR/high resolution, typed failures."""

from __future__ import annotations

import numpy as np
import pytest
import videos

from etspipe_demo.mp4 import write_mp4
from extract_features import video_reader
from extract_features.video_reader import VideoReadError, open_video


def read_all(path, backend, frame_size=(128, 171)):
    reader = open_video(path, frame_size, backend=backend)
    try:
        return reader.info, reader.read(np.arange(reader.info.n_frames))
    finally:
        reader.close()


@pytest.mark.parametrize("size", [(64, 80), (63, 81)])
def test_decord_and_pyav_give_the_same_frames(tmp_path, size):
    path = videos.write_video(tmp_path / "v.mp4", n_frames=20, size=size)
    info_d, frames_d = read_all(path, "decord")
    info_p, frames_p = read_all(path, "pyav")
    assert info_d.backend == "decord" and info_p.backend == "pyav"
    assert info_d.n_frames == info_p.n_frames == 20 == len(frames_d) == len(frames_p)
    assert frames_d.shape == frames_p.shape == (20, 128, 171, 3)
    diff = np.abs(frames_d.astype(int) - frames_p.astype(int))
    assert diff.mean() < 3.0  # the two scalers differ by a grey level or two
    # and both follow the content: frame i is closer to its partner than to frame i+1
    assert diff.mean() < np.abs(frames_d[1:].astype(int) - frames_p[:-1].astype(int)).mean()


def test_pyav_is_used_when_decord_is_missing(tmp_path, monkeypatch):
    path = videos.write_video(tmp_path / "v.mp4", n_frames=10)
    monkeypatch.setattr(video_reader, "HAVE_DECORD", False)
    reader = open_video(path)
    assert reader.info.backend == "pyav"
    assert reader.read(np.array([0, 3, 9])).shape == (3, 128, 171, 3)


def test_reads_are_streamed_forwards(tmp_path):
    path = videos.write_video(tmp_path / "v.mp4", n_frames=12)
    _, every = read_all(path, "pyav")
    reader = open_video(path, backend="pyav")
    parts = [reader.read(np.arange(0, 5)), reader.read(np.array([7, 8])), reader.read(np.array([11, 12, 13]))]
    assert np.array_equal(parts[0], every[:5]) and np.array_equal(parts[1], every[7:9])
    assert len(parts[2]) == 1  # the stream ends: fewer frames come back, no error


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_rotation_metadata_is_applied(tmp_path, backend):
    plain = videos.write_video(tmp_path / "plain.mp4", n_frames=8, size=(64, 96))
    rotated = videos.write_video(tmp_path / "rot.mp4", n_frames=8, size=(64, 96), rotation=90)
    info, frames = read_all(rotated, backend)
    assert info.rotation == 90 and (info.height, info.width) == (96, 64)
    assert frames.shape == (8, 128, 171, 3)
    # the rotated file's frames are the plain file's frames, scaled to the transposed size, then rotated
    _, coded = read_all(plain, backend, frame_size=(171, 128))
    expected = np.rot90(coded, k=1, axes=(1, 2))
    diff = np.abs(frames.astype(int) - expected.astype(int)).mean()
    assert diff < 4.0  # decord rotates before scaling, PyAV after: a grey level or two apart
    wrong = np.abs(frames.astype(int) - np.rot90(coded, k=3, axes=(1, 2)).astype(int)).mean()
    assert diff * 5 < wrong


def test_variable_frame_rate_keeps_every_frame(tmp_path):
    path = videos.write_video(tmp_path / "vfr.mp4", n_frames=30, vfr=True)
    info, frames = read_all(path, "auto")
    assert info.n_frames == 30 and len(frames) == 30
    assert 10 < info.fps < 40


def test_high_resolution_is_scaled_in_the_decoder(tmp_path):
    path = videos.write_video(tmp_path / "hd.mp4", n_frames=4, size=(1080, 1920))
    info, frames = read_all(path, "auto")
    assert (info.height, info.width) == (1080, 1920)
    assert frames.shape == (4, 128, 171, 3)


@pytest.mark.parametrize("maker, reason", [
    (videos.write_zero_byte, "empty_file"),
    (videos.write_text_as_video, "unreadable"),
    (videos.write_truncated, "unreadable"),
    (videos.write_audio_only, "no_video_stream"),
    (videos.write_no_decodable_frames, "no_frames"),
])
def test_broken_inputs_give_typed_reasons(tmp_path, maker, reason):
    path = maker(tmp_path / "bad.mp4")
    with pytest.raises(VideoReadError) as err:
        open_video(path)
    assert err.value.reason == reason


def test_missing_file(tmp_path):
    with pytest.raises(VideoReadError) as err:
        open_video(tmp_path / "nope.mp4")
    assert err.value.reason == "missing"


def _write_short_gop(path, n_frames, gop):
    """An H.264 video with a keyframe every `gop` frames (so the decord reader's resets happen)."""
    frames = (videos.synthetic_frame(i, 64, 80) for i in range(n_frames))
    write_mp4(path, frames, 25, crf=12, preset="ultrafast",
              options={"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
    return path


@pytest.mark.parametrize("step", [1, 3])  # every frame, and a resampled (frame-skipping) sequence
def test_decord_queue_resets_keep_the_frames(tmp_path, monkeypatch, step):
    """Resetting decord's queues at keyframes (the memory fix) returns exactly the same frames."""
    path = _write_short_gop(tmp_path / "gop.mp4", n_frames=90, gop=10)
    wanted = np.arange(0, 90, step)

    def read_chunks(reset_every):
        monkeypatch.setattr(video_reader.DecordReader, "reset_every", reset_every)
        reader = open_video(path, (128, 171), backend="decord")
        try:
            assert list(reader._keyframes) == list(range(0, 90, 10))
            frames = np.concatenate([reader.read(wanted[s : s + 7]) for s in range(0, len(wanted), 7)])
            return frames, reader.resets
        finally:
            reader.close()

    plain, no_resets = read_chunks(10**9)
    reset, resets = read_chunks(12)
    assert no_resets == 0 and resets == (4 if step == 1 else 2)  # at keyframes 20,40,60,80 or 30,60
    assert reset.shape == plain.shape == (len(wanted), 128, 171, 3)
    np.testing.assert_array_equal(reset, plain)
    # and they are the right frames: PyAV agrees frame by frame
    _, pyav_frames = read_all(path, "pyav")
    assert np.abs(reset.astype(int) - pyav_frames[wanted].astype(int)).mean() < 3.0
