"""The built-in demo data set: short H.264 videos of coloured shapes with captioned events.

A newcomer has no ActivityNet on disk, so `etspipe demo` makes its own data: real
MP4 files that go through the same decord + C3D path as real videos, and
ActivityNet-format annotation files (`train.json`, `val.json`, `test.json`,
split by video) that the caption model reads like the real ones.

What a video shows
------------------
A plain or noisy background and, one after another, a few *events*. In each event
one object (a red/green/blue/yellow circle/square/triangle) appears, disappears,
grows, shrinks or moves left/right/up/down. Each event gets a ground-truth segment
and a caption from a small grammar (`caption_for`):

    A red circle moves to the left.
    A blue square grows and then a green triangle moves up.

The second form is an *order-dependent* segment: it spans two consecutive events
and its caption names them in time order. Pairs are generated in twins, the same
two events in both orders in two videos of the same split, so the bag of feature
rows of such a segment is (nearly) the same for both captions: only a model that
uses the order of the rows in time can tell them apart. This is what the
temporal-attention benchmark measures. (Single events are time-reversal pairs too
- appears/disappears, grows/shrinks, left/right, up/down - but a clip-level 3-D
convolution sees their direction inside one clip, so they are not flagged.)

Why it looks like this
----------------------
The features come from an UNTRAINED, width-reduced C3D: frames resized to
128x171, centre-cropped to 112x112, 16-frame clips every 8 frames. Random
convolutions keep colour, coarse layout and coarse motion, little else, so the
objects are big (40-50% of the crop side; 22-57% while growing or shrinking),
saturated, always inside the central crop, and move fast enough that a 16-frame
clip sees the motion. (Linear probes on such features, 104 training videos:
colour ~0.98, action ~0.8 from the first and last row, shape only ~0.65 - shape
is the hard attribute; 38-50% objects gave 0.54.) Videos
are 128x172 (even width for yuv420p; the resize to 171 is a 0.6% stretch) so the
crop sees the scene without distortion. 15 fps and 3 events of 1.3-1.9 s give
~6 s (about 10 C3D rows) per video: the default 150 videos are ~1,500 clips,
about a minute of extraction with a C3D of width 1/8 on two idle CPU cores.

Side files
----------
`<split>_meta.json` holds, per video, the events (object, action, times) and per
segment (in the same order as the annotation's `timestamps`) its events and the
flag `order_dependent`; the ActivityNet JSON itself stays standard.
`manifest.json` records the parameters; a second call with the same parameters
reuses the files instead of writing them again.

Correctness of a caption (`caption_correct`)
--------------------------------------------
A predicted caption is *correct* when it parses under the demo grammar (case,
punctuation and the article a/an/the are ignored; "moves left" is accepted for
"moves to the left"; events are joined by "then" or "and then") and its sequence
of (colour, shape, action) events equals the reference sequence exactly: the
right objects, the right events, in the right order, nothing missing or extra.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from etspipe.errors import UserError
from etspipe.progress import progress_bar

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Bump when the same parameters would give different files, so old sets are not reused.
GENERATOR_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")

# Saturated RGB colours, far from each other and from the muted backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (235, 30, 30),
    "green": (30, 205, 50),
    "blue": (40, 70, 240),
    "yellow": (245, 225, 30),
}
SHAPES = ("circle", "square", "triangle")
# Action id -> the words of the caption.
ACTIONS: dict[str, str] = {
    "appear": "appears",
    "disappear": "disappears",
    "grow": "grows",
    "shrink": "shrinks",
    "move_left": "moves to the left",
    "move_right": "moves to the right",
    "move_up": "moves up",
    "move_down": "moves down",
}


class Event(NamedTuple):
    """What happens in one event: which object does what (the unit a caption names)."""

    colour: str
    shape: str
    action: str


@dataclasses.dataclass(frozen=True)
class DemoParams:
    """Everything that decides the generated data; equal params (and seed) give equal files."""

    n_videos: int = 150
    seed: int = 0
    fps: int = 15
    height: int = 128
    width: int = 172
    n_events: int = 3
    pairs_per_video: int = 2
    event_seconds: tuple[float, float] = (1.3, 1.9)
    gap_seconds: tuple[float, float] = (0.15, 0.4)
    edge_seconds: tuple[float, float] = (0.2, 0.5)
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    background: str = "mixed"  # plain | noisy | mixed (each video plain or noisy at random)
    crf: int = 18

    def check(self) -> None:
        """Reject parameters that cannot give a usable data set, with one clear line."""
        if self.n_videos < 6:
            raise UserError(f"demo data: n_videos must be at least 6 (one twin pair per split), got {self.n_videos}")
        if self.n_events < 2:
            raise UserError(f"demo data: n_events must be at least 2 (pairs need two events), got {self.n_events}")
        if not 1 <= self.pairs_per_video <= self.n_events - 1:
            raise UserError(
                f"demo data: pairs_per_video must be in 1..{self.n_events - 1} for {self.n_events} events,"
                f" got {self.pairs_per_video}")
        if self.background not in ("plain", "noisy", "mixed"):
            raise UserError(f"demo data: background must be plain, noisy or mixed, got {self.background!r}")
        if self.height < 128 or self.width < 172 or self.height % 2 or self.width % 2:
            raise UserError(f"demo data: frame size must be even and at least 128x172, got {self.height}x{self.width}")
        if self.fps < 5:
            raise UserError(f"demo data: fps must be at least 5, got {self.fps}")
        if len(self.split_fractions) != 3 or min(self.split_fractions) <= 0:
            raise UserError(f"demo data: split_fractions must be three positive numbers, got {self.split_fractions}")

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# --------------------------------------------------------------------------- grammar


def caption_for(events: Sequence[Event]) -> str:
    """The caption of one segment: its events in time order, joined by "and then"."""
    if not events:
        raise ValueError("a caption needs at least one event")
    parts = [f"a {e.colour} {e.shape} {ACTIONS[e.action]}" for e in events]
    text = " and then ".join(parts)
    return text[0].upper() + text[1:] + "."


_ARTICLES = {"a", "an", "the"}
_ACTION_WORDS: dict[tuple[str, ...], str] = {tuple(words.split()): a for a, words in ACTIONS.items()}
_ACTION_WORDS.update({("moves", "left"): "move_left", ("moves", "right"): "move_right"})


def _parse_event(tokens: list[str], i: int) -> tuple[Event, int] | None:
    if i < len(tokens) and tokens[i] in _ARTICLES:
        i += 1
    if i + 1 >= len(tokens) or tokens[i] not in COLOURS or tokens[i + 1] not in SHAPES:
        return None
    colour, shape = tokens[i], tokens[i + 1]
    i += 2
    # Longest action phrase first, so "moves to the left" wins over a shorter prefix.
    for words in sorted(_ACTION_WORDS, key=len, reverse=True):
        if tuple(tokens[i : i + len(words)]) == words:
            return Event(colour, shape, _ACTION_WORDS[words]), i + len(words)
    return None


def parse_caption(text: str) -> list[Event] | None:
    """The events a caption names, in order, or None if it is not a sentence of the grammar.

    Lenient only where meaning does not change: case, punctuation, the article,
    "moves left" for "moves to the left", "then" for "and then". Anything else -
    an unknown word, `<unk>`, a missing action, trailing words - makes it None.
    """
    tokens = re.findall(r"[a-z]+|<[a-z]+>", text.lower())
    events: list[Event] = []
    i = 0
    while True:
        parsed = _parse_event(tokens, i)
        if parsed is None:
            return None
        event, i = parsed
        events.append(event)
        if i == len(tokens):
            return events
        if tokens[i : i + 2] == ["and", "then"]:
            i += 2
        elif tokens[i] == "then":
            i += 1
        else:
            return None


def caption_correct(predicted: str, reference: str | Sequence[Event] | Sequence[Sequence[str]]) -> bool:
    """True when `predicted` names the right objects and events in the right order.

    `reference` is a reference caption or its event list (from the meta file).
    Correct means: `predicted` parses (`parse_caption`) and its sequence of
    (colour, shape, action) equals the reference sequence exactly.
    """
    if isinstance(reference, str):
        ref = parse_caption(reference)
        if ref is None:
            raise ValueError(f"reference caption is not in the demo grammar: {reference!r}")
    else:
        ref = [Event(*e) for e in reference]
    pred = parse_caption(predicted)
    return pred is not None and pred == ref


# --------------------------------------------------------------------------- scenes


@dataclasses.dataclass
class _Placed:
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


def _scene_box(p: DemoParams) -> tuple[float, float, float]:
    """Centre (x, y) and half side of the square that stays inside C3D's 112x112 centre crop.

    The crop is taken after resizing to 128x171; mapped back to the video's
    pixels its centre is the frame centre. A 4-pixel margin keeps anti-aliased
    edges and the resize off the crop border.
    """
    crop_half = 56 * p.height / 128
    return p.width / 2, p.height / 2, crop_half - 4


# Half-extent of every shape as a fraction of its `size` (the triangle's is 0.575):
# keeping the centre this far from the box edge keeps the whole object in the crop.
_EXTENT = 0.6


def _random_event(rng: np.random.Generator) -> Event:
    return Event(
        str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), str(rng.choice(list(ACTIONS))))


def _random_pair(rng: np.random.Generator) -> tuple[Event, Event]:
    """Two events on different objects, so a pair caption is never ambiguous about who did what."""
    a = _random_event(rng)
    while True:
        b = _random_event(rng)
        if (b.colour, b.shape) != (a.colour, a.shape):
            return a, b


def _plan_events(rng: np.random.Generator, p: DemoParams, forced_pair: tuple[Event, Event]) -> list[Event]:
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


def _place_events(rng: np.random.Generator, p: DemoParams, events: list[Event]) -> tuple[list[_Placed], int]:
    """Times and trajectories of the events; returns them and the video's frame count."""
    cx, cy, half = _scene_box(p)

    def r2(x: float) -> float:
        return round(float(x), 2)

    t = r2(rng.uniform(*p.edge_seconds))
    starts_ends: list[tuple[float, float]] = []
    gaps: list[float] = []
    for i in range(len(events)):
        dur = r2(rng.uniform(*p.event_seconds))
        starts_ends.append((t, r2(t + dur)))
        t = r2(t + dur)
        if i < len(events) - 1:
            gap = r2(rng.uniform(*p.gap_seconds))
            gaps.append(gap)
            t = r2(t + gap)
    total = t + rng.uniform(*p.edge_seconds)
    n_frames = int(round(total * p.fps))
    duration = n_frames / p.fps

    placed: list[_Placed] = []
    for i, (event, (start, end)) in enumerate(zip(events, starts_ends, strict=True)):
        dur = end - start
        gap_before = gaps[i - 1] if i > 0 else start
        gap_after = gaps[i] if i < len(gaps) else duration - end
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
            off = end + 0.5 * gap_after if i < len(events) - 1 else duration + 1.0
        elif a == "disappear":
            on = start - 0.5 * gap_before if i > 0 else 0.0
            off = start + rng.uniform(0.5, 0.65) * dur
        elif a in ("grow", "shrink"):
            small, big = 0.24 * 2 * half, 0.62 * 2 * half
            s0, s1 = (small, big) if a == "grow" else (big, small)
            room = half - _EXTENT * big
            x0 = x1 = cx + rng.uniform(-room, room)
            y0 = y1 = cy + rng.uniform(-room, room)
        else:
            travel = half - _EXTENT * size  # centre moves from one side of the box to the other
            across = cx + rng.uniform(-travel, travel) * 0.6, cy + rng.uniform(-travel, travel) * 0.6
            if a == "move_left":
                x0, x1, y0, y1 = cx + travel, cx - travel, across[1], across[1]
            elif a == "move_right":
                x0, x1, y0, y1 = cx - travel, cx + travel, across[1], across[1]
            elif a == "move_up":
                x0, x1, y0, y1 = across[0], across[0], cy + travel, cy - travel
            else:
                x0, x1, y0, y1 = across[0], across[0], cy - travel, cy + travel
        placed.append(_Placed(event, start, end, on, off, x0, y0, x1, y1, s0, s1, move_from, move_to))
    return placed, n_frames


