"""`etspipe demo`: the real pipeline, end to end, on videos the project makes itself.

A newcomer has no ActivityNet on disk, so the demo generates short captioned
videos (`etspipe_demo.dataset`), then runs exactly the code a user would run on
real data: decord + C3D into a Zarr store, training (captioner and event
proposals), the official-protocol scores on the held-out test split for
ground-truth segments and for the model's own events (dense captioning, with
AR@AN and subtitles), and predictions with attention plots. It
ends with a report (printed, and written to `report.txt` / `report.json`).

A rerun reuses the expensive stages whose settings did not change
(`etspipe_demo.stages`); `fresh` redoes everything. Evaluation and prediction
always run: they are the point of the demo and take seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
from pathlib import Path

import click

from etspipe.config import CONFIG_DIR, load_config
from etspipe_demo.proposals import dense_stage, proposals_stage
from etspipe_demo.stages import (
    STAGES_FILE,
    fingerprint,
    read_stages,
    remove_store,
    section,
    stage,
    training_state,
    write_stages,
)

log = logging.getLogger(__name__)

DEMO_CONFIG = CONFIG_DIR / "demo.yaml"
# Videos of the built-in set. Chosen with the config so that the whole demo fits in
# about 5 minutes on two CPU cores; see docs/PERFORMANCE.md ("Demo and temporal attention").
DEMO_VIDEOS = 450
N_EXAMPLES = 5
N_PREDICT_VIDEOS = 3


@dataclasses.dataclass
class _Run:
    """One demo run: its folders, config, stage fingerprints and what it measured so far."""

    out_dir: Path
    cfg: dict
    progress: bool
    stages: dict[str, str] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    reused: dict[str, bool] = dataclasses.field(default_factory=dict)

    @property
    def store_path(self) -> Path:
        return self.out_dir / "features.zarr"

    @property
    def save_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def results_dir(self) -> Path:
        return self.out_dir / "results"

    @property
    def plot_dir(self) -> Path:
        return self.out_dir / "attention_plots"


def generate_only(out_dir: str | Path, n_videos: int = DEMO_VIDEOS) -> dict:
    """Write the demo videos and annotations and stop (`etspipe demo --generate-only DIR`)."""
    from etspipe_demo.dataset import generate_demo_dataset

    info = generate_demo_dataset(Path(out_dir), n_videos=n_videos, progress=True, workers=0)
    click.echo(f"demo data in {out_dir}: {info.get('summary', '')}")
    return info


def _start(out_dir: Path, fresh: bool, cfg: dict | None, progress: bool) -> _Run:
    """The run's config (its output folders set) and folder; `fresh` removes every earlier output."""
    cfg = copy.deepcopy(cfg if cfg is not None else load_config(DEMO_CONFIG))
    run = _Run(out_dir, cfg, progress)
    if fresh:
        remove_store(run.store_path)
        for path in (run.save_dir, run.results_dir, run.plot_dir):
            shutil.rmtree(path, ignore_errors=True)
        (out_dir / STAGES_FILE).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg["train"]["save_dir"] = str(run.save_dir)
    cfg["eval"]["results_dir"] = str(run.results_dir)
    cfg["predict"]["results_dir"] = str(run.results_dir)
    run.stages = read_stages(out_dir)
    return run


def _data_stage(run: _Run, n_videos: int, fresh: bool) -> dict:
    from etspipe_demo.dataset import generate_demo_dataset

    with stage("1/7 data (generated videos + captions)", run.timings):
        # In-process: on two busy cores spawned writers cost more than they save (450 videos:
        # 33 s with two worker processes, 14 s in-process, docs/PERFORMANCE.md).
        data = generate_demo_dataset(run.out_dir / "data", n_videos=n_videos, force=fresh, progress=run.progress,
                                     workers=1)
        run.reused["data"] = bool(data["reused"])
        click.echo(data["summary"])
    return data


