"""Read a video's frames by index, already resized to the network's frame size.

decord is the reader: it decodes and scales in C++ (``width``/``height`` go to its
ffmpeg filter graph, so a 4K frame never exists at full size in Python) and it
releases the GIL, so several decoders run in parallel threads. PyAV is the
fallback when decord is not installed, cannot open a file, or fails part way;
both return the same frames within a few grey levels (the scalers differ).

Frames come back in display orientation. decord rotates by the display matrix
itself, before scaling; for PyAV the rotation (read from the first decoded
frame) is applied after scaling, and its scaler is asked for the transposed
size so the rotated frame still has the requested (H, W).

Readers are sequential: `read` takes increasing indices, which is what the clip
iterator asks for and what lets the PyAV reader stream without seeking.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

try:  # decord is optional at run time: PyAV covers everything it does, slower
    import decord

    decord.bridge.set_bridge("native")
    HAVE_DECORD = True
except ImportError:  # pragma: no cover - depends on the installation
    decord = None
    HAVE_DECORD = False

# Failure reasons a reader reports; the runner records them in the store.
EMPTY_FILE = "empty_file"
UNREADABLE = "unreadable"
NO_VIDEO_STREAM = "no_video_stream"
NO_FRAMES = "no_frames"
DECODE_ERROR = "decode_error"
MISSING = "missing"


class VideoReadError(Exception):
    """A video that cannot be read; `reason` is one of the constants above."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class VideoInfo:
    """What the runner needs to plan clips and to record in the store."""

    path: str
    n_frames: int
    fps: float
    duration: float
    width: int  # display size, after rotation
    height: int
    rotation: int  # degrees counter-clockwise applied to coded frames (0, 90, 180, 270)
    backend: str


