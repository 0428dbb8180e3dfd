"""The file list of `etspipe predict`: which videos (and which parts of them) to caption.

One entry a line, in either of two layouts:

* ``VIDEO [START END]`` separated by spaces: VIDEO is a video file path or a
  video id already in the store; START/END in seconds; no times means the
  whole video. A path may contain spaces (the last two fields are the times
  when both are numbers; otherwise the whole line must name an existing file).
* ``video_id<TAB>start<TAB>end[<TAB>sentence]``: the reference
  implementation's layout (the sentence, a reference caption, is kept but not
  used for prediction).

``#`` at the start of a line, or after white space, starts a comment; blank
lines are ignored. Parsing never stops at a bad line: each problem is reported
with its line number and the good lines still run. A line is bad only when it
names no video or its times are not numbers; times outside the video, reversed
or zero-length get rows by the one alignment rule, as in evaluation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from etspipe.files import read_text

_COMMENT = re.compile(r"(^|\s)#.*$")


@dataclass(frozen=True)
class FileListEntry:
    """One requested caption: `video` as written (path or id), times in seconds or None (whole video)."""

    line: int
    video: str
    start: float | None
    end: float | None
    sentence: str | None = None

    @property
    def where(self) -> str:
        return f"line {self.line}"


@dataclass(frozen=True)
class LineError:
    """A line that cannot be used, and why (shown to the user with its number)."""

    line: int
    text: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}: {self.text.strip()!r}"


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _times(line_no: int, raw: str, video: str, start_s: str, end_s: str,
           sentence: str | None = None) -> FileListEntry | LineError:
    start, end = _number(start_s), _number(end_s)
    if start is None or end is None:
        bad = start_s if start is None else end_s
        return LineError(line_no, raw, f"cannot read {bad!r} as a time in seconds")
    # Reversed, zero-length, negative or past-the-end times are not the line's fault: downloads are
    # often shorter than annotated, and annotation files hold such segments. The alignment rule gives
    # them rows (features_store.alignment.rows_for_segment) and predict counts each case.
    return FileListEntry(line_no, video, start, end, sentence)


def parse_line(line_no: int, raw: str, base_dir: Path | None = None) -> FileListEntry | LineError | None:
    """One line -> an entry, an error, or None for blank/comment lines."""
    text = raw.rstrip("\r\n")
    if "\t" in text:
        fields = [f.strip() for f in text.split("\t")]
        if fields[0].startswith("#") or not any(fields):
            return None
        if len(fields) not in (3, 4):
            return LineError(line_no, raw, "a tab-separated line needs video_id, start, end[, sentence]")
        if not fields[0]:
            return LineError(line_no, raw, "no video given")
        return _times(line_no, raw, fields[0], fields[1], fields[2], fields[3] if len(fields) == 4 else None)
    text = _COMMENT.sub("", text).strip()
    if not text:
        return None
    parts = text.split()
    if len(parts) == 1:
        return FileListEntry(line_no, parts[0], None, None)
    if len(parts) >= 3 and _number(parts[-1]) is not None and _number(parts[-2]) is not None:
        return _times(line_no, raw, " ".join(parts[:-2]), parts[-2], parts[-1])
    whole = Path(text) if base_dir is None or Path(text).is_absolute() else base_dir / text
    if whole.exists() or Path(text).exists():
        return FileListEntry(line_no, text, None, None)
    if len(parts) == 2:
        if _number(parts[1]) is not None:
            return LineError(line_no, raw, "give both START and END (or neither, for the whole video)")
        return LineError(line_no, raw, "expected VIDEO [START END]")
    return _times(line_no, raw, " ".join(parts[:-2]), parts[-2], parts[-1])


def parse_filelist_text(text: str, base_dir: Path | None = None) -> tuple[list[FileListEntry], list[LineError]]:
    """All entries and all line errors of a file list's text."""
    entries: list[FileListEntry] = []
    errors: list[LineError] = []
    for i, raw in enumerate(text.splitlines(), 1):
        got = parse_line(i, raw, base_dir)
        if isinstance(got, LineError):
            errors.append(got)
        elif got is not None:
            entries.append(got)
    return entries, errors


def read_filelist(path: str | Path) -> tuple[list[FileListEntry], list[LineError]]:
    """Parse a file list; an unreadable file is a UserError, bad lines are returned as errors."""
    path = Path(path)
    return parse_filelist_text(read_text(path, "file list"), path.parent)
