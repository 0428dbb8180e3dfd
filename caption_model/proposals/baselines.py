"""Proposal baselines the learned model must beat: multi-scale sliding windows and random segments.

Both take a video's duration and a number of proposals, so a comparison gives
every method the same number per video. Sliding windows use lengths of
``duration / 2**s`` (whole video, halves, quarters, ...) with a stride of half
a window; they are ranked longest scale first (a fixed prior, no learning), so
a budget of N takes the coarse scales whole before the finer ones. Random
segments draw a start and an end uniformly (seeded per video).
"""

from __future__ import annotations

import hashlib

import numpy as np


def sliding_windows(duration: float, n: int, overlap: float = 0.5) -> list[dict]:
    """`n` multi-scale windows over ``[0, duration]``, coarse scales first, scored by that rank."""
    out: list[dict] = []
    seen: set[tuple[float, float]] = set()
    scale = 0
    while len(out) < n and scale < 30:
        length = duration / 2**scale
        step = length * (1.0 - overlap)
        start = 0.0
        while start + length <= duration + 1e-9 and len(out) < n:
            key = (round(start, 6), round(min(start + length, duration), 6))
            if key not in seen:
                seen.add(key)
                out.append({"segment": [key[0], key[1]], "score": 1.0 - len(out) / max(n, 1)})
            start += step
        scale += 1
    return out


def random_segments(duration: float, n: int, seed: int, video_id: str) -> list[dict]:
    """`n` segments with uniform random start and end in ``[0, duration]`` (seeded by the video id)."""
    key = int.from_bytes(hashlib.sha1(f"{seed}:{video_id}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(key)
    ends = np.sort(rng.uniform(0.0, duration, size=(n, 2)), axis=1)
    return [{"segment": [float(s), float(e)], "score": 1.0 - i / max(n, 1)} for i, (s, e) in enumerate(ends)]
