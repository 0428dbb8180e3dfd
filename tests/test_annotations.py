"""Annotation loading: layouts, the quirk rules and their counts, the held-out split."""

import json

import pytest

from caption_model.formats.annotations import (
    QUIRKS,
    held_out_count,
    load_annotations,
    match_store,
    split_by_video,
    store_id_for,
    summary_line,
)
from etspipe.errors import UserError


def write(path, data):
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_quirks_each_rule_applied_and_counted(tmp_path):
    data = {
        "v_a": {"duration": 10.0,
                "timestamps": [[1, 4], [5, 5], [8, 3], [2, 12.5], [-1, 2], [1, 4], [1, 4], [0, 1], ["x", 2],
                               [-3, -1], [10, 12]],
                "sentences": ["  A man runs.", "A dog sits.", "Reversed one.", "Past the end.", "Negative start.",
                              "A man runs", "Another caption.", " ... ", "bad time", "Before the start.",
                              "After the end."]},
        "v_b": {"duration": 5.0, "timestamps": [[0, 1], [1, 2]], "sentences": ["Une piñata éclate."]},
        "v_c": {"duration": None, "timestamps": [[0, 7]], "sentences": ["No duration."]},
        "v_d": ["not", "a", "mapping"],
    }
    segs, report = load_annotations(write(tmp_path / "a.json", data))
    by = {s.sentence: s for s in segs}
    assert by["A man runs."].start == 1 and "  A man runs." not in by  # stripped
    assert (by["A dog sits."].start, by["A dog sits."].end) == (5, 5)  # zero length kept
    assert (by["Reversed one."].start, by["Reversed one."].end) == (3, 8)  # swapped
    assert (by["Past the end."].start, by["Past the end."].end) == (2, 10)  # clipped
    assert (by["Negative start."].start, by["Negative start."].end) == (0, 2)
    assert "A man runs" not in by  # same times, same words: duplicate dropped
    assert "Another caption." in by  # same times, other words: kept
    assert by["Une piñata éclate."].video_id == "v_b"
    assert by["No duration."].duration == 7.0
    assert "Before the start." not in by and "After the end." not in by  # wholly outside: dropped
    expected = {"stripped_space": 2, "zero_length": 1, "reversed": 1, "clipped": 2, "outside": 2, "duplicate": 1,
                "shared_segment": 1, "empty_sentence": 1, "bad_timestamp": 1, "non_ascii": 1, "unpaired": 1,
                "bad_duration": 1, "bad_video": 1, "videos_in_several_files": 0}
    assert {q: report[q] for q in QUIRKS} == expected
    assert report["segments"] == len(segs) == 8 and report["videos"] == 3
    assert "zero_length 1" in summary_line(report)


def test_nothing_valid_left_is_refused_naming_what_the_rules_dropped(tmp_path):
    # every timestamp negative: clipping alone would train on zero-length points at 0 s
    data = {f"v_{i}": {"duration": 9.0, "timestamps": [[-3, -1], [-2, -0.5]], "sentences": ["a b", "c d"]}
            for i in range(5)}
    data["v_x"] = {"duration": 9.0, "timestamps": [[1, 2]], "sentences": ["  "]}
    with pytest.raises(UserError, match=r"a\.json: no valid caption segment left \(the quirk rules dropped: "
                                        r"empty_sentence 1, outside 10\)"):
        load_annotations(write(tmp_path / "a.json", data))


@pytest.mark.parametrize("content", [{}, {"database": {}}])
def test_a_file_without_videos_says_so(tmp_path, content):
    good = write(tmp_path / "good.json", {"v_a": {"duration": 9, "timestamps": [[0, 1]], "sentences": ["a b"]}})
    with pytest.raises(UserError, match=r"empty\.json: the file has no videos"):
        load_annotations([good, write(tmp_path / "empty.json", content)])


