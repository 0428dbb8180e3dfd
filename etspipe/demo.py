"""`etspipe demo`: the real pipeline, end to end, on videos the project makes itself.

A newcomer has no ActivityNet on disk, so the demo generates short captioned
videos (`etspipe.demo_data`), then runs exactly the code a user would run on
real data: decord + C3D into a Zarr store, training, the official-protocol
scores on the held-out test split, and predictions with attention plots. Each
stage is reused on a rerun (the stages are resumable on their own) unless
`fresh` is set.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import click

from etspipe.config import CONFIG_DIR, load_config

log = logging.getLogger(__name__)

DEMO_CONFIG = CONFIG_DIR / "demo.yaml"


def generate_only(out_dir: str | Path) -> dict:
    """Write the demo videos and annotations and stop (`etspipe demo --generate-only DIR`)."""
    from etspipe.demo_data import generate_demo_dataset

    info = generate_demo_dataset(Path(out_dir))
    click.echo(f"demo data in {out_dir}: {info.get('summary', '')}")
    return info


def _stage(name: str, timings: dict[str, float]):
    class _Timer:
        def __enter__(self) -> None:
            click.secho(f"\n== {name} ==", bold=True)
            self.t0 = time.perf_counter()

        def __exit__(self, *exc: Any) -> None:
            timings[name] = time.perf_counter() - self.t0

    return _Timer()


def _demo_config(cfg: dict | None) -> dict:
    return cfg if cfg is not None else load_config(DEMO_CONFIG)


def _write_filelist(path: Path, videos_dir: Path, test_ann: dict, n_videos: int) -> list[str]:
    """Predict on raw video files (as a user would), one line per ground-truth segment."""
    chosen = sorted(test_ann)[:n_videos]
    lines = ["# demo: test videos and their ground-truth segments (VIDEO START END)"]
    for vid in chosen:
        for start, end in test_ann[vid]["timestamps"]:
            lines.append(f"{videos_dir / (vid + '.mp4')} {start:.2f} {end:.2f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return chosen


def _examples(results: dict, meta: dict, n: int) -> list[tuple[str, str, str, bool]]:
    """Five test videos: one segment each, order-dependent ones first (they are the hard ones)."""
    from etspipe.demo_data import caption_correct

    out = []
    for vid in sorted(meta):
        segs = sorted(meta[vid]["segments"], key=lambda s: not s["order_dependent"])
        preds = results.get(vid, [])
        for seg in segs[:1]:
            start, end = seg["timestamp"]
            pred = next((p["sentence"] for p in preds
                         if abs(p["timestamp"][0] - start) < 0.02 and abs(p["timestamp"][1] - end) < 0.02), "")
            out.append((vid, seg["sentence"], pred, caption_correct(pred, seg["events"])))
        if len(out) >= n:
            break
    return out


def run_demo(out_dir: Path, fresh: bool = False, cfg: dict | None = None) -> dict:
    """Generate, extract, train, evaluate, predict; print a report; return its numbers."""
    from caption_model.evaluate import run_evaluate
    from caption_model.predict import run_predict
    from caption_model.results import read_result
    from caption_model.train import train
    from etspipe.demo_data import generate_demo_dataset, load_meta, score_captions
    from extract_features import extract_corpus

    cfg = _demo_config(cfg)
    out_dir = Path(out_dir)
    store_path = out_dir / "features.zarr"
    save_dir = out_dir / "checkpoints"
    results_dir = out_dir / "results"
    plot_dir = out_dir / "attention_plots"
    if fresh:
        for path in (store_path, save_dir, results_dir, plot_dir):
            shutil.rmtree(path, ignore_errors=True)
    cfg["train"]["save_dir"] = str(save_dir)
    cfg["eval"]["results_dir"] = str(results_dir)
    cfg["predict"]["results_dir"] = str(results_dir)
    timings: dict[str, float] = {}

    with _stage("1/5 demo data", timings):
        data = generate_demo_dataset(out_dir / "data", force=fresh, progress=True)
        click.echo(data["summary"])

    with _stage("2/5 extract (decord + C3D -> Zarr)", timings):
        summary = extract_corpus([str(data["videos_dir"])], str(store_path), cfg)
        click.echo(f"features: {summary['done']} extracted, {summary['skipped']} reused, "
                   f"{summary['failed']} failed -> {store_path}")

    with _stage("3/5 train (ETS temporal attention)", timings):
        resume = str(save_dir) if (save_dir / "last.pt").exists() else None
        best = train(cfg, str(store_path), [str(data["train"])], resume=resume)
        click.echo(f"best checkpoint: {best}")

    with _stage("4/5 evaluate (ActivityNet Captions protocol, test split)", timings):
        evaluation = run_evaluate(cfg, weights=str(best), store_path=str(store_path),
                                  annotation_paths=[str(data["test"])], out_dir=str(results_dir),
                                  echo=click.echo)

    test_meta = load_meta(data["test_meta"])
    with _stage("5/5 predict (raw videos, attention plots)", timings):
        filelist = results_dir / "demo_filelist.txt"
        test_ann = json.loads(Path(data["test"]).read_text(encoding="utf-8"))
        _write_filelist(filelist, Path(data["videos_dir"]), test_ann, n_videos=3)
        prediction = run_predict(cfg, str(best), str(filelist), store_path=str(store_path),
                                 plot_dir=str(plot_dir), echo=click.echo)

    results = read_result(Path(evaluation["results_path"]))["results"]
    correct = score_captions(results, test_meta)
    scores = evaluation["scores"]
    click.secho("\n== report ==", bold=True)
    click.echo(f"test split: {evaluation['n_segments']} segments, METEOR {scores['METEOR']:.2f}, "
               f"CIDEr {scores['CIDEr']:.2f}, BLEU-4 {scores['Bleu_4']:.2f}, ROUGE-L {scores['ROUGE_L']:.2f}")
    for key, label in (("all", "all segments"), ("order_dependent", "order-dependent segments"),
                       ("single", "single-event segments")):
        c = correct[key]
        click.echo(f"correct captions ({label}): {c['correct']}/{c['n']} = {100 * c['fraction']:.1f}%")
    click.echo("  (correct = the caption parses under the demo grammar and names exactly the reference's\n"
               "   (colour, shape, action) events in the same order; see etspipe/demo_data.py)")
    click.echo("\nexamples (test split):")
    for vid, ref, pred, ok in _examples(results, test_meta, 5):
        click.echo(f"  {vid}  {'OK ' if ok else 'BAD'}\n    reference: {ref}\n    predicted: {pred}")
    click.echo(f"\nattention plots: {plot_dir} ({len(list(plot_dir.glob('*.png')))} PNG)")
    click.echo(f"predictions: {prediction.get('results_path')}")
    click.echo("stage times: " + ", ".join(f"{k.split(' ', 1)[1].split(' (')[0]} {v:.1f} s"
                                           for k, v in timings.items())
               + f"; total {sum(timings.values()):.1f} s")
    report = {"scores": scores, "correct": correct, "timings": timings,
              "results_path": evaluation["results_path"], "plot_dir": str(plot_dir)}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return report
