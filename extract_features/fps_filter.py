"""Which source frames ffmpeg's ``fps`` filter keeps, computed from frame indices alone.

ActivityNet's frame features were made with ``ffmpeg -vf fps=5,scale=320:240``
(../shared/SEED.md). To make rows of the same meaning from a user's video, the
extractor must look at the frames that filter would have kept, but decoding
through a filter graph would convert and scale every frame only to drop five in
six. Knowing the rule, the reader is asked for exactly the kept frames by index.

The rule (libavfilter/vf_fps.c, default ``round=near``, ``eof_action=round``;
checked against the libavfilter PyAV bundles in tests/test_resnet_extract.py):

* every input frame's timestamp is rounded to the nearest output tick (ticks of
  1/5 s; a half rounds away from zero): frame j at t_j gets k_j = round(5 t_j);
* output tick n (time n/5 s) shows the *last* input frame with k_j <= n, i.e.
  the last frame with t_j < (n + 1/2)/5. That is not the frame nearest to n/5:
  at 30 fps, ticks 0, 1, 2 show frames 2, 8, 14 (t = n/5 + 1/15 s), because
  frames 0..2 all round to tick 0 and the last of them wins;
* the output ends at the end-of-stream time rounded the same way. The ffmpeg
  command line (since 6.1) puts it at the last frame's end, t_last + 1/fps, so a
  video of N frames gives round(5 N / fps) rows (older ffmpeg gave one row more or
  fewer at the very end; nothing else differs).

Here the video is taken as constant frame rate from 0 s (frame j at j / fps),
the same assumption the C3D path makes; ffmpeg's command line also starts the
first frame at 0 s. One deviation: a video shorter than half an output interval
(round(5 N / fps) == 0), which ffmpeg turns into no frame at all, gets one row
from its first kept frame, so that every video has a row (as C3D's padding rule).
Exact rational arithmetic (the rate as a fraction, 30000/1001 for 29.97 fps) keeps
the half-way cases where ffmpeg puts them.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

RULE = ("ffmpeg fps filter (round=near, eof_action=round): row i shows the last source frame whose "
        "time rounds to a tick <= i/fps; round(fps * n_frames / native_fps) rows, at least 1")


def as_fraction(rate: float | Fraction) -> Fraction:
    """A frame rate as the fraction it stands for (29.97002997... -> 30000/1001)."""
    if isinstance(rate, Fraction):
        return rate
    return Fraction(rate).limit_denominator(1_000_000)


def fps_filter_count(n_frames: int, native_fps: float | Fraction, target_fps: float | Fraction) -> int:
    """Rows the rule gives a video of `n_frames` at `native_fps` (at least 1 when it has a frame)."""
    if n_frames <= 0:
        return 0
    ratio = as_fraction(target_fps) / as_fraction(native_fps)
    # round(n_frames * ratio), halves up, in integers: floor((2 N num + den) / (2 den))
    return max(1, (2 * n_frames * ratio.numerator + ratio.denominator) // (2 * ratio.denominator))


def fps_filter_positions(n_frames: int, native_fps: float | Fraction, target_fps: float | Fraction) -> np.ndarray:
    """Source frame index of each output frame of ``fps=target_fps`` (module docstring).

    Output n shows the last frame j with j / native_fps < (n + 1/2) / target_fps,
    that is j = ceil((n + 1/2) * native_fps / target_fps) - 1, capped at the last frame.
    """
    r, f = as_fraction(native_fps), as_fraction(target_fps)
    if r <= 0 or f <= 0:
        raise ValueError(f"frame rates must be positive, got {native_fps} and {target_fps}")
    step = r / f  # source frames per output tick, exactly
    n = np.arange(fps_filter_count(n_frames, r, f), dtype=np.int64)
    # ceil((2n + 1) * p / (2 q)) - 1 for step = p / q, in integers (no float lands a half on the wrong side)
    num, den = (2 * n + 1) * step.numerator, 2 * step.denominator
    idx = -(-num // den) - 1
    return np.minimum(idx, max(n_frames - 1, 0))
