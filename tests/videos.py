"""Small synthetic videos for tests, written with PyAV.

The content is deterministic and moves from frame to frame (a bright square that
walks across a colour gradient), so a reader that returns the wrong frame, the
wrong channel order or a frame from the wrong place in time gives visibly
different pixels. Makers for broken inputs sit beside it, so every test that
needs a bad file gets the same kinds of bad file.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from etspipe_demo.mp4 import write_mp4


def synthetic_frame(index: int, height: int, width: int) -> np.ndarray:
    """Frame `index` of the test pattern: an (H, W, 3) uint8 RGB array."""
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    frame = np.empty((height, width, 3), dtype=np.float32)
    frame[..., 0] = x
    frame[..., 1] = y
    frame[..., 2] = (x + y + 16 * index) % 256
    side = max(4, min(height, width) // 4)
    top = (index * 3) % max(1, height - side)
    left = (index * 5) % max(1, width - side)
    frame[top : top + side, left : left + side] = (250, 250, 40)
    return frame.astype(np.uint8)


def write_video(
    path: str | Path,
    n_frames: int = 24,
    size: tuple[int, int] = (64, 80),
    fps: int = 25,
    rotation: int = 0,
    vfr: bool = False,
    codec: str = "libx264",
    frame_fn=synthetic_frame,
) -> Path:
    """Write an H.264 mp4 of `n_frames` frames of `size` (H, W) at `fps`, through the project's writer.

    `rotation` (degrees) stores display-rotation metadata without changing the
    coded frames; `vfr` gives the frames uneven timestamps (variable frame rate).
    Odd sizes are allowed (coded in yuv444p).
    """
    path = Path(path)
    height, width = size
    ticks = [0]  # timestamps in 1/(10 fps): 10 ticks a frame, or alternately 5 and 15
    for i in range(n_frames - 1):
        ticks.append(ticks[-1] + ((5 + 10 * (i % 2)) if vfr else 10))
    write_mp4(path, (frame_fn(i, height, width) for i in range(n_frames)), fps, crf=12, preset="ultrafast",
              codec=codec, time_base=Fraction(1, fps * 10), pts=ticks, rotation=rotation)
    return path


def write_zero_byte(path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_text_as_video(path: str | Path) -> Path:
    path = Path(path)
    path.write_text("this is not a video, only text with a video's name\n" * 20)
    return path


def write_truncated(path: str | Path, n_frames: int = 40, keep: float = 0.5) -> Path:
    """A good mp4 cut to `keep` of its bytes (its index, at the end, is lost)."""
    path = Path(path)
    write_video(path, n_frames=n_frames)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_audio_only(path: str | Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    """An mp4 with one AAC audio stream and no video stream."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        n = int(seconds * rate)
        samples = (0.2 * np.sin(np.arange(n) * 2 * np.pi * 440 / rate)).astype(np.float32)[None, :]
        step = 1024
        for start in range(0, n, step):
            frame = av.AudioFrame.from_ndarray(samples[:, start : start + step], format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_no_decodable_frames(path: str | Path, n_frames: int = 24) -> Path:
    """An mp4 whose container and index are intact but whose frame data is garbage.

    The mdat payload is overwritten with noise, so a reader can open the file and
    sees a video stream with frames, but none of them decodes.
    """
    path = Path(path)
    write_video(path, n_frames=n_frames)
    data = bytearray(path.read_bytes())
    pos = data.find(b"mdat")
    if pos < 4:
        raise RuntimeError("no mdat box in the written mp4")
    size = int.from_bytes(data[pos - 4 : pos], "big")
    rng = np.random.default_rng(0)
    start, end = pos + 4, pos - 4 + size
    data[start:end] = rng.integers(0, 256, end - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path
