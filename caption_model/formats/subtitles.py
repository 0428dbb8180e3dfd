"""Subtitles: a video's timed captions as SRT or WebVTT, so any video player shows them.

Input is a result entry list as in ActivityNet's result format
(``[{"timestamp": [start, end], "sentence": ..., "proposal_score": ...}]``).
Dense captions overlap (an event inside a longer one); both formats allow
overlapping cues and players stack them, so nothing is merged or cut.

Rules that keep every file parseable:

* cues are sorted by start, then end (players and parsers expect it);
* times are clipped at 0 and written to the millisecond; a cue ends at least
  1 ms after it starts (WebVTT requires end > start; a zero-length or
  reversed entry would otherwise be dropped or refused by a player);
* a sentence is one line: white space (line breaks included) is collapsed, since
  a blank line ends a cue in both formats; an empty sentence gives no cue;
* WebVTT text escapes ``&``, ``<`` and ``>`` (``&amp;``, ``&lt;``, ``&gt;``): the
  WebVTT spec reserves them for markup, and the escaping also keeps ``-->`` out
  of the cue text;
* SRT text is written raw: SRT has no entities, so players built on FFmpeg
  (mpv, VLC, ffplay) would show ``&lt;`` literally. What keeps an SRT cue intact
  is the one-line rule above: a cue ends at a blank line, and its number and
  ``-->`` line are only read at the start of a cue, which the text of a one-line
  cue never is. SRT has no way to quote a tag either: a word in angle brackets
  (``<unk>``, written only with ``decode.allow_unk``) is read by those players as
  an unknown tag and not shown;
* a file is named by the video id escaped as the feature store escapes it for
  file names (`features_store.ids.store_key`): ids holding ``/``, ``:`` or ``?``,
  or differing only in case, get distinct names that every file system takes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

FORMATS = ("srt", "vtt")


def _clock(seconds: float, decimal: str) -> str:
    """``HH:MM:SS,mmm`` (SRT) or ``HH:MM:SS.mmm`` (WebVTT)."""
    ms = int(round(max(float(seconds), 0.0) * 1000)) if math.isfinite(float(seconds)) else 0
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _cues(entries: Sequence[Mapping]) -> list[tuple[float, float, str]]:
    """(start, end, one-line text) per entry that has words, sorted by start then end."""
    cues = []
    for item in entries:
        text = " ".join(str(item.get("sentence", "")).split())
        if not text:
            continue
        start, end = sorted(float(t) for t in item["timestamp"])  # a reversed entry keeps its span
        start = max(start, 0.0)
        cues.append((start, max(end, start + 0.001), text))
    return sorted(cues, key=lambda c: (c[0], c[1]))


def _escape_vtt(text: str) -> str:
    """WebVTT cue text with its markup characters escaped (``&`` first, so entities stay single)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_srt(entries: Sequence[Mapping]) -> str:
    """SubRip text: numbered cues, ``-->`` between comma-decimal times, a blank line after each.

    The text is the sentence as is (on one line, see `_cues`): SRT has no escapes,
    so ``&lt;`` would be shown as those four characters.
    """
    blocks = [f"{i}\n{_clock(s, ',')} --> {_clock(e, ',')}\n{text}\n"
              for i, (s, e, text) in enumerate(_cues(entries), start=1)]
    return "\n".join(blocks)


def to_vtt(entries: Sequence[Mapping]) -> str:
    """WebVTT text: the ``WEBVTT`` header, then cues with dot-decimal times."""
    blocks = [f"{_clock(s, '.')} --> {_clock(e, '.')}\n{_escape_vtt(text)}\n" for s, e, text in _cues(entries)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def write_subtitles(entries: Sequence[Mapping], path: str | Path, fmt: str) -> Path:
    """Write `entries` to `path` in `fmt` ("srt" or "vtt"), UTF-8; returns the path."""
    if fmt not in FORMATS:
        raise ValueError(f"subtitle format must be one of {FORMATS}, got {fmt!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = to_srt(entries) if fmt == "srt" else to_vtt(entries)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def subtitle_name(video_id: str, fmt: str, stem: str = "") -> str:
    """``<stem><escaped id>.<fmt>``: the store's reversible, case-safe file-name escaping of the id."""
    from features_store.ids import store_key

    return f"{stem}{store_key(video_id)}.{fmt}"


def write_all(results: Mapping[str, Sequence[Mapping]], out_dir: str | Path, fmt: str, stem: str = "") -> list[Path]:
    """One subtitle file per video (`subtitle_name` in `out_dir`), for the videos that have entries."""
    return [write_subtitles(entries, Path(out_dir) / subtitle_name(vid, fmt, stem), fmt)
            for vid, entries in results.items() if entries]
