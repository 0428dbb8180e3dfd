"""Subtitle files read back with real parsers (`srt`, `webvtt-py`), overlapping events included."""

import html
from datetime import timedelta

import pytest
import srt
import webvtt

from caption_model.formats.subtitles import to_srt, to_vtt, write_all, write_subtitles

ENTRIES = [
    {"timestamp": [12.5, 14.25], "sentence": "a red circle moves up.", "proposal_score": 0.4},
    {"timestamp": [0.0, 6.0], "sentence": "a man\nopens a door", "proposal_score": 0.9},
    {"timestamp": [2.0, 3.5], "sentence": "he waves <hello> & --> smiles", "proposal_score": 0.8},
    {"timestamp": [3661.001, 3662.0], "sentence": "late event"},
    {"timestamp": [4.0, 5.0], "sentence": "   "},
]


def test_srt_parses_sorted_overlapping_and_one_line():
    subs = list(srt.parse(to_srt(ENTRIES)))
    assert [s.index for s in subs] == [1, 2, 3, 4]
    assert [(s.start.total_seconds(), s.end.total_seconds()) for s in subs] == \
        [(0.0, 6.0), (2.0, 3.5), (12.5, 14.25), (3661.001, 3662.0)]
    assert subs[0].content == "a man opens a door"  # a line break would end the cue early
    assert subs[1].content == "he waves &lt;hello&gt; &amp; --&gt; smiles"  # players read <...> as tags
    assert subs[1].start < subs[0].end  # overlap kept, not merged or cut
    assert subs[3].start == timedelta(hours=1, minutes=1, seconds=1, milliseconds=1)


def test_vtt_parses_strictly_and_escapes_markup():
    vtt = webvtt.from_string(to_vtt(ENTRIES), strict=True)
    caps = list(vtt.captions)
    assert [(c.start, c.end) for c in caps] == [("00:00:00.000", "00:00:06.000"), ("00:00:02.000", "00:00:03.500"),
                                                ("00:00:12.500", "00:00:14.250"), ("01:01:01.001", "01:01:02.000")]
    assert caps[1].raw_text == "he waves &lt;hello&gt; &amp; --&gt; smiles"
    assert html.unescape(caps[1].text) == "he waves <hello> & --> smiles"  # what a player shows
    assert caps[0].text == "a man opens a door"


def test_negative_and_reversed_times_stay_parseable():
    entries = [{"timestamp": [-1.0, 2.0], "sentence": "early"}, {"timestamp": [5.0, 4.0], "sentence": "reversed"}]
    subs = list(srt.parse(to_srt(entries)))
    assert subs[0].start == timedelta(0) and subs[1].start == timedelta(seconds=4)
    assert subs[1].end == timedelta(seconds=5)  # a reversed entry keeps its span (was an invisible 1 ms cue)
    caps = webvtt.from_string(to_vtt(entries), strict=True).captions
    assert caps[0].start == "00:00:00.000" and caps[1].end == "00:00:05.000"
    zero = list(srt.parse(to_srt([{"timestamp": [5.0, 5.0], "sentence": "blink"}])))[0]
    assert zero.end == timedelta(seconds=5, milliseconds=1)  # WebVTT needs end > start; SRT follows


def test_empty_list_gives_valid_empty_files():
    assert list(srt.parse(to_srt([]))) == []
    assert list(webvtt.from_string(to_vtt([])).captions) == []


def test_write_all_one_file_per_video(tmp_path):
    paths = write_all({"v_a": ENTRIES[:2], "v_b": ENTRIES[2:3], "v_none": []}, tmp_path, "vtt")
    assert sorted(p.name for p in paths) == ["v_a.vtt", "v_b.vtt"]
    assert len(webvtt.read(str(tmp_path / "v_a.vtt")).captions) == 2
    srt_path = write_subtitles(ENTRIES[:1], tmp_path / "x.srt", "srt")
    assert list(srt.parse(srt_path.read_text(encoding="utf-8")))[0].content == "a red circle moves up."
    with pytest.raises(ValueError):
        write_subtitles(ENTRIES, tmp_path / "x.ass", "ass")


def test_file_names_use_the_stores_escaping_so_odd_ids_neither_break_nor_collide(tmp_path):
    from features_store.ids import id_from_key

    ids = ["v_A", "v_a", "clips/2024:one?", "été 1"]
    paths = write_all({vid: ENTRIES[:1] for vid in ids}, tmp_path, "srt")
    assert len({p.name.lower() for p in paths}) == 4  # distinct even on a case-insensitive disk
    assert all(p.parent == tmp_path and p.is_file() for p in paths)  # no id reaches a folder
    assert [id_from_key(p.name.removesuffix(".srt")) for p in paths] == ids  # reversible


def test_srt_escapes_markup_players_would_read_as_tags():
    text = to_srt([{"timestamp": [0, 1], "sentence": "a <i>b</i> & <font color=red>c"}])
    cue = list(srt.parse(text))[0].content
    assert "<" not in cue and ">" not in cue and html.unescape(cue) == "a <i>b</i> & <font color=red>c"
