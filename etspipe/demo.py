"""`etspipe demo`: the real pipeline, end to end, on videos the project makes itself.

A newcomer has no ActivityNet on disk, so the demo generates short captioned
videos (`etspipe.demo_data`), then runs exactly the code a user would run on
real data: decord + C3D into a Zarr store, training, the official-protocol
scores on the held-out test split, and predictions with attention plots. It
ends with a report (printed, and written to `report.txt` / `report.json`).

Reuse on a rerun
----------------
Each expensive stage records a fingerprint of what decided its output in
`<out>/stages.json`: the data parameters for the videos, plus the `extract` and
`store` sections for the features, plus the `data`, `model`, `train` sections
for the checkpoint. A rerun with the same fingerprint reuses the stage (the
videos and features are skipped, a finished training run is not touched, an
interrupted one resumes from `last.pt`); a changed fingerprint redoes that
stage and the ones after it, so an edited config never meets stale features or
a stale model. `fresh` redoes everything. Evaluation and prediction always run:
they are the point of the demo and take seconds.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from etspipe.config import CONFIG_DIR, load_config

log = logging.getLogger(__name__)

DEMO_CONFIG = CONFIG_DIR / "demo.yaml"
# Videos of the built-in set. Chosen with the config so that the whole demo fits in
# about 5 minutes on two CPU cores; see docs/PERFORMANCE.md ("Demo and temporal attention").
DEMO_VIDEOS = 450
N_EXAMPLES = 5
N_PREDICT_VIDEOS = 3
STAGES_FILE = "stages.json"
# Keys that change where or how verbosely a stage runs, not what it produces.
_NEUTRAL_KEYS = {"train": {"save_dir", "log_interval", "device"},
                 "extract": {"batch_size", "decode_workers", "device"},
                 "data": {"num_workers"}}


def generate_only(out_dir: str | Path, n_videos: int = DEMO_VIDEOS) -> dict:
    """Write the demo videos and annotations and stop (`etspipe demo --generate-only DIR`)."""
    from etspipe.demo_data import generate_demo_dataset

    info = generate_demo_dataset(Path(out_dir), n_videos=n_videos, progress=True, workers=0)
    click.echo(f"demo data in {out_dir}: {info.get('summary', '')}")
    return info


@contextlib.contextmanager
def _stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Print a stage header and record its wall time under its short name."""
    click.secho(f"\n== {name} ==", bold=True)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name.split(" ", 1)[1].split(" (")[0]] = time.perf_counter() - t0


