"""`etspipe view`: a result file as one HTML page (video, captions, timeline, attention).

`write_page` is the composer every page goes through (this command, `predict
--html`, the demo): it hands the viewer the project's subtitle writer for the
caption track and, with a store, the durations and source files it recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from etspipe.errors import UserError
from etspipe_cli.common import ManyValuesOption

logger = logging.getLogger(__name__)


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
    from caption_model.subtitles import to_vtt
    from etspipe_view import build_page
    from etspipe_view.inputs import read_results

    durations, known = {}, {}
    if store_path:
        durations, known = store_videos(store_path, read_results(results))
    known.update(sources or {})
    return build_page(results, out_path, video_dirs=video_dirs, durations=durations, sources=known, cues=to_vtt,
                      **options)


@click.command()
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="HTML file to write (one self-contained file).")
@click.option("--videos", "video_dirs", cls=ManyValuesOption, multiple=True, type=click.Path(file_okay=False),
              help="Folder(s) holding the video files (<id>.mp4 ...); linked by a path relative to the page.")
@click.option("--store", "store_path", default=None,
              help="Feature store: video durations, and the source files of videos extracted into it.")
@click.option("--annotations", cls=ManyValuesOption, multiple=True, type=click.Path(dir_okay=False),
              help="Reference files (ActivityNet/YouCook2 JSON): references beside predictions, per-video scores.")
@click.option("--scores", "scores_path", default=None, type=click.Path(dir_okay=False),
              help="evaluate's scores JSON (default: <results stem>_scores.json beside RESULTS if present).")
@click.option("--attention", "attention_path", default=None, type=click.Path(dir_okay=False),
              help="Attention sidecar JSON (default: <results stem>_attention.json beside RESULTS if present).")
@click.option("--title", default=None, help="Page title (default: the result file's name).")
def view(results: str, out_path: str, video_dirs: tuple[str, ...], store_path: str | None,
         annotations: tuple[str, ...], scores_path: str | None, attention_path: str | None,
         title: str | None) -> None:
    """Write an HTML page to watch the captions of RESULTS (ActivityNet result JSON).

    Per video: the video with its captions as subtitles, a timeline of the
    events (click one to jump there), references and per-video scores when
    --annotations are given, and the attention over time of every caption
    whose attention predict saved. Opens in any browser, no server needed.

    \b
    Examples:
      etspipe view data/predict_results/predict_list.json --videos videos/ -o report.html
      etspipe view results.json --annotations val_1.json val_2.json -o val.html
    """
    summary = write_page(results, out_path, store_path=store_path, video_dirs=video_dirs,
                         annotation_paths=annotations, scores_path=scores_path, attention_path=attention_path,
                         title=title)
    click.echo(f"wrote {summary['page']} ({summary['bytes'] / 1e6:.1f} MB): {summary['videos']} videos, "
               f"{summary['captions']} captions, {summary['video_files']} video files found, "
               f"{summary['with_attention']} captions with attention")