def _background(rng: np.random.Generator, p: DemoParams, noisy: bool) -> np.ndarray:
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


class _Canvas:
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


def _render(placed: list[_Placed], bg: np.ndarray, canvas: _Canvas, n_frames: int, fps: int,
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


def _write_mp4(path: Path, frames: Iterator[np.ndarray], p: DemoParams) -> int:
    """Encode frames as H.264 (yuv420p, no B-frames, one thread so the bytes are reproducible)."""
    import av

    tmp = path.with_name(path.name + ".part")
    n = 0
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=p.fps)
        stream.width, stream.height = p.width, p.height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(p.crf), "preset": "veryfast", "bf": "0", "threads": "1"}
        stream.codec_context.time_base = Fraction(1, p.fps)
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = n
            vf.time_base = Fraction(1, p.fps)
            n += 1
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return n


# --------------------------------------------------------------------------- the data set


def _video_ids(n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"v_demo{i + 1:0{width}d}" for i in range(n)]


def _split_groups(n_groups: int, fractions: Sequence[float], rng: np.random.Generator) -> list[str]:
    """Split name per twin group: proportional to `fractions`, at least one group per split."""
    total = sum(fractions)
    counts = [max(1, int(round(n_groups * f / total))) for f in fractions[1:]]
    n_train = n_groups - sum(counts)
    if n_train < 1:
        counts = [1, 1]
        n_train = n_groups - 2
    names = ["train"] * n_train + ["val"] * counts[0] + ["test"] * counts[1]
    return [names[i] for i in rng.permutation(n_groups)]


