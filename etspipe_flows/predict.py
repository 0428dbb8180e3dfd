"""Prediction from raw files to captions: where the two stages meet.

Raw video files are extracted into the store with the store's own recorded
settings (`extract_features.extract_like_store`), then the caption model
captions store ids only (`caption_model.predict`), which never decodes video;
events come from the run's proposal model, subtitles and the page follow.
`etspipe predict` and the demo both call `predict_videos`, which loads and resolves through the Python
API's `Captioner` (etspipe_flows/api.py), so there is one path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from etspipe.errors import UserError


def predict_videos(cfg: dict, weights: str | Path | None, filelist: str | Path | None = None,
                   videos: Sequence[str] = (), store_path: str | Path | None = None,
                   out_path: str | Path | None = None, plot_dir: str | Path | None = None, *,
                   html: bool = False, c3d_weights: str | None = None, device: str | None = None,
                   max_events: int | None = None, subtitles: str | None = None,
                   pca_file: str | None = None, mean_cube: str | None = None,
                   echo: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Caption the entries of `filelist` and/or the video files `videos`; the summary of `run_predict`.

    Entries without times become the video's events when the run folder holds a
    proposal model (`caption_model.proposals.dense`); `subtitles` ("srt"/"vtt")
    writes one subtitle file per video into a folder named after the result JSON
    (`write_video_subtitles`: `<results stem>/<video>.<fmt>`, so runs never
    overwrite each other's). With `html`, the page of the results
    (`<results stem>.html`, see `etspipe view`) is written too, with the
    attention of every caption and the captioned files as its videos; its path
    is the summary's `html_path`. `pca_file` and `mean_cube`
    are the projection and mean cube files raw videos are extracted with
    (`extract_features.extract_like_store`: a store's recipe or its own record).
    """
    from caption_model.formats.filelist import FileListEntry, read_filelist
    from caption_model.predict import run_predict
    from caption_model.proposals.dense import expand_untimed, write_video_subtitles
    from etspipe_flows.api import Captioner

    entries, errors = read_filelist(filelist) if filelist else ([], [])
    first = max([e.line for e in entries] + [e.line for e in errors] + [0]) + 1
    entries += [FileListEntry(first + i, v, None, None) for i, v in enumerate(videos)]
    if not entries and not errors:
        raise UserError(f"nothing to caption: {filelist} lists no video" if filelist else "no video given")
    failed = [{"line": e.line, "error": str(e)} for e in errors]
    device = device or cfg["train"]["device"]
    captioner = Captioner.from_config(cfg, weights, store_path, device=device, extract_weights=c3d_weights,
                                      pca_file=pca_file, mean_cube=mean_cube, echo=echo)  # the Python API's own
    predictor = captioner.predictor
    known, bad, sources = captioner.resolve(entries, Path(filelist).parent if filelist else None)
    failed += bad
    known, scores, notes = expand_untimed(cfg, predictor.checkpoint, predictor.store_path, known,
                                          max_events=max_events, device=predictor.device)
    name = Path(filelist).stem if filelist else "videos"
    summary = run_predict(cfg, predictor, known, failed, name=name, out_path=out_path, plot_dir=plot_dir,
                          attention=html, echo=echo, proposal_scores=scores, notes=notes)
    written = summary["results_path"] is not None
    if subtitles and written:
        summary["subtitles"] = write_video_subtitles(summary["results_path"], subtitles, echo)
    summary["html_path"] = _page(summary, predictor.store_path, sources, echo) if html and written else None
    return summary


def _page(summary: dict[str, Any], store_path: str, sources: dict[str, str],
          echo: Callable[[str], None] | None) -> str:
    """The HTML page beside the results: videos from the files just captioned, else the store's record."""
    from etspipe_flows.page import write_page

    results = Path(summary["results_path"])
    page = write_page(results, results.with_suffix(".html"), store_path=store_path, sources=sources,
                      attention_path=summary["attention_path"])
    if echo:
        echo(f"wrote the page {page['page']} (open it in a browser)")
    return page["page"]