def _features_note(cfg: dict) -> str:
    """What the demo's features are (and are not), for the log and the report."""
    ex = cfg["extract"]
    return (f"UNTRAINED C3D (random weights, width x{ex['width_mult']:g}), layer {ex['layer']}"
            + (f", PCA {ex['pca_dim']}" if ex.get("pca_dim") else "")
            + f", input scale {ex['scale']:g}: no pretrained weights are downloaded, so the features "
            "keep colour, coarse layout and motion, not learned semantics")


def _extract_stage(run: _Run, data: dict, note: str) -> str:
    """Extract (or reuse) the store; returns the fingerprint the training stage builds on."""
    from extract_features import extract_corpus

    fp_extract = fingerprint(data["params"], section(run.cfg, "extract"), section(run.cfg, "store"))
    with stage("2/7 extract (decord + C3D -> Zarr)", run.timings):
        click.secho(f"note: {note}", fg="yellow")
        if run.stages.get("extract") != fp_extract and (run.store_path.exists() or run.stages.get("extract")):
            click.echo("data or extract settings changed since the last run: extracting again")
            remove_store(run.store_path)
            run.stages.pop("train", None)
        run.stages.pop("extract", None)
        write_stages(run.out_dir, run.stages)
        summary = extract_corpus([str(data["videos_dir"])], str(run.store_path), run.cfg, progress=run.progress)
        run.reused["extract"] = summary["done"] == 0 and summary["failed"] == 0
        click.echo(f"features: {summary['done']} extracted, {summary['skipped']} reused, "
                   f"{summary['failed']} failed -> {run.store_path}")
        run.stages["extract"] = fp_extract
        write_stages(run.out_dir, run.stages)
    return fp_extract


def _train_stage(run: _Run, data: dict, fp_extract: str) -> Path:
    """Train, resume an interrupted run, or reuse a finished one; returns the best checkpoint."""
    from caption_model.runs.checkpoint import find_best
    from caption_model.train import train

    cfg = run.cfg
    fp_train = fingerprint(fp_extract, section(cfg, "data"), section(cfg, "model"), section(cfg, "train"),
                           cfg["decode"].get("max_len"))
    with stage("3/7 train (ETS temporal attention)", run.timings):
        if run.stages.get("train") != fp_train and run.save_dir.exists():
            click.echo("no finished run for these settings: training from scratch")
            shutil.rmtree(run.save_dir, ignore_errors=True)
        run.stages["train"] = fp_train  # the run in save_dir belongs to these settings from now on
        write_stages(run.out_dir, run.stages)
        state = training_state(run.save_dir)
        if state is not None and state[0] >= int(cfg["train"]["epochs"]):
            best = find_best(run.save_dir)
            run.reused["train"] = True
            click.echo(f"training already finished ({state[0]} epochs): reusing {best}")
        else:
            if state is not None:
                click.echo(f"resuming the interrupted run at epoch {state[0] + 1}")
            best = train(cfg, str(run.store_path), [str(data["train"])],
                         resume=str(run.save_dir) if state else None, progress=run.progress)
            run.reused["train"] = False  # train() logged "training done ... best PATH": not printed twice
    return best


def _evaluate_stage(run: _Run, data: dict, best: Path) -> dict:
    from caption_model.evaluate import run_evaluate

    with stage("5/7 evaluate (ActivityNet Captions protocol, test split)", run.timings):
        return run_evaluate(run.cfg, weights=str(best), store_path=str(run.store_path),
                            annotation_paths=[str(data["test"])], out_dir=str(run.results_dir),
                            progress=run.progress, echo=click.echo)


def _predict_stage(run: _Run, data: dict, best: Path) -> dict:
    from etspipe_demo.report import write_filelist
    from etspipe_flows.predict import predict_videos

    with stage("7/7 predict (raw test videos, attention plots)", run.timings):
        filelist = run.results_dir / "demo_filelist.txt"
        test_ann = json.loads(Path(data["test"]).read_text(encoding="utf-8"))
        write_filelist(filelist, Path(data["videos_dir"]), test_ann, n_videos=N_PREDICT_VIDEOS)
        shutil.rmtree(run.plot_dir, ignore_errors=True)  # only this run's plots
        return predict_videos(run.cfg, str(best), str(filelist), store_path=str(run.store_path),
                              plot_dir=str(run.plot_dir), echo=click.echo)


