"""The time-alignment rule (docs/ARCHITECTURE.md) and video ids: edge cases of the small pure functions."""

from __future__ import annotations

import numpy as np
import pytest

from etspipe.errors import UserError
from features_store import SegmentError, row_times, select_rows, validate_video_id, video_id_from_path
from features_store.alignment import time_rule

# C3D at 30 fps: clip 16, stride 8 -> centres (8i + 8) / 30
TIMES = row_times({"kind": "clip", "fps": 30.0, "clip_len": 16, "stride": 8}, 10)


def picked(start, end, duration=3.0, times=TIMES):
    return list(range(len(times)))[select_rows(times, start, end, duration)]


def test_clip_rule_times_are_window_centres():
    np.testing.assert_allclose(TIMES[:3], [8 / 30, 16 / 30, 24 / 30])
    np.testing.assert_allclose(row_times({"kind": "uniform", "duration": 10.0, "n_rows": 4}, 4),
                               [1.25, 3.75, 6.25, 8.75])


def test_rows_whose_centre_lies_inside_both_ends_included():
    assert picked(8 / 30, 24 / 30) == [0, 1, 2]
    assert picked(0.3, 0.7) == [1]  # centres 0.533; 0.267 and 0.8 are outside


def test_short_segment_takes_nearest_row():
    assert picked(0.55, 0.56) == [1]  # nearest centre 0.533
    assert picked(0.68, 0.69) == [2]  # nearer 0.8 than 0.533
    assert picked(0.0, 0.01) == [0]   # before the first centre
    assert picked(2.95, 3.0) == [9]   # after the last centre


def test_tie_goes_to_the_earlier_row():
    times = np.array([1.0, 2.0])
    assert picked(1.4, 1.6, 3.0, times) == [0]


def test_timestamps_are_clipped_to_the_video():
    assert picked(-10, 100) == list(range(10))
    assert picked(2.9, 50) == [9]  # clipped to [2.9, 3.0]: nearest row


def test_bad_segments_are_reported():
    for start, end, message in ((2, 1, "reversed"), (1, 1, "empty"), (5, 6, "outside"), (-3, -1, "outside"),
                                (float("nan"), 1, "finite"), (0, float("inf"), "finite")):
        with pytest.raises(SegmentError, match=message):
            select_rows(TIMES, start, end, 3.0)
    assert issubclass(SegmentError, UserError)
    with pytest.raises(ValueError):
        select_rows(np.array([]), 0, 1, 1.0)


def test_single_row_video():
    assert picked(0, 3, 3.0, np.array([1.5])) == [0]
    assert picked(2.8, 2.9, 3.0, np.array([1.5])) == [0]


def test_time_rule_from_video_meta():
    assert time_rule({"fps": 25}, 5, {"clip_len": 16, "stride": 8})["stride"] == 8.0
    assert time_rule({"duration": 10}, 5) == {"kind": "uniform", "duration": 10.0, "n_rows": 5}
    with pytest.raises(UserError, match="fps"):
        time_rule({"duration": 0}, 5)


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/b", "a\\b", "C:\\x", "x\0y", "", ".", "..",
                                 ".tmp-1", "tab\tid", " pad", "x" * 201])
def test_invalid_ids_rejected_with_reason(bad):
    with pytest.raises(UserError, match="invalid video id"):
        validate_video_id(bad)


def test_valid_ids_and_ids_from_paths():
    for good in ("v_uqiMw7tQ1Cc", "v_-abc_123", "clip.2", "x" * 200):
        assert validate_video_id(good) == good
    with pytest.raises(UserError):
        validate_video_id(3)
    assert video_id_from_path("/data/videos/v_uqiMw7tQ1Cc.mp4") == "v_uqiMw7tQ1Cc"
    assert video_id_from_path("s3://bucket/v_a.b.mkv") == "v_a.b"
    assert video_id_from_path("noext") == "noext"
    with pytest.raises(UserError, match="hidden"):
        video_id_from_path("/x/.hidden")
