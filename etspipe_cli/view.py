"""`etspipe view`: a result file as one HTML page (video, captions, timeline, attention)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from etspipe.errors import UserError
from etspipe_cli.common import ManyValuesOption

logger = logging.getLogger(__name__)


def store_videos(store_path: str) -> tuple[dict[str, float], dict[str, str]]:
    """Durations and source files the store recorded per video (read once, at build time only)."""
    from features_store import open_store

    if "://" not in store_path and not Path(store_path).exists():
        raise UserError(f"feature store not found: {store_path}")
    durations, sources = {}, {}
    with open_store(store_path, "r") as store:
        for vid in store.complete_ids():
            meta = store.video_meta(vid) or {}
            if meta.get("duration"):
                durations[vid] = float(meta["duration"])
            if meta.get("source"):
                sources[vid] = str(meta["source"])
    return durations, sources


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
    from etspipe_view import build_page

    durations, sources = store_videos(store_path) if store_path else ({}, {})
    summary = build_page(results, out_path, video_dirs=video_dirs, annotation_paths=annotations,
                         scores_path=scores_path, attention_path=attention_path, durations=durations,
                         sources=sources, title=title)
    click.echo(f"wrote {summary['page']} ({summary['bytes'] / 1e6:.1f} MB): {summary['videos']} videos, "
               f"{summary['captions']} captions, {summary['video_files']} video files found, "
               f"{summary['with_attention']} captions with attention")
