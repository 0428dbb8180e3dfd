"""Rows of a segment in stores of single frames at 5 per second: the seed's ``[int(s*5), int(e*5+0.5))``.

The seed slices ``feats[int(start * 5) : int(end * 5 + 0.5)]``; etspipe's centre rule took the rows
whose centre ``(i + 0.5) / 5`` lies in the segment, which drops the frame showing at the start when
``start * 5`` has a fractional part above 0.5. Generated timestamps only (no ../shared data):
ActivityNet-like two-decimal times plus the float edge cases.
"""

from __future__ import annotations

import copy
import pickle

import h5py
import numpy as np
import pytest

from features_store import open_store
from features_store.alignment import RowTimes, row_times, rows_for_segment, select_rows
from features_store.importers import import_hdf5_per_video

FRAMES = {"kind": "clip", "fps": 5.0, "clip_len": 1.0, "stride": 1.0}
N = 300  # rows: 60 s of frames
DURATION = N / 5.0


def seed_slice(start: float, end: float) -> slice:
    """The seed's reader, word for word."""
    return slice(int(start * 5), int(end * 5 + 0.5))


def timestamps() -> list[tuple[float, float]]:
    rng = np.random.default_rng(27)
    points = [round(float(x), 2) for x in rng.uniform(0, DURATION, 240)]  # ActivityNet writes 2 decimals
    points += [k * 0.2 for k in range(0, 40)] + [k / 5 for k in range(0, 40)]  # multiples of 0.2, both spellings
    points += [k + f for k in (0, 1, 7, 33) for f in (0.1, 0.1999999, 0.2000001, 0.3, 0.5, 0.7, 0.9, 0.6, 0.15)]
    points += [0.0, DURATION - 0.1, DURATION - 0.05, DURATION]
    points = sorted({p for p in points if 0.0 <= p <= DURATION})
    pairs = [(a, b) for a, b in zip(points, points[1:], strict=False)]  # neighbours: short segments
    pairs += [(points[i], points[j]) for i, j in rng.integers(0, len(points), (200, 2)) if points[i] < points[j]]
    pairs += [(1.0, 1.04), (3.2, 3.25), (0.0, 0.05), (10.15, 10.19)]  # the seed's slice is empty
    return pairs


def test_in_range_segments_get_exactly_the_seeds_rows():
    times = row_times(FRAMES, N)
    checked = empty = 0
    for start, end in timestamps():
        want = seed_slice(start, end)
        sel, case = rows_for_segment(times, start, end, DURATION)
        assert case is None
        if want.stop > want.start:
            assert (sel.start, sel.stop) == (want.start, want.stop), (start, end)
            checked += 1
        else:  # the seed skips an empty slice; the one rule gives every segment its nearest row
            assert sel.stop - sel.start == 1 and abs(sel.start - (start + end) / 2 * 5) <= 1, (start, end)
            empty += 1
    assert checked > 300 and empty >= 4


def test_the_frame_showing_at_the_start_is_kept():
    """Failed on the centre rule: row 0 (0 .. 0.2 s, centre 0.1) showed at 0.15 s but was dropped."""
    times = row_times(FRAMES, N)
    assert select_rows(times, 0.15, 1.0, DURATION) == slice(0, 5)
    assert select_rows(times, 12.38, 14.61, DURATION) == slice(61, 73)  # int(61.9), int(73.55)
    assert select_rows(np.asarray(times), 0.15, 1.0, DURATION) == slice(1, 5)  # plain times: the centre rule
    assert select_rows(np.asarray(times), 0.15, 1.0, DURATION, rule=FRAMES) == slice(0, 5)


def test_overrunning_segments_keep_the_one_rule():
    times = row_times(FRAMES, N)
    assert rows_for_segment(times, 58.25, 75.0, DURATION) == (slice(291, N), "partly_outside")  # seed: [291:375]
    assert rows_for_segment(times, -2.0, 0.5, DURATION) == (slice(0, 3), "partly_outside")
    assert rows_for_segment(times, 61.0, 70.0, DURATION) == (slice(N - 1, N), "past_end")
    assert rows_for_segment(times, -3.0, -1.0, DURATION) == (slice(0, 1), "before_start")
    assert rows_for_segment(times, 7.5, 7.5, DURATION) == (slice(37, 38), "zero_length")
    assert rows_for_segment(times, 2.0, 1.0, DURATION) == (slice(5, 10), "reversed")


def test_other_stores_keep_the_centre_rule():
    c3d = row_times({"kind": "clip", "fps": 5.0, "clip_len": 16.0, "stride": 8.0}, 20)  # clips, not frames
    assert select_rows(c3d, 1.7, 5.0, 40.0) == slice(1, 3)  # centres 3.2 and 4.8 (the seed's slice: 8..25)
    frames_25 = row_times({"kind": "clip", "fps": 25.0, "clip_len": 1.0, "stride": 1.0}, 100)
    assert select_rows(frames_25, 0.03, 0.2, 4.0) == slice(1, 5)  # centres 0.06 .. 0.18: not int(0.75)
    uniform = row_times({"kind": "uniform", "duration": 60.0, "n_rows": N}, N)  # same centres as 5 fps frames
    assert select_rows(uniform, 0.15, 1.0, DURATION) == slice(1, 5)


def test_the_rule_travels_with_the_times():
    times = row_times(FRAMES, N)
    for copied in (pickle.loads(pickle.dumps(times)), copy.copy(times), copy.deepcopy(times)):
        assert isinstance(copied, RowTimes) and copied.rule == FRAMES
        assert select_rows(copied, 0.15, 1.0, DURATION) == slice(0, 5)
    assert times[3:].rule is None and (times * 2).rule is None and type(np.asarray(times)) is np.ndarray


@pytest.mark.parametrize("backend", ["zarr", "h5"])
def test_a_generic_import_at_5_fps_reads_like_the_seed(tmp_path, backend):
    rows = np.arange(N * 4, dtype=np.float32).reshape(N, 4)
    src = tmp_path / "frames.hdf5"
    with h5py.File(src, "w") as f:
        f.create_dataset("v_a", data=rows)
    store_path = str(tmp_path / f"s.{backend}")
    import_hdf5_per_video(src, store_path, fps=5.0, dtype="float32")
    with open_store(store_path, "r") as st:
        got, _ = st.get("v_a", 12.38, 14.61)
        np.testing.assert_array_equal(got, rows[61:73])
        sel, case = rows_for_segment(st.row_times("v_a"), 0.15, 1.0, st.video_meta("v_a")["duration"])
        assert (sel, case) == (slice(0, 5), None)  # what training and evaluation ask (caption_model.dataset)


def test_proposal_row_edges_map_back_to_their_rows_on_frame_rows() -> None:
    """A window [edge_a, edge_{b+1}] of frame rows at 5 fps selects rows a..b (midpoint edges broke 28 of 397)."""
    from caption_model.proposals.model import row_edges
    from features_store.alignment import row_times, select_rows

    rule = {"kind": "clip", "fps": 5.0, "clip_len": 1.0, "stride": 1.0}
    times = row_times(rule, 400)
    edges = row_edges(times, 80.0)
    for a in range(0, 397):
        for b in (a, a + 3):
            sel = select_rows(times, float(edges[a]), float(edges[b + 1]), 80.0)
            assert (sel.start, sel.stop) == (a, b + 1), (a, b)
