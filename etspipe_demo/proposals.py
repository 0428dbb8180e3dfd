"""The demo's dense-captioning stages: train the event proposal model, then caption its own events.

`proposals_stage` trains the proposal model into the captioner's run folder
(reused on a rerun when its settings and the features did not change; an
interrupted run resumes). `dense_stage` runs `evaluate --dense` on the test
split (the model's own events captioned and scored with the official protocol,
AR@AN of the proposals, the AR-AN PNG) and writes WebVTT subtitles of every
captioned test video. `report_lines` adds their figures to the report, next to
the ground-truth-segment METEOR.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click

from etspipe_demo.stages import fingerprint, section, stage, write_stages


def _finished(run_dir: Path, epochs: int) -> bool | None:
    """True when the run folder's proposal model finished `epochs`, False when interrupted, None when absent."""
    from caption_model.proposals.infer import LAST, load_proposal_checkpoint

    if not (run_dir / LAST).is_file():
        return None
    return int(load_proposal_checkpoint(run_dir / LAST, prefer=(LAST,))["epoch"]) >= epochs


def proposals_stage(run: Any, data: dict, fp_extract: str, label: str) -> Path:
    """Train (or reuse, or resume) the proposal model; returns its best checkpoint."""
    from caption_model.proposals.infer import BEST, LAST
    from caption_model.proposals.train import train_proposals

    cfg = run.cfg
    fp = fingerprint(fp_extract, section(cfg, "proposals"), cfg["data"]["val_fraction"], cfg["data"]["split_seed"])
    with stage(f"{label} proposals (event proposal model)", run.timings):
        state = _finished(run.save_dir, int(cfg["proposals"]["epochs"])) if run.stages.get("proposals") == fp \
            else None
        run.stages["proposals"] = fp
        write_stages(run.out_dir, run.stages)
        run.reused["proposals"] = bool(state)
        if state:
            click.echo(f"proposal training already finished: reusing {run.save_dir / BEST}")
            return run.save_dir / BEST if (run.save_dir / BEST).is_file() else run.save_dir / LAST
        if state is False:
            click.echo("resuming the interrupted proposal training")
        result = train_proposals(cfg, str(run.store_path), [str(data["train"])], save_dir=run.save_dir,
                                 resume=str(run.save_dir) if state is False else None, progress=run.progress)
        click.echo(f"best proposal checkpoint: {result.best_path}")
        return result.best_path


def dense_stage(run: Any, data: dict, best: Path, label: str) -> dict:
    """evaluate --dense on the test split, then one WebVTT file per captioned test video."""
    from caption_model.proposals.dense import run_dense_evaluate, write_video_subtitles

    with stage(f"{label} dense (captions of the model's own events, AR@AN)", run.timings):
        dense = run_dense_evaluate(run.cfg, str(best), str(run.store_path), [str(data["test"])],
                                   out_dir=str(run.results_dir), progress=run.progress, echo=click.echo)
        folder = run.out_dir / "subtitles"
        paths = write_video_subtitles(dense["results_path"], "vtt", echo=None)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.vtt"):
            old.unlink()
        dense["subtitles"] = [str(Path(p).replace(folder / Path(p).name)) for p in paths]
        with contextlib.suppress(OSError):  # the results' own subtitle folder, emptied by the move
            Path(dense["results_path"]).with_suffix("").rmdir()
        click.echo(f"subtitles: {len(paths)} WebVTT files in {folder}")
    return dense


def report_lines(dense: dict, evaluation: dict) -> list[str]:
    """Dense METEOR next to the ground-truth-segment METEOR, AR@10, recall@0.5 with 10, subtitles."""
    def meteor(scores: dict) -> str:
        value = scores.get("average", {}).get("METEOR")
        return "n/a" if value is None else f"{value:.2f}"

    figures = dense["proposals"]
    subs = dense.get("subtitles", [])
    return ["\ndense captioning (test split: the proposal model's own events, then captions):",
            f"  METEOR {meteor(dense['scores'])} on proposed events vs {meteor(evaluation['scores'])} on "
            f"ground-truth segments ({dense['n_events']} events captioned)",
            f"  proposals: AR@10 {100 * figures['AR@10']:.1f}%, recall at tIoU 0.5 with 10 proposals "
            f"{100 * figures['R@0.5_10']:.1f}%, AUC {figures['AUC']:.1f} (AR-AN curve: {figures['plot_path']})",
            f"  dense results: {dense['results_path']}",
            f"  subtitles: {len(subs)} WebVTT files" + (f", e.g. {subs[0]}" if subs else "")]