def _fingerprint(*parts: Any) -> str:
    """Short hash of the settings that decide a stage's output (neutral keys removed)."""
    def clean(part: Any) -> Any:
        if isinstance(part, dict) and part.get("__section__") in _NEUTRAL_KEYS:
            drop = _NEUTRAL_KEYS[part["__section__"]]
            return {k: v for k, v in part.items() if k not in drop}
        return part

    text = json.dumps([clean(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _section(cfg: dict, name: str) -> dict:
    return {"__section__": name, **cfg.get(name, {})}


def _read_stages(out_dir: Path) -> dict[str, str]:
    try:
        return json.loads((out_dir / STAGES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_stages(out_dir: Path, stages: dict[str, str]) -> None:
    tmp = out_dir / (STAGES_FILE + ".part")
    tmp.write_text(json.dumps(stages, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out_dir / STAGES_FILE)


def _remove_store(store_path: Path) -> None:
    """The store and the PCA side files `extract_corpus` keeps beside it."""
    shutil.rmtree(store_path, ignore_errors=True)
    for side in (store_path.with_name(store_path.name + ".raw.zarr"),):
        shutil.rmtree(side, ignore_errors=True)
    for side in (store_path.with_name(store_path.name + ".pca.npz"),):
        side.unlink(missing_ok=True)


def _training_state(save_dir: Path) -> tuple[int, int] | None:
    """(epochs done, epochs planned) of the run in `save_dir`, or None when there is none."""
    from caption_model.checkpoint import LAST, load_checkpoint

    if not (save_dir / LAST).is_file():
        return None
    ckpt = load_checkpoint(save_dir / LAST)
    return int(ckpt["epoch"]), int(ckpt["config"]["train"]["epochs"])


def _write_filelist(path: Path, videos_dir: Path, test_ann: dict, n_videos: int) -> list[str]:
    """Predict on raw video files (as a user would), one line per ground-truth segment."""
    chosen = sorted(test_ann)[:n_videos]
    lines = ["# demo: test videos and their ground-truth segments (VIDEO START END)"]
    for vid in chosen:
        for start, end in test_ann[vid]["timestamps"]:
            lines.append(f"{videos_dir / (vid + '.mp4')} {start:.2f} {end:.2f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return chosen


def _prediction_for(preds: list[dict], start: float, end: float, tolerance: float = 0.02) -> str:
    return next((p["sentence"] for p in preds
                 if abs(p["timestamp"][0] - start) <= tolerance and abs(p["timestamp"][1] - end) <= tolerance), "")


def _examples(results: dict, meta: dict, n: int) -> list[tuple[str, str, str, bool]]:
    """`n` test videos, one segment each, alternating order-dependent and single-event segments.

    Both kinds are shown because they fail differently: the order-dependent ones
    need the model to use time, the single ones mostly test the features.
    """
    from etspipe.demo_data import caption_correct

    out = []
    for k, vid in enumerate(sorted(meta)[:n]):
        segs = sorted(meta[vid]["segments"], key=lambda s: s["order_dependent"] != (k % 2 == 0))
        seg = segs[0]
        pred = _prediction_for(results.get(vid, []), *seg["timestamp"])
        out.append((vid, seg["sentence"], pred, caption_correct(pred, seg["events"])))
    return out


def _format_report(evaluation: dict, correct: dict, examples: list, plots: list[str], plot_dir: Path,
                   prediction: dict, timings: dict[str, float], extract_note: str) -> str:
    """The report as text: every number in it comes from this run's files."""
    avg = evaluation["scores"]["average"]

    def num(key: str) -> str:
        return "n/a" if avg.get(key) is None else f"{avg[key]:.2f}"

    lines = [f"test split: {evaluation['n_segments']} ground-truth segments captioned; official ActivityNet "
             "Captions protocol (mean over tIoU 0.3/0.5/0.7/0.9, x100)",
             f"  {'METEOR':>8} {'CIDEr':>8} {'BLEU-1':>8} {'BLEU-4':>8} {'ROUGE-L':>8}",
             f"  {num('METEOR'):>8} {num('CIDEr'):>8} {num('Bleu_1'):>8} {num('Bleu_4'):>8} {num('ROUGE_L'):>8}",
             "correct captions:"]
    for key, label in (("all", "all segments"), ("order_dependent", "order-dependent (two events)"),
                       ("single", "single-event")):
        c = correct[key]
        lines.append(f"  {label:<30} {c['correct']:>4}/{c['n']:<4} = {100 * c['fraction']:.1f}%")
    lines.append("  correct = the caption parses under the demo grammar and names exactly the reference's\n"
                 "  (colour, shape, action) events in the same order (etspipe.demo_data.caption_correct)")
    lines.append(f"features: {extract_note}")
    lines.append("\nexamples (test split):")
    for vid, ref, pred, ok in examples:
        lines.append(f"  {vid}  [{'correct' if ok else 'wrong'}]\n    reference: {ref}\n    predicted: {pred}")
    lines.append(f"\nattention plots: {len(plots)} PNG in {plot_dir}")
    lines.extend(f"  {p}" for p in plots[:3])
    lines.append(f"evaluation results: {evaluation['results_path']}\n"
                 f"scores: {evaluation['scores_path']}\npredictions: {prediction.get('results_path')}")
    lines.append("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
                 + f"; total {sum(timings.values()):.1f} s")
    return "\n".join(lines)


def run_demo(out_dir: Path, fresh: bool = False, cfg: dict | None = None, n_videos: int = DEMO_VIDEOS,
             progress: bool = True) -> dict:
    """Generate, extract, train, evaluate, predict; print a report; return its numbers.

    `cfg` defaults to configs/demo.yaml over configs/ets.yaml; `n_videos` sets
    the size of the generated set (the CLI's `--videos`, tests use a handful).
    Returns `scores`, `correct`, `timings`, `reused`, the result/score/report
    paths and the plots.
    """
    from caption_model.checkpoint import find_best
    from caption_model.evaluate import run_evaluate
    from caption_model.predict import run_predict
    from caption_model.results import read_result
    from caption_model.train import train
    from etspipe.demo_data import generate_demo_dataset, load_meta, score_captions
    from extract_features import extract_corpus

    cfg = copy.deepcopy(cfg if cfg is not None else load_config(DEMO_CONFIG))
    out_dir = Path(out_dir)
    store_path = out_dir / "features.zarr"
    save_dir = out_dir / "checkpoints"
    results_dir = out_dir / "results"
    plot_dir = out_dir / "attention_plots"
    if fresh:
        _remove_store(store_path)
        for path in (save_dir, results_dir, plot_dir):
            shutil.rmtree(path, ignore_errors=True)
        (out_dir / STAGES_FILE).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg["train"]["save_dir"] = str(save_dir)
    cfg["eval"]["results_dir"] = str(results_dir)
    cfg["predict"]["results_dir"] = str(results_dir)
    stages = _read_stages(out_dir)
    timings: dict[str, float] = {}
    reused: dict[str, bool] = {}

    with _stage("1/5 data (generated videos + captions)", timings):
        # In-process: on two busy cores spawned writers cost more than they save (450 videos:
        # 33 s with two worker processes, 14 s in-process, docs/PERFORMANCE.md).
        data = generate_demo_dataset(out_dir / "data", n_videos=n_videos, force=fresh, progress=progress,
                                     workers=1)
        reused["data"] = bool(data["reused"])
        click.echo(data["summary"])

    ex = cfg["extract"]
    weights_note = (f"UNTRAINED C3D (random weights, width x{ex['width_mult']:g}), layer {ex['layer']}"
                    + (f", PCA {ex['pca_dim']}" if ex.get("pca_dim") else "")
                    + f", input scale {ex['scale']:g}: no pretrained weights are downloaded, so the features "
                    "keep colour, coarse layout and motion, not learned semantics")
    fp_extract = _fingerprint(data["params"], _section(cfg, "extract"), _section(cfg, "store"))
    with _stage("2/5 extract (decord + C3D -> Zarr)", timings):
        click.secho(f"note: {weights_note}", fg="yellow")
        if stages.get("extract") != fp_extract and (store_path.exists() or stages.get("extract")):
            click.echo("data or extract settings changed since the last run: extracting again")
            _remove_store(store_path)
            stages.pop("train", None)
        stages.pop("extract", None)
        _write_stages(out_dir, stages)
        summary = extract_corpus([str(data["videos_dir"])], str(store_path), cfg, progress=progress)
        reused["extract"] = summary["done"] == 0 and summary["failed"] == 0
        click.echo(f"features: {summary['done']} extracted, {summary['skipped']} reused, "
                   f"{summary['failed']} failed -> {store_path}")
        stages["extract"] = fp_extract
        _write_stages(out_dir, stages)

    fp_train = _fingerprint(fp_extract, _section(cfg, "data"), _section(cfg, "model"), _section(cfg, "train"),
                            cfg["decode"].get("max_len"))
    with _stage("3/5 train (ETS temporal attention)", timings):
        if stages.get("train") != fp_train and save_dir.exists():
            click.echo("no finished run for these settings: training from scratch")
            shutil.rmtree(save_dir, ignore_errors=True)
        stages["train"] = fp_train  # the run in save_dir belongs to these settings from now on
        _write_stages(out_dir, stages)
        state = _training_state(save_dir)
        if state is not None and state[0] >= int(cfg["train"]["epochs"]):
            best = find_best(save_dir)
            reused["train"] = True
            click.echo(f"training already finished ({state[0]} epochs): reusing {best}")
        else:
            if state is not None:
                click.echo(f"resuming the interrupted run at epoch {state[0] + 1}")
            best = train(cfg, str(store_path), [str(data["train"])], resume=str(save_dir) if state else None,
                         progress=progress)
            reused["train"] = False

    with _stage("4/5 evaluate (ActivityNet Captions protocol, test split)", timings):
        evaluation = run_evaluate(cfg, weights=str(best), store_path=str(store_path),
                                  annotation_paths=[str(data["test"])], out_dir=str(results_dir),
                                  progress=progress, echo=click.echo)

    test_meta = load_meta(data["test_meta"])
    with _stage("5/5 predict (raw test videos, attention plots)", timings):
        filelist = results_dir / "demo_filelist.txt"
        test_ann = json.loads(Path(data["test"]).read_text(encoding="utf-8"))
        _write_filelist(filelist, Path(data["videos_dir"]), test_ann, n_videos=N_PREDICT_VIDEOS)
        shutil.rmtree(plot_dir, ignore_errors=True)  # only this run's plots
        prediction = run_predict(cfg, str(best), str(filelist), store_path=str(store_path),
                                 plot_dir=str(plot_dir), echo=click.echo)

    results = read_result(Path(evaluation["results_path"]))["results"]
    correct = score_captions(results, test_meta)
    plots = sorted(str(p) for p in plot_dir.glob("*.png"))
    text = _format_report(evaluation, correct, _examples(results, test_meta, N_EXAMPLES), plots, plot_dir,
                          prediction, timings, weights_note)
    click.secho("\n== report ==", bold=True)
    click.echo(text)
    report = {"scores": evaluation["scores"]["average"], "correct": correct, "timings": timings,
              "total_seconds": sum(timings.values()), "reused": reused, "n_videos": n_videos,
              "data_summary": data["summary"], "checkpoint": str(best),
              "results_path": evaluation["results_path"], "scores_path": evaluation["scores_path"],
              "predictions_path": prediction.get("results_path"), "plot_dir": str(plot_dir), "plots": plots,
              "features": weights_note}
    (out_dir / "report.txt").write_text(text + "\n", encoding="utf-8")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    click.echo(f"report written to {out_dir / 'report.txt'} and report.json")
    return report
