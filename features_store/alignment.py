"""Time alignment: which feature rows belong to a caption segment (docs/ARCHITECTURE.md, the alignment rule).

Row ``i`` of a C3D store covers frames ``[i*stride, i*stride + clip_len)``; its
time is the centre of that window in seconds. A segment ``[start, end]`` takes
the rows whose centre lies inside it (both ends included); when none does (a
segment shorter than one row), it takes the row nearest to the segment centre,
so every valid segment gets at least one row. Timestamps are clipped to
``[0, duration]`` first. An empty or reversed segment, or one that lies wholly
outside the video, raises `SegmentError` instead of being dropped silently:
the caller decides whether to skip it, and the annotation report can count it.

Rows that are single frames at 5 per second (clip length 1, stride 1, fps 5:
ActivityNet's ResNet-152 frame features, the seed's input, imported or extracted
by that recipe, or a generic import at ``--fps 5``) follow the seed's reader
instead: an in-range segment takes rows ``[int(start*5), int(end*5 + 0.5))``,
start truncated and end rounded, evaluated in floats exactly as the seed does,
so a model trained on those rows sees the rows the seed saw. Row ``i`` stands
for the frame at ``i/5`` s and the span ``[i/5, (i+1)/5)`` (its time, as for
every store, is the span's centre): the start takes the frame showing at
``start``, the end the frames whose centre is at most ``end``. The two rules
differ only at the start, when ``start*5`` has a fractional part above 0.5
(the centre rule drops the frame showing at ``start``). Everything around the
in-range slice is the one rule above: clipping to ``[0, duration]``, the
nearest row when the slice is empty, the fallbacks of `rows_for_segment`. C3D
clip stores and stores at other rates keep the centre rule (the seed's reader
is defined for its 5 fps rows only).

The rule travels with the times: `row_times` returns a `RowTimes` array that
remembers the rule it came from, so every caller that hands a store's times to
`select_rows` / `rows_for_segment` (training, evaluation, prediction, `get`)
gets the frame rule without passing it; a plain array of times means the
centre rule.

These are pure functions so that training, evaluation and prediction (and the
caption model, which imports `select_rows`) apply exactly the same rule.
"""

from __future__ import annotations

import math

import numpy as np

from etspipe.errors import UserError


class SegmentError(UserError):
    """A caption segment that selects no time: empty, reversed, or outside the video."""


def time_rule(video_meta: dict, n_rows: int, store_meta: dict | None = None) -> dict:
    """The rule giving each row its time, from a video's metadata.

    With an ``fps`` the rows are clip windows: ``{"kind": "clip", "fps", "clip_len", "stride"}``
    (clip length and stride default to the store's). Without one (imported files
    such as the official ActivityNet C3D features) the ``duration`` is split
    evenly: ``{"kind": "uniform", "duration", "n_rows"}``.
    """
    store_meta = store_meta or {}
    fps = video_meta.get("fps")
    if fps:
        fps = float(fps)
        clip_len = float(video_meta.get("clip_len") or store_meta.get("clip_len") or 1)
        stride = float(video_meta.get("stride") or store_meta.get("stride") or 1)
        if not (math.isfinite(fps) and fps > 0 and clip_len > 0 and stride > 0):
            raise UserError(f"bad time rule: fps={fps}, clip_len={clip_len}, stride={stride} must be > 0")
        return {"kind": "clip", "fps": fps, "clip_len": clip_len, "stride": stride}
    duration = video_meta.get("duration")
    if duration is None or not (float(duration) > 0 and math.isfinite(float(duration))):
        raise UserError("video metadata needs an 'fps' (rows are clip windows) or a positive 'duration' "
                        f"(rows split it evenly); got fps={fps!r}, duration={duration!r}")
    return {"kind": "uniform", "duration": float(duration), "n_rows": int(n_rows)}


SEED_FRAME_FPS = 5.0  # the rate of the frame rows the seed's reader slices (../shared/SEED.md "Features")


def seed_frame_fps(rule: dict | None) -> float | None:
    """5.0 when `rule` gives single consecutive frames at 5 per second (the seed's row rule applies), else None."""
    if not rule or rule.get("kind") != "clip":
        return None
    try:
        single = float(rule["clip_len"]) == 1.0 and float(rule["stride"]) == 1.0
        return SEED_FRAME_FPS if single and float(rule["fps"]) == SEED_FRAME_FPS else None
    except (KeyError, TypeError, ValueError):
        return None


class RowTimes(np.ndarray):
    """Row centre times that remember the time rule they came from (`rule`), so the segment rule can follow it.

    Only the array `row_times` made (and its pickled, ``copy.copy`` or ``copy.deepcopy`` copies)
    carries the rule: a slice or a computed array is plain times again (its values no longer line
    up with the rule's rows).
    """

    rule: dict | None = None

    def __array_finalize__(self, obj: object) -> None:
        self.rule = None

    def __reduce__(self) -> tuple:  # DataLoader workers may get times by pickle: keep the rule
        return (_row_times_from, (np.asarray(self), self.rule))

    def __copy__(self) -> np.ndarray:
        return _row_times_from(np.array(self), self.rule)

    def __deepcopy__(self, memo: dict) -> np.ndarray:
        return _row_times_from(np.array(self), self.rule)


