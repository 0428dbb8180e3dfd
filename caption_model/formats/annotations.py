"""Caption annotations: ActivityNet Captions and YouCook2 JSON -> caption segments.

Accepted layouts (several files may be given; their videos are merged):

* ActivityNet Captions: ``{"v_<id>": {"duration": s, "timestamps": [[start, end], ...],
  "sentences": [...]}}``;
* the same without the ``v_`` prefix (the YouCook2 files in that layout);
* the official YouCook2 file ``{"database": {"<id>": {"duration": s,
  "annotations": [{"segment": [start, end], "sentence": ...}, ...]}}}``.

Video ids are kept exactly as written (a YouCook2 id may itself start with
``v_``); matching them to store ids is the dataset's job.

Real files carry quirks. Each has one rule, and every application of a rule is
counted in the report returned with the segments (:func:`summary_line` prints it):

==========================  ===================================================================
``stripped_space``          leading/trailing white space of a sentence is removed (kept)
``non_ascii``               sentences with non-ASCII letters (``piñata``) are kept as they are
``empty_sentence``          a sentence with no word left is dropped
``reversed``                ``start > end``: the two are swapped (kept)
``clipped``                 a timestamp outside ``[0, duration]`` is clipped into it (kept)
``outside``                 a segment wholly outside ``[0, duration]`` (clipping would leave a
                            point at an end of the video, e.g. ``[-3, -1]``): dropped
``zero_length``             ``start == end`` (after the rules above): kept; the store rejects an
                            empty segment, so the dataset reads the row nearest to that instant
                            (docs/ARCHITECTURE.md's rule for a segment that holds no row centre)
``duplicate``               the same video, times and sentence twice: the copy is dropped
``shared_segment``          the same times with a different sentence: kept (two captions)
``bad_timestamp``           a timestamp that is not two numbers: the segment is dropped
``unpaired``                more timestamps than sentences or the reverse: the extras are dropped
``bad_duration``            a missing / non-positive duration: the largest end time is used
``bad_video``               an entry that is not a mapping with timestamps and sentences: dropped
``videos_in_several_files`` a video found in more than one file: its segments are merged
==========================  ===================================================================

A missing file, invalid JSON, a top level that is not a mapping, a file with no
videos, and files where the rules leave no segment at all are each a
:class:`~etspipe.errors.UserError` naming the file(s) (the last one says which
rules dropped how many segments): training on nothing, or on points clipped
out of impossible times, is never what the user meant.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from caption_model.formats.text import tokenize
from etspipe.errors import UserError
from etspipe.files import read_json

logger = logging.getLogger(__name__)

QUIRKS = ("stripped_space", "non_ascii", "empty_sentence", "reversed", "clipped", "outside", "zero_length",
          "duplicate", "shared_segment", "bad_timestamp", "unpaired", "bad_duration", "bad_video",
          "videos_in_several_files")
# the rules that drop a segment (the others keep it, changed or not)
DROPPING = ("empty_sentence", "outside", "duplicate", "bad_timestamp", "unpaired", "bad_video")


@dataclass(frozen=True)
class Segment:
    """One caption of one time segment of one video (times in seconds, already cleaned)."""

    video_id: str
    start: float
    end: float
    sentence: str
    duration: float


def _read_json(path: Path) -> dict:
    data = read_json(path, "annotation file")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of video ids to annotations, got {type(data).__name__}")
    return data


def _entries(data: dict) -> dict:
    """Videos of a file in the ActivityNet layout (the official YouCook2 layout is converted)."""
    db = data.get("database")
    if isinstance(db, dict) and all(isinstance(v, dict) for v in db.values()):
        out = {}
        for vid, entry in db.items():
            anns = entry.get("annotations", []) if isinstance(entry, dict) else []
            out[vid] = {
                "duration": entry.get("duration") if isinstance(entry, dict) else None,
                "timestamps": [a.get("segment") for a in anns if isinstance(a, dict)],
                "sentences": [a.get("sentence") for a in anns if isinstance(a, dict)],
            }
        return out
    return data


def _number(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _clean_video(vid: str, entry: object, counts: Counter) -> list[Segment]:
    """Apply the quirk rules of the module docstring to one video entry."""
    if not isinstance(entry, dict) or not isinstance(entry.get("timestamps"), list) \
            or not isinstance(entry.get("sentences"), list):
        counts["bad_video"] += 1
        return []
    stamps, sentences = entry["timestamps"], entry["sentences"]
    if len(stamps) != len(sentences):
        counts["unpaired"] += abs(len(stamps) - len(sentences))
    pairs = []
    for stamp, sentence in zip(stamps, sentences, strict=False):  # extras counted as unpaired
        start = end = None
        if isinstance(stamp, (list, tuple)) and len(stamp) == 2:
            start, end = _number(stamp[0]), _number(stamp[1])
        if start is None or end is None or not isinstance(sentence, str):
            counts["bad_timestamp"] += 1
            continue
        pairs.append((start, end, sentence))
    duration = _number(entry.get("duration"))
    if duration is None or duration <= 0:
        counts["bad_duration"] += 1
        duration = max([max(s, e) for s, e, _ in pairs], default=0.0)
    segments = []
    for start, end, sentence in pairs:
        clean = sentence.strip()
        if clean != sentence:
            counts["stripped_space"] += 1
        if not tokenize(clean):
            counts["empty_sentence"] += 1
            continue
        if not clean.isascii():
            counts["non_ascii"] += 1
        if start > end:
            counts["reversed"] += 1
            start, end = end, start
        if start < 0 or end > duration:
            start, end = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
            if start == end:
                counts["outside"] += 1
                continue
            counts["clipped"] += 1
        if start == end:
            counts["zero_length"] += 1
        segments.append(Segment(vid, start, end, clean, duration))
    return segments


def load_annotations(paths: str | Path | Sequence[str | Path]) -> tuple[list[Segment], dict]:
    """All caption segments of `paths` (in file order) and a report of the quirks met.

    The report holds ``files``, ``videos``, ``segments`` (kept) and one count per
    quirk rule (see the module docstring), zero counts included.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise UserError("no annotation file given")
    counts: Counter = Counter()
    by_video: dict[str, list[Segment]] = {}
    for path in map(Path, paths):
        entries = _entries(_read_json(path))
        if not entries:
            raise UserError(f"{path}: the file has no videos")
        for vid, entry in entries.items():
            segments = _clean_video(str(vid), entry, counts)
            if str(vid) in by_video:
                counts["videos_in_several_files"] += 1
            by_video.setdefault(str(vid), []).extend(segments)
    out: list[Segment] = []
    for segments in by_video.values():
        seen_text: set[tuple[float, float, str]] = set()
        seen_times: set[tuple[float, float]] = set()
        for seg in segments:
            key = (seg.start, seg.end, " ".join(tokenize(seg.sentence)))
            if key in seen_text:
                counts["duplicate"] += 1
                continue
            if (seg.start, seg.end) in seen_times:
                counts["shared_segment"] += 1
            seen_text.add(key)
            seen_times.add((seg.start, seg.end))
            out.append(seg)
    report = {"files": [str(p) for p in paths], "videos": len({s.video_id for s in out}), "segments": len(out)}
    report.update({q: counts.get(q, 0) for q in QUIRKS})
    if not out:
        dropped = ", ".join(f"{q} {report[q]}" for q in DROPPING if report[q]) or "none"
        raise UserError(f"{', '.join(report['files'])}: no valid caption segment left "
                        f"(the quirk rules dropped: {dropped})")
    logger.info("%s", summary_line(report))
    return out, report


