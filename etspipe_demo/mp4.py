"""The project's one MP4 writer (H.264 through PyAV): the demo's videos and the tests' test videos.

Reproducible bytes are part of its contract (the demo's cache and tests compare
files), so every encoder choice that could vary between runs is fixed here:
one encoder thread, no B-frames, a fixed preset, and frames handed over as
rows of a fixed pixel format.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: int, *, crf: int = 18,
              preset: str = "veryfast", codec: str = "libx264", time_base: Fraction | None = None,
              pts: Sequence[int] | None = None, rotation: int = 0) -> int:
    """Encode (H, W, 3) uint8 RGB frames into `path`; returns the number of frames written.

    The file appears whole or not at all (written beside it, then renamed).
    `time_base` (default 1/fps) and `pts` (default 0, 1, 2, ...) give the frame
    timestamps, so uneven (variable frame rate) timing can be written; `rotation`
    (degrees) stores display-rotation metadata without changing the coded
    frames. Odd frame sizes are coded in yuv444p, since 4:2:0 chroma needs even
    dimensions; even ones in yuv420p, what real videos use.
    """
    import av

    path = Path(path)
    tb = time_base or Fraction(1, fps)
    tmp = path.with_name(path.name + ".part")
    n = 0
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = _open_stream(container, frame.shape, fps, crf, preset, codec, tb, rotation)
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = n if pts is None else pts[n]
            vf.time_base = tb
            n += 1
            for packet in stream.encode(vf):
                container.mux(packet)
        if stream is None:
            raise ValueError(f"no frames to write into {path}")
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return n


def _open_stream(container, shape: tuple[int, ...], fps: int, crf: int, preset: str, codec: str,
                 time_base: Fraction, rotation: int):
    height, width = shape[:2]
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv444p" if height % 2 or width % 2 else "yuv420p"
    stream.options = {"crf": str(crf), "preset": preset, "bf": "0", "threads": "1"}
    stream.codec_context.time_base = time_base
    if rotation:
        stream.set_display_rotation(rotation)
    return stream