def _report(run: _Run, data: dict, best: Path, evaluation: dict, prediction: dict, dense: dict, note: str,
            n_videos: int) -> dict:
    """Score the captions, print the report and write report.txt / report.json."""
    from caption_model.formats.results import read_result
    from etspipe_demo.dataset import load_meta
    from etspipe_demo.proposals import report_lines
    from etspipe_demo.report import examples, format_report
    from etspipe_demo.scoring import score_captions

    test_meta = load_meta(data["test_meta"])
    results = read_result(Path(evaluation["results_path"]))["results"]
    correct = score_captions(results, test_meta)
    plots = sorted(str(p) for p in run.plot_dir.glob("*.png"))
    text = format_report(evaluation, correct, examples(results, test_meta, N_EXAMPLES), plots, run.plot_dir,
                         prediction, run.timings, note) + "\n".join(report_lines(dense, evaluation))
    click.secho("\n== report ==", bold=True)
    click.echo(text)
    report = {"scores": evaluation["scores"]["average"], "correct": correct, "timings": run.timings,
              "total_seconds": sum(run.timings.values()), "reused": run.reused, "n_videos": n_videos,
              "data_summary": data["summary"], "checkpoint": str(best),
              "results_path": evaluation["results_path"], "scores_path": evaluation["scores_path"],
              "predictions_path": prediction.get("results_path"), "plot_dir": str(run.plot_dir), "plots": plots,
              "features": note, "dense_scores": dense["scores"]["average"],
              "proposals": {k: v for k, v in dense["proposals"].items() if k != "missing"},
              "dense_results_path": dense["results_path"], "subtitles": dense.get("subtitles", []),
              "report_html": _page(run, data, evaluation, prediction)}
    (run.out_dir / "report.txt").write_text(text + "\n", encoding="utf-8")
    (run.out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    click.echo(f"report written to {run.out_dir / 'report.txt'} and report.json; "
               f"open {report['report_html']} in a browser to watch the captions")
    return report


def _page(run: _Run, data: dict, evaluation: dict, prediction: dict) -> str:
    """report.html: the predicted test videos playing with their captions, references, attention and scores."""
    from etspipe_flows.page import write_page

    results = prediction.get("results_path") or evaluation["results_path"]  # predict may caption nothing
    page = write_page(results, run.out_dir / "report.html", store_path=str(run.store_path),
                      video_dirs=[data["videos_dir"]], annotation_paths=[data["test"]],
                      scores_path=evaluation["scores_path"], attention_path=prediction.get("attention_path"),
                      title="etspipe demo: captions of the test videos")
    return page["page"]


def run_demo(out_dir: Path, fresh: bool = False, cfg: dict | None = None, n_videos: int = DEMO_VIDEOS,
             progress: bool = True) -> dict:
    """Generate, extract, train, evaluate, predict; print a report; return its numbers.

    `cfg` defaults to configs/demo.yaml over configs/ets.yaml; `n_videos` sets
    the size of the generated set (the CLI's `--videos`, tests use a handful).
    Returns `scores`, `correct`, `timings`, `reused`, the result/score/report
    paths and the plots.
    """
    run = _start(Path(out_dir), fresh, cfg, progress)
    data = _data_stage(run, n_videos, fresh)
    note = _features_note(run.cfg)
    fp_extract = _extract_stage(run, data, note)
    best = _train_stage(run, data, fp_extract)
    proposals_stage(run, data, fp_extract, "4/7")
    evaluation = _evaluate_stage(run, data, best)
    dense = dense_stage(run, data, best, "6/7")
    prediction = _predict_stage(run, data, best)
    return _report(run, data, best, evaluation, prediction, dense, note, n_videos)