def _segments(placed: list[_Placed], p: DemoParams, pair_at: int, rng: np.random.Generator) -> list[dict]:
    """The annotated segments of one video: every event, and `pairs_per_video` consecutive pairs.

    The twin pair (`pair_at`, `pair_at + 1`) is always among the pairs.
    """
    segs = [{"timestamp": [ev.start, ev.end], "events": [list(ev.event)], "order_dependent": False,
             "event_index": [i]} for i, ev in enumerate(placed)]
    others = [i for i in range(len(placed) - 1) if i != pair_at]
    chosen = [pair_at] + [int(i) for i in rng.permutation(others)[: p.pairs_per_video - 1]]
    for i in sorted(chosen):
        a, b = placed[i], placed[i + 1]
        segs.append({"timestamp": [a.start, b.end], "events": [list(a.event), list(b.event)],
                     "order_dependent": True, "event_index": [i, i + 1]})
    segs.sort(key=lambda s: (s["timestamp"][0], s["timestamp"][1]))
    for s in segs:
        s["sentence"] = caption_for([Event(*e) for e in s["events"]])
    return segs


def _make_group(job: tuple[DemoParams, int, str]) -> list[tuple[str, dict, dict]]:
    """Write the two videos of twin group `g` (same pair of events, opposite orders).

    Every random choice comes from a generator seeded by (seed, group, twin), so
    a video does not depend on how many videos are made or on which worker
    makes it. Returns (video id, annotation entry, meta entry) per video.
    """
    params, g, videos_dir = job
    ids = _video_ids(params.n_videos)
    canvas = _Canvas(params.height, params.width)
    pair = _random_pair(np.random.default_rng([params.seed, g]))
    out = []
    for twin in range(2):
        index = 2 * g + twin
        if index >= params.n_videos:
            break
        vid = ids[index]
        rng = np.random.default_rng([params.seed, g, twin])
        forced = pair if twin == 0 else (pair[1], pair[0])
        events = _plan_events(rng, params, forced)
        pair_at = next(i for i in range(len(events) - 1) if (events[i], events[i + 1]) == forced)
        placed, n_frames = _place_events(rng, params, events)
        noisy = params.background == "noisy" or (params.background == "mixed" and bool(rng.random() < 0.5))
        bg = _background(rng, params, noisy)
        frames = _render(placed, bg, canvas, n_frames, params.fps, 3.0 if noisy else 0.0, rng)
        written = _write_mp4(Path(videos_dir) / f"{vid}.mp4", frames, params)
        duration = round(written / params.fps, 4)
        segs = _segments(placed, params, pair_at, rng)
        annotation = {
            "duration": duration,
            "timestamps": [s["timestamp"] for s in segs],
            "sentences": [s["sentence"] for s in segs],
        }
        meta = {
            "duration": duration, "fps": params.fps, "n_frames": written,
            "background": "noisy" if noisy else "plain",
            "events": [{"colour": ev.event.colour, "shape": ev.event.shape, "action": ev.event.action,
                        "start": ev.start, "end": ev.end, "caption": caption_for([ev.event])}
                       for ev in placed],
            "segments": [{k: s[k] for k in ("timestamp", "sentence", "events", "order_dependent",
                                            "event_index")} for s in segs],
        }
        out.append((vid, annotation, meta))
    return out


