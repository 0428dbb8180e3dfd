"""`etspipe view`: a result file as one HTML page (video, captions, timeline, attention).

The page is written by `etspipe_flows.page.write_page`, as for `predict --html` and the demo.
"""

from __future__ import annotations

import logging

import click

from etspipe_cli.common import ManyValuesOption
from etspipe_flows.page import write_page

logger = logging.getLogger(__name__)


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
