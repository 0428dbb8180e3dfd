"""The HTML page of a result file, with what the store and the subtitle writer add.

`write_page` is the one way every page is written (`etspipe view`, `predict
--html`, the demo): it hands the viewer (which reads files only) the project's
subtitle writer for the caption track and, with a store, the durations and
source files the store recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from etspipe.errors import UserError


def store_videos(store_path: str | Path, ids: Iterable[str] | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """Durations and source files the store recorded for `ids` (default all); read at build time only."""
    from features_store import open_store

    store_path = str(store_path)
    if "://" not in store_path and not Path(store_path).exists():
        raise UserError(f"feature store not found: {store_path}")
    durations, sources = {}, {}
    with open_store(store_path, "r") as store:
        complete = set(store.complete_ids())
        for vid in complete if ids is None else [i for i in ids if i in complete]:
            meta = store.video_meta(vid) or {}
            if meta.get("duration"):
                durations[vid] = float(meta["duration"])
            if meta.get("source"):
                sources[vid] = str(meta["source"])
    return durations, sources


def write_page(results: str | Path, out_path: str | Path, *, store_path: str | Path | None = None,
               video_dirs: Sequence[str | Path] = (), sources: dict[str, str] | None = None,
               **options: Any) -> dict[str, Any]:
    """Build the page of `results` (see `etspipe_view.build_page` for `options`); returns its summary.

    Files named in `sources` (video id -> path, e.g. the raw files predict just
    captioned) win over those the store recorded.
    """
    from caption_model.formats.subtitles import to_vtt
    from etspipe_view import build_page
    from etspipe_view.inputs import read_results

    durations, known = {}, {}
    if store_path:
        durations, known = store_videos(store_path, read_results(results))
    known.update(sources or {})
    return build_page(results, out_path, video_dirs=video_dirs, durations=durations, sources=known, cues=to_vtt,
                      **options)
