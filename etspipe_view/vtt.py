"""WebVTT cues of a video's captions: what the page's caption track shows.

Kept in one small function so it can switch to the dense-captioning subtitle
writer (`caption_model.subtitles`) once that exists: the CLI may pass its cue
text in, this package never imports a stage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from etspipe_view.inputs import Caption


def vtt_time(seconds: float) -> str:
    """`HH:MM:SS.mmm`, the only timestamp form WebVTT accepts."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def cue_text(sentence: str) -> str:
    """A sentence as cue text: one line, with `&`, `<`, `>` escaped (cue text is markup) and no `-->`."""
    text = re.sub(r"\s+", " ", sentence).strip()
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("--&gt;", "- -&gt;") or "&nbsp;"


def webvtt(captions: Iterable[Caption]) -> str:
    """A WebVTT document with one cue per caption, in start order (players require that order)."""
    lines = ["WEBVTT", ""]
    ordered = sorted(captions, key=lambda c: (c.start, c.end))
    for n, cap in enumerate(ordered, 1):
        end = cap.end if cap.end > cap.start else cap.start + 0.001
        lines += [str(n), f"{vtt_time(cap.start)} --> {vtt_time(end)}", cue_text(cap.sentence), ""]
    return "\n".join(lines)