def _probe(path: str) -> tuple[float, int, int, int, int]:
    """(fps, n_frames, coded width, coded height, rotation) from PyAV, plus the checks.

    The first frame is decoded because only a decoded frame carries the display
    matrix reliably, and because a file whose first frame does not decode has no
    frames for us at all.
    """
    try:
        container = av.open(path)
    except av.error.FFmpegError as exc:
        raise VideoReadError(UNREADABLE, str(exc)) from None
    with container:
        if not container.streams.video:
            raise VideoReadError(NO_VIDEO_STREAM, "the file holds no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        n_frames = int(stream.frames or 0)
        rotation = 0
        try:
            for frame in container.decode(stream):
                rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
                break
            else:
                raise VideoReadError(NO_FRAMES, "no frame decodes")
        except av.error.FFmpegError as exc:
            raise VideoReadError(NO_FRAMES, f"first frame does not decode ({exc})") from None
        width, height = stream.codec_context.width, stream.codec_context.height
    if n_frames <= 0:
        n_frames = _count_packets(path)
    if fps <= 0:
        raise VideoReadError(UNREADABLE, "the video stream has no frame rate")
    return fps, n_frames, width, height, (rotation // 90 * 90) % 360


def _count_packets(path: str) -> int:
    """Frame count of containers that do not store it (mkv, webm): demux, don't decode."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size)


def _rotate(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Coded (N, h, w, 3) frames to display orientation (ffmpeg's counter-clockwise angle)."""
    if rotation == 0:
        return frames
    return np.ascontiguousarray(np.rot90(frames, k=rotation // 90, axes=(1, 2)))


class PyAVReader:
    """Sequential decoder: decodes every frame, converts only the requested ones."""

    backend = "pyav"

    def __init__(self, path: str, info: VideoInfo, coded_size: tuple[int, int], threads: int = 1) -> None:
        self.info = info
        self._coded_size = coded_size  # (h, w) asked of the scaler
        self._container = av.open(path)
        self._stream = self._container.streams.video[0]
        self._stream.thread_count = max(1, threads)
        self._frames = self._container.decode(self._stream)
        self._next = 0  # index of the next frame the decoder will give

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Frames at increasing `indices`; fewer come back if the stream ends first."""
        h, w = self._coded_size
        out = []
        for want in indices:
            want = int(want)
            if want < self._next:
                raise ValueError(f"PyAVReader reads forwards only (asked {want}, at {self._next})")
            frame = None
            try:
                while self._next <= want:
                    frame = next(self._frames)
                    self._next += 1
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                log.warning("%s: decoding stopped at frame %d (%s)", self.info.path, self._next, exc)
                break
            rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="BILINEAR").to_ndarray()
            out.append(rgb)
        if not out:
            return np.empty((0, *self._display_size(), 3), dtype=np.uint8)
        return _rotate(np.stack(out), self.info.rotation)

    def _display_size(self) -> tuple[int, int]:
        h, w = self._coded_size
        return (w, h) if self.info.rotation in (90, 270) else (h, w)

    def close(self) -> None:
        self._container.close()


class DecordReader:
    """decord VideoReader scaling in its own filter graph; falls back to PyAV on a decode error.

    decord applies the rotation metadata itself (then scales), so it is asked for
    the display size directly and its frames are not rotated again.

    Memory: decord 0.6's sequential read (`NextFrameImpl`) loops "push one packet,
    pop one frame", and its pop returns at once, without a frame, while the
    decoder thread has not finished one yet; each such miss pushes one packet more
    than is popped, and nothing ever takes the surplus back. The backlog grows
    with every frame read (about half a frame per frame read in our pipeline),
    and when the consumer is slower than the decoder (the network is the bound)
    decord's thread decodes it into RGB frames that wait in its queue: tens of
    MiB per minute of video, freed only when the reader seeks or closes. So every
    `reset_every` frames the reader is reset at the next keyframe: a seek clears
    decord's packet and frame queues, and at a keyframe the seek decodes nothing
    twice (decord keeps the keyframe it checks and returns it). Frames are
    unchanged; memory no longer grows with the video's length.
    """

    backend = "decord"
    reset_every = 256  # frames between queue resets (~10 s at 25 fps); reset at the next keyframe

    def __init__(self, path: str, info: VideoInfo, coded_size: tuple[int, int], threads: int = 1) -> None:
        self.info = info
        self._path = path
        self._coded_size = coded_size
        self._threads = threads
        h, w = coded_size[::-1] if info.rotation in (90, 270) else coded_size  # display (H, W)
        self._display_size = (h, w)
        self._vr = decord.VideoReader(path, width=w, height=h, num_threads=threads)
        self._len = len(self._vr)
        self._keyframes = np.asarray(self._vr.get_key_indices(), dtype=np.int64)
        self._next_reset = self.reset_every  # reset at the first keyframe at or after this frame
        self.resets = 0
        self._fallback: PyAVReader | None = None

    def read(self, indices: np.ndarray) -> np.ndarray:
        if self._fallback is not None:
            return self._fallback.read(indices)
        idx = [int(i) for i in indices if i < self._len]
        try:
            frames = self._read_resetting(idx) if idx else None
        except decord.DECORDError as exc:
            log.warning("%s: decord failed at frames %d..%d (%s); continuing with PyAV",
                        self._path, idx[0], idx[-1], str(exc).splitlines()[0][:200])
            self._fallback = PyAVReader(self._path, self.info, self._coded_size, self._threads)
            self.backend = "decord+pyav"
            return self._fallback.read(indices)
        if frames is None:
            return np.empty((0, *self._display_size, 3), dtype=np.uint8)
        return frames

    def _read_resetting(self, idx: list[int]) -> np.ndarray:
        """`get_batch(idx)`, split at the keyframe where a reset of decord's queues is due."""
        parts = []
        start = 0
        while start < len(idx):
            cut = self._reset_point(idx, start)
            if cut == start:  # idx[start] is that keyframe: reset, then read from it
                self._reset(idx[start])
                cut = self._reset_point(idx, start + 1)
            if cut is None:
                cut = len(idx)
            parts.append(self._vr.get_batch(idx[start:cut]).asnumpy())
            start = cut
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _reset_point(self, idx: list[int], start: int) -> int | None:
        """First position >= start of `idx` whose frame is a keyframe at or after the next reset."""
        rest = np.asarray(idx[start:], dtype=np.int64)
        hit = np.flatnonzero((rest >= self._next_reset) & np.isin(rest, self._keyframes))
        return start + int(hit[0]) if len(hit) else None

    def _reset(self, keyframe: int) -> None:
        """Clear decord's queues: a seek to the start stops its decoder thread and drops both
        queues; the next `get_batch` then seeks accurately to `keyframe`, its first index."""
        self._vr.seek(0)
        self._next_reset = keyframe + self.reset_every
        self.resets += 1

    def close(self) -> None:
        if self._fallback is not None:
            self._fallback.close()
        self._vr = None


def open_video(
    path: str | os.PathLike,
    frame_size: tuple[int, int] = (128, 171),
    backend: str = "auto",
    threads: int = 1,
) -> DecordReader | PyAVReader:
    """Open `path` for reading frames resized to `frame_size` (H, W) in display orientation.

    backend: "auto" (decord, PyAV if decord is missing or cannot open the file),
    "decord" or "pyav". Raises VideoReadError with a typed reason for files that
    hold no readable video.
    """
    path = str(path)
    p = Path(path)
    if not p.is_file():
        raise VideoReadError(MISSING, "no such file")
    if p.stat().st_size == 0:
        raise VideoReadError(EMPTY_FILE, "the file is empty (0 bytes)")
    fps, n_frames, width, height, rotation = _probe(path)
    if n_frames <= 0:
        raise VideoReadError(NO_FRAMES, "the video stream holds no frames")
    transposed = rotation in (90, 270)
    disp_w, disp_h = (height, width) if transposed else (width, height)
    H, W = frame_size
    coded_size = (W, H) if transposed else (H, W)
    info = VideoInfo(path, n_frames, fps, n_frames / fps, disp_w, disp_h, rotation, backend)
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown video backend {backend!r}")
    if backend in ("auto", "decord") and HAVE_DECORD:
        try:
            reader = DecordReader(path, info, coded_size, threads)
        except (decord.DECORDError, RuntimeError) as exc:
            if backend == "decord":
                raise VideoReadError(UNREADABLE, f"decord: {str(exc).splitlines()[0][:200]}") from None
            log.info("%s: decord cannot open it, using PyAV", path)
        else:
            # decord's index is authoritative for what it can return
            info.n_frames = min(info.n_frames, reader._len) if reader._len else info.n_frames
            info.duration = info.n_frames / fps
            info.backend = "decord"
            return reader
    elif backend == "decord":
        raise VideoReadError(UNREADABLE, "decord is not installed")
    info.backend = "pyav"
    return PyAVReader(path, info, coded_size, threads)

