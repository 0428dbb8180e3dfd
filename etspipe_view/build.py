"""`build_page`: result file (+ references, scores, attention, videos) -> one HTML file.

Video files are referenced by a URL relative to the page, so the page and its
videos can move together; a video that cannot be found gets a placeholder that
says how to add it. Scores and attention written by `evaluate`/`predict` beside
the result file are picked up without flags.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from etspipe.errors import UserError
from etspipe_view import inputs
from etspipe_view.matching import best_matches, tiou_table, video_scores
from etspipe_view.page import metrics_table, render_html, video_payload

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webm", ".m4v", ".mov", ".mkv", ".ogv", ".avi")


def find_video(video_id: str, folders: Sequence[Path]) -> Path | None:
    """`<folder>/<id>.<ext>`, also with ActivityNet's `v_` prefix added or removed."""
    names = [video_id, video_id[2:] if video_id.startswith("v_") else f"v_{video_id}"]
    for folder in folders:
        for name in names:
            for suffix in VIDEO_SUFFIXES:
                path = folder / f"{name}{suffix}"
                if path.is_file():
                    return path
    return None


def video_url(path: Path, page_dir: Path) -> str:
    """The URL a page in `page_dir` uses for `path`: relative to the page, each segment percent-encoded.

    A file name is not a URL: `#` would start a fragment, `?` a query and `%` an
    escape, so the name is quoted here (the one place; the page's script puts the
    URL into `video.src` as it is). Across Windows drives there is no relative
    path (`os.path.relpath` raises ValueError), so the page gets the absolute
    `file://` URL, which `Path.as_uri` quotes itself.
    """
    target = path.resolve()
    try:
        rel = os.path.relpath(target, page_dir.resolve())
    except ValueError:
        return target.as_uri()
    return urllib.parse.quote(Path(rel).as_posix(), safe="/")


def _video_ref(video_id: str, folders: Sequence[Path], sources: Mapping[str, str], page_dir: Path
               ) -> tuple[str | None, str | None]:
    """(URL relative to the page, None) or (None, why there is no video)."""
    path = find_video(video_id, folders)
    if path is None and sources.get(video_id) and Path(sources[video_id]).is_file():
        path = Path(sources[video_id])
    if path is None:
        if folders:
            return None, f"no file for {video_id} in {', '.join(str(f) for f in folders)}"
        return None, "no --videos folder was given"
    return video_url(path, page_dir), None


def build_views(results_path: str | Path, annotation_paths: Sequence[str | Path] = (),
                attention_path: str | Path | None = None, durations: Mapping[str, float] | None = None,
                per_video_scores: Mapping[str, Mapping[str, float]] | None = None) -> list[inputs.VideoView]:
    """One `VideoView` per video of the result file (file order), with references and attention attached."""
    results = inputs.read_results(results_path)
    refs, ref_durations = inputs.read_references(annotation_paths) if annotation_paths else ({}, {})
    known = {**(durations or {}), **ref_durations}
    views = {}
    for vid, preds in results.items():
        view = inputs.VideoView(vid, preds, refs.get(vid, []), known.get(vid))
        if view.references:
            table = tiou_table(preds, view.references)
            view.matches = best_matches(table)
            view.scores = video_scores(table, len(view.references))
        view.scores.update((per_video_scores or {}).get(vid, {}))
        views[vid] = view
    if attention_path is not None:
        inputs.attach_attention(views, inputs.read_sidecar(attention_path), str(attention_path))
    for view in views.values():  # no duration known from any file: the time axis ends at the last event
        if view.duration is None:
            view.duration = max([c.end for c in view.predictions + view.references], default=None)
    return list(views.values())


def build_page(
    results_path: str | Path,
    out_path: str | Path,
    *,
    video_dirs: Sequence[str | Path] = (),
    annotation_paths: Sequence[str | Path] = (),
    scores_path: str | Path | None = None,
    attention_path: str | Path | None = None,
    durations: Mapping[str, float] | None = None,
    sources: Mapping[str, str] | None = None,
    title: str | None = None,
    cues: Callable[[Sequence[Mapping[str, Any]]], str],
) -> dict[str, Any]:
    """Write the page for `results_path` to `out_path`; return a summary (counts, what was found).

    `cues` turns a video's result entries into WebVTT text: the project's one
    subtitle writer, `caption_model.formats.subtitles.to_vtt`, handed in by the caller
    since this package imports no stage (`etspipe_flows.page.write_page` does it).
    `durations`/`sources` (video id -> seconds / file path) come from a feature
    store when the caller has one. `scores_path` and `attention_path` default to
    evaluate's `<stem>_scores.json` and predict's `<stem>_attention.json` beside
    the result file.
    """
    out = Path(out_path)
    if out.exists() and out.is_dir():
        raise UserError(f"{out} is a folder; give the HTML file to write (-o report.html)")
    folders = [Path(d) for d in video_dirs]
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"videos folder not found: {folder}")
    scores_path = scores_path or inputs.default_beside(results_path, "_scores.json")
    attention_path = attention_path or inputs.default_beside(results_path, "_attention.json")
    scores = inputs.read_scores(scores_path) if scores_path else None
    per_video = scores.get("per_video") if scores and isinstance(scores.get("per_video"), dict) else None
    views = build_views(results_path, annotation_paths, attention_path, durations, per_video)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = []
    n_video_files = 0
    for view in views:
        src, missing = _video_ref(view.video_id, folders, sources or {}, out.parent)
        n_video_files += src is not None
        entries = [{"timestamp": [c.start, c.end], "sentence": c.sentence} for c in view.predictions]
        payload.append(video_payload(view, src, missing, cues(entries)))
    text = render_html(payload, title or f"Captions: {Path(results_path).name}", Path(results_path).name,
                       metrics_table(scores), has_refs=bool(annotation_paths))
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    summary = {
        "page": str(out), "bytes": out.stat().st_size, "videos": len(views),
        "captions": sum(len(v.predictions) for v in views), "video_files": n_video_files,
        "with_attention": sum(len(v.attention) for v in views),
        "scores": str(scores_path) if scores_path else None,
        "attention": str(attention_path) if attention_path else None,
    }
    logger.debug("wrote %s: %d videos, %d captions, %d video files, %d with attention", out, summary["videos"],
                summary["captions"], n_video_files, summary["with_attention"])
    return summary