def summary_line(report: dict) -> str:
    """One line: what was loaded and which quirk rules applied how often."""
    quirks = ", ".join(f"{q} {report[q]}" for q in QUIRKS if report.get(q))
    return (f"annotations: {report['segments']} segments of {report['videos']} videos from "
            f"{len(report['files'])} file(s); quirks: {quirks or 'none'}")


def held_out_count(n_videos: int, val_fraction: float, min_videos: int = 0, max_share: float = 0.25) -> int:
    """How many videos to hold out: ``round(val_fraction * n)`` (at least one), raised to `min_videos`.

    The floor exists because a statistic chosen on the held-out videos (the
    proposal model's epoch and its events threshold) is noise on a handful of
    them; it never takes more than `max_share` of a corpus, and a fraction of 0
    holds out nothing (the caller asked to train on everything).
    """
    if val_fraction <= 0 or n_videos <= 1:
        return 0
    n_val = max(1, round(val_fraction * n_videos))
    if min_videos > n_val:
        n_val = max(n_val, min(int(min_videos), int(max_share * n_videos)))
    return min(n_videos - 1, n_val)


def split_by_video(segments: Iterable[Segment], val_fraction: float, seed: int,
                   min_videos: int = 0) -> tuple[list[Segment], list[Segment]]:
    """Hold out `held_out_count` whole videos.

    Videos are ranked by a seeded hash of their id, not by a shuffled list, so a
    video's side does not change when other videos are added or removed (a store
    that grows keeps its validation videos), and a larger held-out set (a floor)
    holds every video of a smaller one with the same seed.
    """
    segments = list(segments)
    videos = sorted({s.video_id for s in segments})
    n_val = held_out_count(len(videos), val_fraction, min_videos)

    def rank(vid: str) -> str:
        return hashlib.sha1(f"{seed}:{vid}".encode()).hexdigest()

    val_ids = set(sorted(videos, key=rank)[:n_val])
    return [s for s in segments if s.video_id not in val_ids], [s for s in segments if s.video_id in val_ids]


def store_id_for(video_id: str, available: set[str] | frozenset[str]) -> str | None:
    """The store id of an annotation id: exact, else with the ``v_`` prefix toggled, else None."""
    if video_id in available:
        return video_id
    other = video_id[2:] if video_id.startswith("v_") else f"v_{video_id}"
    return other if other in available else None


def match_store(segments: Sequence[Segment], complete_ids: Sequence[str],
                failed: dict[str, dict]) -> tuple[list[tuple[Segment, str]], dict[str, str]]:
    """Pair segments with the store ids that hold their video; the others' videos are skipped with a reason."""
    available = frozenset(complete_ids)
    failed_ids = frozenset(failed)
    kept: list[tuple[Segment, str]] = []
    skipped: dict[str, str] = {}
    for seg in segments:
        sid = store_id_for(seg.video_id, available)
        if sid is not None:
            kept.append((seg, sid))
            continue
        fid = store_id_for(seg.video_id, failed_ids)
        if fid is not None:
            info = failed.get(fid) or {}
            skipped[seg.video_id] = f"failed in store: {info.get('reason', '?')}"
        else:
            skipped[seg.video_id] = "missing from store"
    return kept, skipped