def _row_times_from(times: np.ndarray, rule: dict | None) -> np.ndarray:
    if rule is None:
        return times
    out = times.view(RowTimes)
    out.rule = rule
    return out


def row_times(rule: dict, n_rows: int) -> RowTimes:
    """Centre time in seconds of each of `n_rows` rows under `rule` (float64, increasing), carrying `rule`."""
    i = np.arange(n_rows, dtype=np.float64)
    if rule["kind"] == "clip":
        times = (i * rule["stride"] + rule["clip_len"] / 2.0) / rule["fps"]
    elif rule["kind"] == "uniform":
        times = (i + 0.5) * (rule["duration"] / max(int(rule["n_rows"]), 1))
    else:
        raise ValueError(f"unknown time rule {rule!r}")
    return _row_times_from(times, dict(rule))


def rule_duration(rule: dict, n_rows: int) -> float:
    """Duration implied by a rule: the end of the last row's window."""
    if rule["kind"] == "uniform":
        return float(rule["duration"])
    return ((n_rows - 1) * rule["stride"] + rule["clip_len"]) / rule["fps"] if n_rows else 0.0


def select_rows(times: np.ndarray, start: float, end: float, duration: float, rule: dict | None = None) -> slice:
    """Rows of the segment ``[start, end]`` (seconds) as a slice into `times`.

    `times` are the row centres, increasing; `duration` is the video length used
    to clip the segment; `rule` is the time rule of the rows (default: the one
    `times` carries, see `RowTimes`), which picks the centre rule or the seed's
    frame rule (module docstring). Returns a non-empty slice. Raises SegmentError
    for an empty (``end == start``), reversed or non-finite segment and for one
    that lies wholly outside ``[0, duration]``; ValueError when there are no rows.
    """
    n = len(times)
    if n == 0:
        raise ValueError("no rows to select from")
    start, end = float(start), float(end)
    if not (math.isfinite(start) and math.isfinite(end)):
        raise SegmentError(f"segment [{start}, {end}] is not finite")
    if end < start:
        raise SegmentError(f"segment [{start:g}, {end:g}] is reversed (end before start)")
    if end == start:
        raise SegmentError(f"segment [{start:g}, {end:g}] is empty (zero length)")
    lo, hi = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
    if hi <= lo:
        raise SegmentError(f"segment [{start:g}, {end:g}] lies outside the video [0, {duration:g}]")
    fps = seed_frame_fps(rule if rule is not None else getattr(times, "rule", None))
    if fps is not None:  # the seed's reader: feats[int(start * 5) : int(end * 5 + 0.5)], cut at the stored end
        first, stop = int(lo * fps), min(int(hi * fps + 0.5), n)
        if stop > first:
            return slice(first, stop)
        first = min(first, n)  # for the nearest row below
    else:
        first = int(np.searchsorted(times, lo, side="left"))
        stop = int(np.searchsorted(times, hi, side="right"))
        if stop > first:
            return slice(first, stop)
    centre = (lo + hi) / 2.0
    # nearest row centre; on a tie the earlier row
    right = min(first, n - 1)
    left = max(right - 1, 0)
    nearest = left if abs(times[left] - centre) <= abs(times[right] - centre) else right
    return slice(nearest, nearest + 1)


# Why a segment that `select_rows` refuses (or clips) still got rows from `rows_for_segment`.
FALLBACK_CASES = {
    "partly_outside": "segments partly outside the stored video were clipped to it",
    "past_end": "segments starting past the stored end used the last row",
    "before_start": "segments ending before 0 s used the first row",
    "zero_length": "zero-length segments used the row nearest to their time",
    "reversed": "reversed segments (end before start) were read with start and end swapped",
    "not_finite": "segments with non-finite times used the whole video",
}


def nearest_row(times: np.ndarray, t: float) -> int:
    """Index of the row whose centre is nearest to `t` (on a tie the earlier row)."""
    return int(np.argmin(np.abs(np.asarray(times, dtype=np.float64) - float(t))))


def rows_for_segment(times: np.ndarray, start: float, end: float, duration: float,
                     rule: dict | None = None) -> tuple[slice, str | None]:
    """The rows of a segment that must be captioned whatever its times, and which fallback applied.

    Evaluation and prediction caption every segment they are given (a copy of a
    video is often shorter than its annotation says). The rule is docs/ARCHITECTURE.md's:
    rows whose centre lies inside the segment clipped to ``[0, duration]`` (the
    seed's slice for frame rows at 5 fps, module docstring; `rule` as in
    `select_rows`), else the row nearest to the clipped segment's centre. Returns ``(rows, case)``
    where `case` is None for an ordinary segment or a key of `FALLBACK_CASES`,
    so callers can count each case in one summary line.
    """
    n = len(times)
    if n == 0:
        raise ValueError("no rows to select from")
    start, end = float(start), float(end)
    if not (math.isfinite(start) and math.isfinite(end)):
        return slice(0, n), "not_finite"
    case = None
    if end < start:
        start, end, case = end, start, "reversed"
    if end == start:
        i = nearest_row(times, min(max(start, 0.0), duration))
        return slice(i, i + 1), case or "zero_length"
    if start >= duration:
        return slice(n - 1, n), case or "past_end"
    if end <= 0:
        return slice(0, 1), case or "before_start"
    if case is None and (start < 0 or end > duration):
        case = "partly_outside"
    return select_rows(times, start, end, duration, rule), case
