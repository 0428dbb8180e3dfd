"""What each demo video shows: its events, when they happen, and where the object goes.

A video has a plain or noisy background and, one after another, a few events.
In each event one object (a red/green/blue/yellow circle/square/triangle)
appears, disappears, grows, shrinks or moves left/right/up/down.

Why it looks like this: the features come from an UNTRAINED, width-reduced
C3D (frames resized to 128x171, centre-cropped to 112x112, 16-frame clips every
8 frames). Random convolutions keep colour, coarse layout and coarse motion,
little else, so the objects are big (40-50% of the crop side; 22-57% while
growing or shrinking), saturated, always inside the central crop, and move fast
enough that a 16-frame clip sees the motion. (Linear probes on such features,
104 training videos: colour ~0.98, action ~0.8 from the first and last row,
shape only ~0.65 - shape is the hard attribute; 38-50% objects gave 0.54.)
15 fps and 3 events of 1.3-1.9 s give ~6 s (about 10 C3D rows) per video.

Every random draw comes from the generator the caller passes, in a fixed
order: the same generator state gives the same scene.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from etspipe_demo.grammar import ACTIONS, COLOURS, SHAPES, Event
from etspipe_demo.params import DemoParams

# Half-extent of every shape as a fraction of its `size` (the triangle's is 0.575):
# keeping the centre this far from the box edge keeps the whole object in the crop.
_EXTENT = 0.6


@dataclasses.dataclass
class Placed:
    """One event with its segment [start, end] and the object's trajectory (all in seconds / pixels)."""

    event: Event
    start: float
    end: float
    on: float  # object visible in [on, off)
    off: float
    x0: float
    y0: float
    x1: float
    y1: float
    s0: float
    s1: float
    move_from: float  # motion/size change happens in [move_from, move_to]
    move_to: float


def scene_box(p: DemoParams) -> tuple[float, float, float]:
    """Centre (x, y) and half side of the square that stays inside C3D's 112x112 centre crop.

    The crop is taken after resizing to 128x171; mapped back to the video's
    pixels its centre is the frame centre. A 4-pixel margin keeps anti-aliased
    edges and the resize off the crop border.
    """
    crop_half = 56 * p.height / 128
    return p.width / 2, p.height / 2, crop_half - 4


def _random_event(rng: np.random.Generator) -> Event:
    return Event(
        str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), str(rng.choice(list(ACTIONS))))


def random_pair(rng: np.random.Generator) -> tuple[Event, Event]:
    """Two events on different objects, so a pair caption is never ambiguous about who did what."""
    a = _random_event(rng)
    while True:
        b = _random_event(rng)
        if (b.colour, b.shape) != (a.colour, a.shape):
            return a, b


def plan_events(rng: np.random.Generator, p: DemoParams, forced_pair: tuple[Event, Event]) -> list[Event]:
    """The events of one video: random, with `forced_pair` at a random consecutive position.

    Consecutive events use different objects so that every annotated pair is a
    change of object as well as of action.
    """
    pos = int(rng.integers(0, p.n_events - 1))
    events: list[Event | None] = [None] * p.n_events
    events[pos], events[pos + 1] = forced_pair
    for i in range(p.n_events):
        if events[i] is not None:
            continue
        while True:
            e = _random_event(rng)
            neighbours = [events[j] for j in (i - 1, i + 1) if 0 <= j < p.n_events and events[j] is not None]
            if all((n.colour, n.shape) != (e.colour, e.shape) for n in neighbours):
                events[i] = e
                break
    return [e for e in events if e is not None]


def _r2(x: float) -> float:
    return round(float(x), 2)


def _timeline(rng: np.random.Generator, p: DemoParams, n: int) -> tuple[list[tuple[float, float]], list[float], int]:
    """The (start, end) of `n` events, the gaps between them and the video's frame count.

    Times are rounded to 1/100 s, as annotations are written.
    """
    t = _r2(rng.uniform(*p.edge_seconds))
    spans: list[tuple[float, float]] = []
    gaps: list[float] = []
    for i in range(n):
        dur = _r2(rng.uniform(*p.event_seconds))
        spans.append((t, _r2(t + dur)))
        t = _r2(t + dur)
        if i < n - 1:
            gap = _r2(rng.uniform(*p.gap_seconds))
            gaps.append(gap)
            t = _r2(t + gap)
    total = t + rng.uniform(*p.edge_seconds)
    return spans, gaps, int(round(total * p.fps))


def _path(rng: np.random.Generator, action: str, box: tuple[float, float, float],
          size: float) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) of a moving object: across the box in the action's direction."""
    cx, cy, half = box
    travel = half - _EXTENT * size  # centre moves from one side of the box to the other
    across = cx + rng.uniform(-travel, travel) * 0.6, cy + rng.uniform(-travel, travel) * 0.6
    if action == "move_left":
        return cx + travel, cx - travel, across[1], across[1]
    if action == "move_right":
        return cx - travel, cx + travel, across[1], across[1]
    if action == "move_up":
        return across[0], across[0], cy + travel, cy - travel
    return across[0], across[0], cy - travel, cy + travel


def _place_one(rng: np.random.Generator, p: DemoParams, event: Event, span: tuple[float, float],
               gap_before: float | None, gap_after: float | None, duration: float) -> Placed:
    """Where and when the object of one event is seen; a gap is None at the video's edge."""
    cx, cy, half = scene_box(p)
    start, end = span
    dur = end - start
    on, off = start, end
    move_from, move_to = start + 0.1 * dur, end - 0.1 * dur
    size = rng.uniform(0.44, 0.54) * 2 * half
    jitter = half - _EXTENT * size
    x = cx + rng.uniform(-jitter, jitter) * 0.5
    y = cy + rng.uniform(-jitter, jitter) * 0.5
    x0 = x1 = x
    y0 = y1 = y
    s0 = s1 = size
    a = event.action
    if a == "appear":
        # Nothing at the start of the segment; the object pops in and stays into the gap after it
        # (to the end of the video if this is the last event).
        on = start + rng.uniform(0.35, 0.5) * dur
        off = end + 0.5 * gap_after if gap_after is not None else duration + 1.0
    elif a == "disappear":
        on = start - 0.5 * gap_before if gap_before is not None else 0.0
        off = start + rng.uniform(0.5, 0.65) * dur
    elif a in ("grow", "shrink"):
        small, big = 0.24 * 2 * half, 0.62 * 2 * half
        s0, s1 = (small, big) if a == "grow" else (big, small)
        room = half - _EXTENT * big
        x0 = x1 = cx + rng.uniform(-room, room)
        y0 = y1 = cy + rng.uniform(-room, room)
    else:
        x0, x1, y0, y1 = _path(rng, a, (cx, cy, half), size)
    return Placed(event, start, end, on, off, x0, y0, x1, y1, s0, s1, move_from, move_to)


def place_events(rng: np.random.Generator, p: DemoParams, events: list[Event]) -> tuple[list[Placed], int]:
    """Times and trajectories of the events; returns them and the video's frame count."""
    spans, gaps, n_frames = _timeline(rng, p, len(events))
    duration = n_frames / p.fps
    placed = []
    for i, (event, span) in enumerate(zip(events, spans, strict=True)):
        gap_before = gaps[i - 1] if i > 0 else None
        gap_after = gaps[i] if i < len(gaps) else None
        placed.append(_place_one(rng, p, event, span, gap_before, gap_after, duration))
    return placed, n_frames