def test_youcook2_layouts_and_several_files(tmp_path):
    plain = write(tmp_path / "yc.json", {"GLd3aX16zBg": {"duration": 241.6, "timestamps": [[90, 102]],
                                                           "sentences": ["spread margarine on bread"]}})
    official = write(tmp_path / "yc_official.json", {"database": {"v_dkYNq8G9Y": {
        "duration": 100.0, "subset": "validation",
        "annotations": [{"segment": [1, 5], "sentence": "add salt", "id": 0}]}}})
    again = write(tmp_path / "again.json", {"GLd3aX16zBg": {"duration": 241.6, "timestamps": [[1, 2]],
                                                             "sentences": ["cut bread"]}})
    segs, report = load_annotations([plain, official, again])
    assert [s.video_id for s in segs] == ["GLd3aX16zBg", "GLd3aX16zBg", "v_dkYNq8G9Y"]  # ids kept verbatim
    assert report["videos_in_several_files"] == 1 and report["segments"] == 3


def test_store_ids_matched_exactly_then_with_prefix_toggled():
    assert store_id_for("v_abc", {"v_abc", "abc"}) == "v_abc"
    assert store_id_for("abc", {"v_abc"}) == "v_abc"
    assert store_id_for("v_abc", {"abc"}) == "abc"
    assert store_id_for("zzz", {"abc"}) is None


def test_match_store_reports_missing_and_failed(tmp_path):
    segs, _ = load_annotations(write(tmp_path / "a.json", {
        "v_ok": {"duration": 9, "timestamps": [[0, 1]], "sentences": ["fine"]},
        "v_gone": {"duration": 9, "timestamps": [[0, 1]], "sentences": ["gone"]},
        "v_bad": {"duration": 9, "timestamps": [[0, 1]], "sentences": ["bad"]}}))
    kept, skipped = match_store(segs, ["v_ok"], {"v_bad": {"reason": "unreadable"}})
    assert [sid for _, sid in kept] == ["v_ok"]
    assert skipped == {"v_gone": "missing from store", "v_bad": "failed in store: unreadable"}


@pytest.mark.parametrize("content, match", [(None, "not found"), ("{oops", "not valid JSON"), ("[1, 2]", "mapping")])
def test_bad_files_are_user_errors(tmp_path, content, match):
    path = tmp_path / "f.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=match):
        load_annotations([path])


def test_split_by_video_is_seeded_disjoint_and_stable(tmp_path):
    data = {f"v_{i}": {"duration": 9, "timestamps": [[0, 1], [1, 2]], "sentences": ["a b", "c d"]}
            for i in range(40)}
    segs, _ = load_annotations(write(tmp_path / "a.json", data))
    train, val = split_by_video(segs, 0.05, seed=0)
    val_ids = {s.video_id for s in val}
    assert len(val_ids) == 2 and len(val) == 4 and not val_ids & {s.video_id for s in train}
    assert split_by_video(segs, 0.05, seed=0) == (train, val)
    assert {s.video_id for s in split_by_video(segs, 0.05, seed=1)[1]} != val_ids
    fewer = [s for s in segs if s.video_id not in {"v_38", "v_39"} - val_ids]  # removing other videos ...
    assert {s.video_id for s in split_by_video(fewer, 0.05, 0)[1]} <= val_ids | set()  # ... keeps the held-out ones
    assert split_by_video(segs, 0.0, 0)[1] == []


def test_held_out_floor_tops_up_within_a_quarter_and_keeps_the_smaller_set(tmp_path):
    data = {f"v_{i}": {"duration": 9, "timestamps": [[0, 1]], "sentences": ["a b"]} for i in range(400)}
    segs, _ = load_annotations(write(tmp_path / "a.json", data))
    small = {s.video_id for s in split_by_video(segs, 0.05, 0)[1]}
    train, val = split_by_video(segs, 0.05, 0, min_videos=50)
    floor = {s.video_id for s in val}
    assert len(small) == 20 and len(floor) == 50 and small <= floor  # the captioner's held-out videos stay held out
    assert not floor & {s.video_id for s in train}
    assert held_out_count(400, 0.05, 50) == 50 and held_out_count(100, 0.05, 50) == 25  # at most a quarter
    assert held_out_count(400, 0.2, 50) == 80 and held_out_count(400, 0.0, 50) == 0  # the fraction wins when larger
    assert held_out_count(3, 0.05, 50) == 1  # never below one while the fraction is positive