def _worker_count(workers: int) -> int:
    """0 means one process per CPU core (at most 8); generation is CPU-bound and embarrassingly parallel."""
    if workers > 0:
        return workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _paths(out_dir: Path) -> dict[str, Path]:
    paths = {"out_dir": out_dir, "videos_dir": out_dir / "videos", "manifest": out_dir / MANIFEST_NAME}
    for split in SPLITS:
        paths[split] = out_dir / f"{split}.json"
        paths[f"{split}_meta"] = out_dir / f"{split}_meta.json"
    return paths


def _reusable(paths: dict[str, Path], params: DemoParams) -> dict | None:
    """The old manifest when it was written for the same parameters and all its files are there."""
    try:
        manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (manifest.get("format_version"), manifest.get("generator_version")) != (FORMAT_VERSION, GENERATOR_VERSION) \
            or manifest.get("params") != params.to_json():
        return None
    videos = [paths["videos_dir"] / f"{vid}.mp4" for vid in manifest.get("video_ids", [])]
    needed = [paths[k] for k in SPLITS] + [paths[f"{k}_meta"] for k in SPLITS] + videos
    if not videos or not all(f.is_file() for f in needed):
        return None
    return manifest


def _result(paths: dict[str, Path], manifest: dict, reused: bool) -> dict:
    out: dict[str, Any] = {k: str(v) for k, v in paths.items()}
    counts = manifest["counts"]
    out["counts"] = counts
    out["params"] = manifest["params"]
    out["reused"] = reused
    out["seconds"] = manifest.get("seconds")
    out["summary"] = (
        f"{counts['videos']} videos ({counts['seconds_of_video']:.0f} s, ~{counts['c3d_rows']} C3D rows), "
        + ", ".join(f"{s} {counts[s]['videos']} videos / {counts[s]['segments']} segments "
                    f"({counts[s]['order_dependent']} order-dependent)" for s in SPLITS)
        + (" [reused]" if reused else ""))
    return out


