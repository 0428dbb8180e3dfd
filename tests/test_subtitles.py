"""Subtitle files read back with real parsers (`srt`, `webvtt-py`), overlapping events included."""

import html
from datetime import timedelta
from pathlib import Path

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
    assert subs[1].content == "he waves <hello> & --> smiles"  # SRT has no entities: the text as is
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


def test_two_result_files_in_one_folder_keep_their_own_subtitles(tmp_path):
    """Subtitles go to `<results stem>/`: a second run into the same folder leaves the first run's files alone."""
    from caption_model.formats.results import make_result, write_result
    from caption_model.proposals.dense import write_video_subtitles

    first = write_result(tmp_path / "predict_20261206-101500.json", make_result({"v_a": ENTRIES[:1]}, "run 1"))
    second = write_result(tmp_path / "predict_20261206-101501.json", make_result({"v_a": ENTRIES[1:2]}, "run 2"))
    paths = [write_video_subtitles(res, "srt", echo=None) for res in (first, second)]
    assert paths == [[str(tmp_path / "predict_20261206-101500" / "v_a.srt")],
                     [str(tmp_path / "predict_20261206-101501" / "v_a.srt")]]
    contents = [list(srt.parse(Path(p).read_text(encoding="utf-8")))[0].content for (p,) in paths]
    assert contents == ["a red circle moves up.", "a man opens a door"]  # the first run's file is intact


MARKUP = "tom & jerry: 5 < 6, 7 > 3"


def test_srt_keeps_markup_characters_verbatim_and_vtt_escapes_them(tmp_path):
    """SRT has no entities (FFmpeg-based players show ``&lt;`` as is); WebVTT requires them."""
    entries = [{"timestamp": [0, 1], "sentence": MARKUP}]
    srt_text = write_subtitles(entries, tmp_path / "v.srt", "srt").read_text(encoding="utf-8")
    vtt_text = write_subtitles(entries, tmp_path / "v.vtt", "vtt").read_text(encoding="utf-8")
    assert f"\n{MARKUP}\n" in srt_text and "&amp;" not in srt_text and "&lt;" not in srt_text
    assert list(srt.parse(srt_text))[0].content == MARKUP
    assert "\ntom &amp; jerry: 5 &lt; 6, 7 &gt; 3\n" in vtt_text
    assert html.unescape(webvtt.from_string(vtt_text, strict=True).captions[0].raw_text) == MARKUP


def test_ffmpeg_shows_the_srt_text_as_the_sentence(tmp_path):
    """What a player built on FFmpeg (mpv, VLC, ffplay) decodes from the cue: the sentence, no entities."""
    av = pytest.importorskip("av")
    path = write_subtitles([{"timestamp": [0, 1], "sentence": MARKUP}], tmp_path / "v.srt", "srt")
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        shown = [sub.dialogue.decode() for packet in container.demux(stream) for sub in packet.decode()]
    assert shown == [MARKUP]


def test_raw_srt_text_cannot_start_a_cue_of_its_own():
    """Unescaped text is safe because it is one line: a forged number and times stay words of the cue."""
    forged = "a man\n\n2\n00:00:05,000 --> 00:00:06,000\r\nforged <i>cue</i>"
    subs = list(srt.parse(to_srt([{"timestamp": [0, 1], "sentence": forged}])))
    assert [s.content for s in subs] == ["a man 2 00:00:05,000 --> 00:00:06,000 forged <i>cue</i>"]
