"""Reading what a page shows: result file, reference annotations, scores and the attention sidecar.

The viewer is a reader of files only (docs/ARCHITECTURE.md: no torch, no store access to
open a page), so it reads the JSON formats itself instead of importing stage 2.
It is lenient where a viewer can be: a malformed entry is skipped with a
warning and the rest is shown; only an unreadable or wholly wrong file is a
`UserError` naming it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from etspipe.errors import UserError
from etspipe.files import read_json

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = "etspipe-attention"  # caption_model.formats.attention_sidecar writes it (not importable here)


@dataclass
class Caption:
    """One timed sentence (a prediction or a reference)."""

    start: float
    end: float
    sentence: str
    index: int = -1  # position in the result file's list for the video (the sidecar's key)


@dataclass
class Attention:
    """Attention of one prediction: words x rows, with the centre time of each row."""

    words: list[str]
    row_times: list[float]
    weights: np.ndarray  # (len(words), len(row_times))


@dataclass
class VideoView:
    """Everything the page shows for one video."""

    video_id: str
    predictions: list[Caption]
    references: list[Caption] = field(default_factory=list)
    duration: float | None = None
    attention: dict[int, Attention] = field(default_factory=dict)
    scores: dict[str, float | None] = field(default_factory=dict)
    matches: list[tuple[int, float]] = field(default_factory=list)  # per prediction: (best reference, tIoU)


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _caption(item: Any, index: int = -1) -> Caption | None:
    if not isinstance(item, dict) or not isinstance(item.get("sentence"), str):
        return None
    ts = item.get("timestamp")
    if not isinstance(ts, (list, tuple)) or len(ts) != 2:
        return None
    start, end = _number(ts[0]), _number(ts[1])
    if start is None or end is None:
        return None
    return Caption(min(start, end), max(start, end), item["sentence"], index)


def read_results(path: str | Path) -> dict[str, list[Caption]]:
    """`{video_id: [Caption]}` of an ActivityNet-format result file, in file order."""
    doc = read_json(path, "result file")
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        raise UserError(f"{path}: not an ActivityNet result file (needs a 'results' mapping of video ids)")
    out: dict[str, list[Caption]] = {}
    skipped = 0
    for vid, entries in doc["results"].items():
        if not isinstance(entries, list):
            skipped += 1
            continue
        caps = [_caption(e, i) for i, e in enumerate(entries)]
        skipped += sum(c is None for c in caps)
        out[str(vid)] = [c for c in caps if c is not None]
    if skipped:
        logger.warning("%s: %d malformed entr(y/ies) skipped", path, skipped)
    return out


def _annotation_videos(data: Any, path: str | Path) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of video ids to annotations")
    db = data.get("database")
    if isinstance(db, dict):  # the official YouCook2 layout
        return {
            str(vid): {
                "duration": e.get("duration"),
                "timestamps": [a.get("segment") for a in e.get("annotations", []) if isinstance(a, dict)],
                "sentences": [a.get("sentence") for a in e.get("annotations", []) if isinstance(a, dict)],
            }
            for vid, e in db.items() if isinstance(e, dict)
        }
    return {str(k): v for k, v in data.items()}


def read_references(paths: Sequence[str | Path]) -> tuple[dict[str, list[Caption]], dict[str, float]]:
    """References and durations of ActivityNet/YouCook2 annotation files (videos merged across files)."""
    refs: dict[str, list[Caption]] = {}
    durations: dict[str, float] = {}
    for path in paths:
        for vid, entry in _annotation_videos(read_json(path, "annotation file"), path).items():
            if not isinstance(entry, dict):
                continue
            stamps, sents = entry.get("timestamps") or [], entry.get("sentences") or []
            caps = [_caption({"timestamp": t, "sentence": s}) for t, s in zip(stamps, sents, strict=False)]
            refs.setdefault(vid, []).extend(c for c in caps if c is not None)
            d = _number(entry.get("duration"))
            if d is not None and d > 0:
                durations[vid] = d
    return refs, durations


def read_scores(path: str | Path) -> dict[str, Any]:
    """An `evaluate` scores file: needs `average` and `per_tiou` (per-video scores kept when present)."""
    doc = read_json(path, "scores file")
    if not isinstance(doc, dict) or not isinstance(doc.get("average"), dict) or not isinstance(
            doc.get("per_tiou"), dict):
        raise UserError(f"{path}: not an evaluate scores file (needs 'average' and 'per_tiou')")
    return doc


def _attention(item: Any) -> Attention | None:
    if not isinstance(item, dict):
        return None
    words, times, weights = item.get("words"), item.get("row_times"), item.get("attention")
    if not (isinstance(words, list) and isinstance(times, list) and isinstance(weights, list)):
        return None
    try:  # numpy, not a loop per number: a val_1 sidecar holds tens of millions of weights
        w, t = np.asarray(weights, dtype=np.float64), np.asarray(times, dtype=np.float64)
    except (TypeError, ValueError):  # ragged rows, strings, nulls
        return None
    if t.ndim != 1 or w.shape != (len(words), len(t)) or not (np.isfinite(w).all() and np.isfinite(t).all()):
        return None
    return Attention([str(x) for x in words], t.tolist(), w)


def read_sidecar(path: str | Path) -> dict[str, tuple[float | None, dict[int, Attention], dict[int, dict]]]:
    """`{video_id: (duration, {entry index: Attention}, {entry index: raw entry})}` of an attention sidecar."""
    doc = read_json(path, "attention sidecar")
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT or not isinstance(doc.get("videos"), dict):
        raise UserError(f"{path}: not an attention sidecar (format must be {SIDECAR_FORMAT!r} with 'videos')")
    out = {}
    bad = 0
    for vid, video in doc["videos"].items():
        entries = video.get("entries") if isinstance(video, dict) else None
        if not isinstance(entries, dict):
            bad += 1
            continue
        parsed, raw = {}, {}
        for key, item in entries.items():
            att = _attention(item)
            if att is None or not str(key).isdigit():
                bad += 1
                continue
            parsed[int(key)], raw[int(key)] = att, item
        out[str(vid)] = (_number(video.get("duration")), parsed, raw)
    if bad:
        logger.warning("%s: %d malformed attention entr(y/ies) skipped", path, bad)
    return out


def attach_attention(videos: dict[str, VideoView], sidecar: dict, source: str = "sidecar") -> int:
    """Put sidecar attention on the predictions it belongs to; a stale entry (other sentence) is left out."""
    stale = 0
    for vid, (duration, parsed, raw) in sidecar.items():
        view = videos.get(vid)
        if view is None:
            stale += len(parsed)
            continue
        if view.duration is None and duration:
            view.duration = duration
        by_index = {p.index: p for p in view.predictions}
        for index, att in parsed.items():
            pred = by_index.get(index)
            if pred is None or raw[index].get("sentence", pred.sentence) != pred.sentence:
                stale += 1
                continue
            view.attention[index] = att
    if stale:
        logger.warning("%s: %d attention entr(y/ies) match no caption of the result file (stale sidecar?)",
                       source, stale)
    return stale


def default_beside(results_path: str | Path, suffix: str) -> Path | None:
    """`<results stem><suffix>` beside the result file, if it exists (evaluate/predict write there)."""
    path = Path(results_path)
    candidate = path.with_name(path.stem + suffix)
    return candidate if candidate.is_file() else None
