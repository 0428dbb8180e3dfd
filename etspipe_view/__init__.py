"""See the captions: one self-contained HTML page per result file.

The page shows, per video, the video with its captions as a WebVTT track, a
timeline of the events (click to seek), the references and per-video scores
when annotations are given, and for each caption the attention over time as a
heatmap on the same time axis. It is built from files only (a result JSON,
annotations, evaluate's scores, predict's attention sidecar): this package
imports no torch and no stage package, and opening the page needs no server.
"""

from etspipe_view.build import build_page, build_views, find_video

__all__ = ["build_page", "build_views", "find_video"]
