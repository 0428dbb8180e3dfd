"""Draw a planned scene (`etspipe_demo.scenes`) into RGB frames.

Only numpy: the frames go to the one MP4 writer (`etspipe_demo.mp4`) and from
there through the same decord + C3D path as a user's videos.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from etspipe_demo.grammar import COLOURS
from etspipe_demo.params import DemoParams
from etspipe_demo.scenes import Placed


def background(rng: np.random.Generator, p: DemoParams, noisy: bool) -> np.ndarray:
    """A muted background (float32 HxWx3): plain colour, or coarse blotches plus fine grain."""
    base = rng.uniform(35, 110) + rng.uniform(-15, 15, size=3)
    bg = np.broadcast_to(base.astype(np.float32), (p.height, p.width, 3)).copy()
    if noisy:
        # Mostly brightness: coloured blotches would compete with the objects' colours.
        blocks = (p.height // 16 + 1, p.width // 16 + 1, 1)
        coarse = rng.normal(0, 14, size=blocks) + rng.normal(0, 4, size=blocks[:2] + (3,))
        bg += np.kron(coarse.astype(np.float32), np.ones((16, 16, 1), np.float32))[: p.height, : p.width]
        bg += rng.normal(0, 8, size=(p.height, p.width, 1)).astype(np.float32)
    return bg


class Canvas:
    """Pixel grids and shape masks for one frame size (built once, reused for every frame)."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5

    def mask(self, shape: str, x: float, y: float, size: float) -> tuple[tuple[slice, slice], np.ndarray]:
        """The box around a shape and its coverage there (0..1, one pixel of soft edge).

        Circle, square and triangle of one `size` have about the same area, so
        size alone never gives the shape away. Only the box is computed: the
        objects cover a small part of the frame.
        """
        reach = 0.7 * size + 2
        box = (slice(max(0, int(y - reach)), min(self.height, int(y + reach) + 1)),
               slice(max(0, int(x - reach)), min(self.width, int(x + reach) + 1)))
        dx, dy = self.xx[box] - x, self.yy[box] - y
        if shape == "circle":
            dist = np.sqrt(dx * dx + dy * dy) - size / 2
        elif shape == "square":
            dist = np.maximum(np.abs(dx), np.abs(dy)) - 0.45 * size
        else:  # an upward triangle, base and height 1.15*size, centred on its box
            side = 1.15 * size
            d_base = dy - side / 2
            d_sides = (np.abs(dx) - (dy + side / 2) / 2) / np.sqrt(1.25)
            dist = np.maximum(d_base, d_sides)
        return box, np.clip(0.5 - dist, 0.0, 1.0)[..., None]


def _progress(u: float) -> float:
    """Linear progress of a motion or size change, held at 0 before and 1 after it."""
    return min(max(u, 0.0), 1.0)


def render(placed: list[Placed], bg: np.ndarray, canvas: Canvas, n_frames: int, fps: int,
           grain: float, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The frames (HxWx3 uint8 RGB) of one video, one at a time.

    The per-frame grain cycles through a small bank of noisy backgrounds: drawing
    fresh noise for every frame would cost more than encoding it.
    """
    n_bank = 7 if grain else 1
    bank = [np.clip(bg + rng.standard_normal(bg.shape, dtype=np.float32) * grain, 0, 255).astype(np.uint8)
            for _ in range(n_bank)]
    for k in range(n_frames):
        t = (k + 0.5) / fps
        frame = bank[k % n_bank].copy()
        for ev in placed:
            if not ev.on <= t < ev.off:
                continue
            u = _progress((t - ev.move_from) / max(ev.move_to - ev.move_from, 1e-6))
            x = ev.x0 + (ev.x1 - ev.x0) * u
            y = ev.y0 + (ev.y1 - ev.y0) * u
            s = ev.s0 + (ev.s1 - ev.s0) * u
            box, m = canvas.mask(ev.event.shape, x, y, s)
            colour = np.asarray(COLOURS[ev.event.colour], np.float32)
            frame[box] = np.clip(frame[box] * (1 - m) + colour * m + 0.5, 0, 255).astype(np.uint8)
        yield frame