def generate_demo_dataset(out_dir: str | Path, n_videos: int = DemoParams.n_videos, seed: int = 0,
                          *, force: bool = False, progress: bool = False, workers: int = 1,
                          **overrides: Any) -> dict:
    """Write the demo videos and annotations into `out_dir`, or reuse them if already there.

    Layout: `videos/v_demoNNNN.mp4`, `{train,val,test}.json` (ActivityNet format),
    `{train,val,test}_meta.json` (events and order flags) and `manifest.json`
    (the parameters; written last, so an interrupted run is redone, not reused).
    Deterministic: the same parameters give the same files. `overrides` are
    other `DemoParams` fields (fps, n_events, pairs_per_video, background, ...).
    `workers` processes write the videos (0: one per core; the files do not
    depend on it). The default is 1, in-process: the default set takes about
    10 s that way, and worker processes are started with `spawn`, which needs
    the caller's main module to be importable (a script with an
    `if __name__ == "__main__":` guard, the `etspipe` command, pytest).
    `force` writes everything again; `progress` shows a bar.

    Returns the paths (`videos_dir`, `train`, `val`, `test`, `<split>_meta`,
    `manifest`), `counts` per split, `params`, `reused`, `seconds` and a one-line
    `summary`.
    """
    unknown = set(overrides) - {f.name for f in dataclasses.fields(DemoParams)}
    if unknown:
        raise UserError(f"demo data: unknown parameter(s) {', '.join(sorted(unknown))}")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    params = DemoParams(n_videos=int(n_videos), seed=int(seed), **overrides)
    params.check()
    out_dir = Path(out_dir)
    paths = _paths(out_dir)
    if not force:
        manifest = _reusable(paths, params)
        if manifest is not None:
            log.info("demo data in %s already made with these parameters; reusing it", out_dir)
            return _result(paths, manifest, reused=True)

    t0 = time.perf_counter()
    try:
        paths["videos_dir"].mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create demo data folder {paths['videos_dir']}: {exc.strerror}") from None
    old = paths["manifest"]
    if old.exists():
        _remove_old_videos(paths)
        old.unlink()

    ids = _video_ids(params.n_videos)
    n_groups = (params.n_videos + 1) // 2
    split_rng = np.random.default_rng([params.seed, 0x5eed])
    group_split = _split_groups(n_groups, params.split_fractions, split_rng)
    annotations: dict[str, dict] = {s: {} for s in SPLITS}
    metas: dict[str, dict] = {s: {} for s in SPLITS}
    jobs = [(params, g, str(paths["videos_dir"])) for g in range(n_groups)]
    n_workers = min(_worker_count(workers), n_groups)
    if n_workers > 1:
        # Processes (the encoder holds the GIL, threads gain nothing); spawn, not fork, because
        # the caller may hold torch/OpenMP threads that a forked child would inherit half-way.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(n_workers, mp_context=ctx) as pool:
            made = pool.map(_make_group, jobs, chunksize=4)
            made = list(progress_bar(made, total=n_groups, desc="demo videos", unit="pair", enabled=progress))
    else:
        made = [_make_group(j) for j in progress_bar(jobs, desc="demo videos", unit="pair", enabled=progress)]
    for g, videos in enumerate(made):
        split = group_split[g]
        for vid, annotation, meta in videos:
            annotations[split][vid] = annotation
            metas[split][vid] = meta

    counts: dict[str, Any] = {"videos": params.n_videos}
    total_frames = 0
    rows = 0
    for split in SPLITS:
        _write_json(paths[split], annotations[split])
        _write_json(paths[f"{split}_meta"], {"format_version": FORMAT_VERSION, "split": split,
                                              "videos": metas[split]})
        segs = [s for m in metas[split].values() for s in m["segments"]]
        counts[split] = {"videos": len(metas[split]), "segments": len(segs),
                         "order_dependent": sum(s["order_dependent"] for s in segs)}
        for m in metas[split].values():
            total_frames += m["n_frames"]
            rows += max(1, (m["n_frames"] - 16) // 8 + 1)
    counts["seconds_of_video"] = round(total_frames / params.fps, 2)
    counts["frames"] = total_frames
    counts["c3d_rows"] = rows
    seconds = round(time.perf_counter() - t0, 2)
    manifest = {"generator": "etspipe.demo_data", "format_version": FORMAT_VERSION,
                "generator_version": GENERATOR_VERSION,
                "params": params.to_json(), "video_ids": ids, "counts": counts, "seconds": seconds}
    _write_json(paths["manifest"], manifest)
    result = _result(paths, manifest, reused=False)
    log.info("demo data written in %.1f s: %s", seconds, result["summary"])
    return result


def _remove_old_videos(paths: dict[str, Path]) -> None:
    """Delete the videos an earlier manifest lists (only those: the folder may hold the user's files)."""
    try:
        old = json.loads(paths["manifest"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for vid in old.get("video_ids", []):
        f = paths["videos_dir"] / f"{vid}.mp4"
        if f.is_file() and re.fullmatch(r"v_demo\d+", vid):
            f.unlink()


# --------------------------------------------------------------------------- reading helpers


def load_meta(path: str | Path) -> dict[str, dict]:
    """The per-video meta of one split (`<split>_meta.json`): video id -> events and segments."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"demo meta file not found: {path}") from None
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        raise UserError(f"{path}: not a demo meta file (no 'videos' mapping)")
    return data["videos"]


def meta_path_for(annotation_path: str | Path) -> Path:
    """`.../test.json` -> `.../test_meta.json`."""
    p = Path(annotation_path)
    return p.with_name(f"{p.stem}_meta.json")


def order_dependent_segments(meta: Mapping[str, dict]) -> set[tuple[str, float, float]]:
    """(video id, start, end) of every order-dependent segment."""
    return {(vid, *map(float, s["timestamp"])) for vid, m in meta.items() for s in m["segments"]
            if s["order_dependent"]}


def split_annotations_by_order(meta: Mapping[str, dict]) -> tuple[dict, dict]:
    """Two ActivityNet-format reference dicts: the order-dependent segments and the rest.

    A benchmark scores each with the official protocol to compare models on the
    captions whose meaning depends on event order.
    """
    subsets: tuple[dict, dict] = ({}, {})
    for vid, m in meta.items():
        for s in m["segments"]:
            entry = subsets[0 if s["order_dependent"] else 1].setdefault(
                vid, {"duration": m["duration"], "timestamps": [], "sentences": []})
            entry["timestamps"].append(list(s["timestamp"]))
            entry["sentences"].append(s["sentence"])
    return subsets


def score_captions(results: Mapping[str, list[dict]], meta: Mapping[str, dict],
                   tolerance: float = 0.02) -> dict[str, Any]:
    """Fraction of reference segments whose predicted caption is correct (`caption_correct`).

    `results` is ActivityNet's result mapping (video id -> [{"timestamp", "sentence"}]);
    a reference segment is matched to the prediction with the same timestamp
    (within `tolerance` seconds; the demo predicts on ground-truth segments). A
    segment without a matching prediction counts as wrong. Returned per subset
    (`all`, `order_dependent`, `single`): `n`, `correct`, `fraction`.
    """
    tally = {k: [0, 0] for k in ("all", "order_dependent", "single")}
    for vid, m in meta.items():
        preds = results.get(vid, [])
        for s in m["segments"]:
            start, end = s["timestamp"]
            match = next((p["sentence"] for p in preds
                          if abs(p["timestamp"][0] - start) <= tolerance
                          and abs(p["timestamp"][1] - end) <= tolerance), None)
            ok = match is not None and caption_correct(match, s["events"])
            for key in ("all", "order_dependent" if s["order_dependent"] else "single"):
                tally[key][0] += 1
                tally[key][1] += int(ok)
    return {k: {"n": n, "correct": c, "fraction": (c / n if n else 0.0)} for k, (n, c) in tally.items()}
