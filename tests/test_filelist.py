"""File lists of `predict`: both layouts, comments, and every bad-line case with its line number."""

from __future__ import annotations

import pytest

from caption_model.formats.filelist import FileListEntry, LineError, parse_filelist_text, read_filelist
from etspipe.errors import UserError


def test_both_layouts_comments_and_whole_videos(tmp_path):
    (tmp_path / "my video.mp4").write_bytes(b"")
    text = "\n".join([
        "# a comment",
        "",
        "v_abc 1.5 4",
        "clips/a.mp4   # the whole video",
        "v_tab\t2\t7.25\ta man talks",
        "v_tab2\t0\t3",
        "my video.mp4",
        "my video.mp4 0 2",
    ])
    entries, errors = parse_filelist_text(text, tmp_path)
    assert errors == []
    assert entries == [
        FileListEntry(3, "v_abc", 1.5, 4.0),
        FileListEntry(4, "clips/a.mp4", None, None),
        FileListEntry(5, "v_tab", 2.0, 7.25, "a man talks"),
        FileListEntry(6, "v_tab2", 0.0, 3.0),
        FileListEntry(7, "my video.mp4", None, None),
        FileListEntry(8, "my video.mp4", 0.0, 2.0),
    ]


@pytest.mark.parametrize("line, start, end", [("v_a 5 3", 5.0, 3.0), ("v_a 3 3", 3.0, 3.0), ("v_a -1 3", -1.0, 3.0),
                                             ("v_a\t120.5\t130", 120.5, 130.0)])
def test_reversed_zero_length_and_outside_times_are_entries_not_errors(line, start, end):
    """Only a line naming no video or with times that are not numbers fails; the alignment rule takes the rest."""
    entries, errors = parse_filelist_text(line)
    assert errors == [] and [(e.video, e.start, e.end) for e in entries] == [("v_a", start, end)]


@pytest.mark.parametrize("line, message", [
    ("v_a one two", "cannot read 'one'"),
    ("v_a 1 nan", "cannot read 'nan'"),
    ("v_a 2", "both START and END"),
    ("v_a\tx\t3", "cannot read 'x'"),
    ("v_a\t1", "video_id, start, end"),
])
def test_bad_lines_are_reported_with_their_number(line, message):
    entries, errors = parse_filelist_text(f"v_ok 0 1\n{line}\nv_ok2")
    assert [e.video for e in entries] == ["v_ok", "v_ok2"]
    assert len(errors) == 1 and isinstance(errors[0], LineError)
    assert errors[0].line == 2 and message in errors[0].message
    assert str(errors[0]).startswith("line 2:")


def test_missing_file_list_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="file list not found"):
        read_filelist(tmp_path / "nope.txt")
