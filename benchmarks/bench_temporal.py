"""Does temporal attention pay? ETS attention vs the `model.attention: mean` baseline on the demo data,
and beside them the seed's network (`model.arch: paddle_ets`, whose attention is one distribution per
segment, the same at every word) with `--variants temporal mean paddle_ets`.

Both models are trained with the same config, seed and budget (epochs) on the
demo's training split, caption every ground-truth segment of the test split,
and are scored with the official protocol separately on

* the order-dependent segments (two events whose caption names them in time
  order; generated as twins, so the bag of rows barely tells the two orders
  apart), and
* the rest (single events),

plus the demo's correct-caption fraction (`etspipe_demo.scoring.score_captions`).
Each subset is scored as if it were the whole annotation file: the references
are that subset's segments and the predictions are the captions of exactly
those segments, so a single-event caption never meets a two-event reference.

Features: `--demo-dir` reuses a finished `etspipe demo --out DIR` (its
`data/` and `features.zarr`, which must match the config's extract section);
otherwise the data are generated and extracted into `--out`.

Prints one JSON line per (seed, attention) and a summary line with the margins:

    .venv/bin/python benchmarks/bench_temporal.py --demo-dir demo_out --seeds 0 1
    .venv/bin/python benchmarks/bench_temporal.py --demo-dir demo_out --variants temporal paddle_ets
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_temporal")


def subset_results(results: dict[str, list[dict]], reference: dict[str, dict],
                   tolerance: float = 0.02) -> dict[str, list[dict]]:
    """The predictions whose timestamps are the reference's segments (one per segment)."""
    out: dict[str, list[dict]] = {}
    for vid, ann in reference.items():
        for start, end in ann["timestamps"]:
            match = next((p for p in results.get(vid, [])
                          if abs(p["timestamp"][0] - start) <= tolerance and abs(p["timestamp"][1] - end) <= tolerance),
                         None)
            if match is not None:
                out.setdefault(vid, []).append(match)
    return out


def score_subsets(results: dict[str, list[dict]], meta: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """METEOR, CIDEr, BLEU-4 (official protocol) and correct fraction on each subset."""
    from caption_model.scoring.densevid import evaluate_results
    from etspipe_demo.scoring import score_captions, split_annotations_by_order

    correct = score_captions(results, meta)
    order_ref, rest_ref = split_annotations_by_order(meta)
    out: dict[str, dict[str, Any]] = {}
    for name, ref, ckey in (("order_dependent", order_ref, "order_dependent"), ("rest", rest_ref, "single")):
        scores = evaluate_results(subset_results(results, ref), references=[ref])["average"]
        out[name] = {"n": correct[ckey]["n"], "METEOR": scores["METEOR"], "CIDEr": scores["CIDEr"],
                     "Bleu_4": scores["Bleu_4"], "correct": correct[ckey]["fraction"]}
    out["all"] = {"n": correct["all"]["n"], "correct": correct["all"]["fraction"]}
    return out


def prepare(args: argparse.Namespace, cfg: dict) -> tuple[dict, Path]:
    """Demo data and features: reused from `--demo-dir`, else made under `--out`."""
    from etspipe_demo.dataset import generate_demo_dataset
    from extract_features import extract_corpus

    base = Path(args.demo_dir) if args.demo_dir else Path(args.out)
    data = generate_demo_dataset(base / "data", n_videos=args.videos, progress=True, workers=0)
    store = base / "features.zarr"
    summary = extract_corpus([data["videos_dir"]], str(store), cfg, progress=True)
    if summary["done"]:
        log.info("extracted %d videos into %s", summary["done"], store)
    return data, store


def run_one(cfg: dict, data: dict, store: Path, attention: str, seed: int, out: Path) -> dict[str, Any]:
    """`attention` names the variant: temporal or mean (ETS's model.attention), or paddle_ets (model.arch)."""
    """Train one model from scratch, caption the test split, score the subsets."""
    from caption_model.evaluate import run_evaluate
    from caption_model.formats.results import read_result
    from caption_model.train import fit
    from etspipe_demo.dataset import load_meta

    cfg = copy.deepcopy(cfg)
    run_dir = out / f"{attention}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    if attention == "paddle_ets":
        cfg["model"]["arch"] = "paddle_ets"
    else:
        cfg["model"]["attention"] = attention
    cfg["train"]["seed"] = seed
    cfg["train"]["save_dir"] = str(run_dir / "checkpoints")
    t0 = time.perf_counter()
    result = fit(cfg, str(store), [str(data["train"])], progress=False)
    train_s = time.perf_counter() - t0
    evaluation = run_evaluate(cfg, weights=str(result.best_path), store_path=str(store),
                              annotation_paths=[str(data["test"])], out_dir=str(run_dir / "results"),
                              progress=False, echo=None)
    results = read_result(evaluation["results_path"])["results"]
    subsets = score_subsets(results, load_meta(data["test_meta"]))
    return {"bench": "temporal", "attention": attention, "seed": seed, "epochs": int(cfg["train"]["epochs"]),
            "train_s": round(train_s, 1), "best_epoch": (result.history and max(
                (h for h in result.history if h["kind"] == "val"), key=lambda h: h.get("val_meteor", 0),
                default={}).get("epoch")),
            "test_METEOR": evaluation["scores"]["average"]["METEOR"],
            "test_CIDEr": evaluation["scores"]["average"]["CIDEr"], **subsets}


def main(argv: list[str] | None = None) -> int:
    from etspipe.config import load_config
    from etspipe_demo.run import DEMO_CONFIG, DEMO_VIDEOS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="/tmp/bench_temporal", help="folder for runs (and data if no --demo-dir)")
    p.add_argument("--demo-dir", default=None, help="reuse data/ and features.zarr of a demo run")
    p.add_argument("--config", default=str(DEMO_CONFIG), help="YAML config (default configs/demo.yaml)")
    p.add_argument("--videos", type=int, default=DEMO_VIDEOS, help="demo set size when generating")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of both models (default: config)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds; both models get each")
    p.add_argument("-o", "--override", action="append", default=[], help="config override KEY=VALUE")
    p.add_argument("--variants", nargs="+", default=["temporal", "mean"], choices=["temporal", "mean", "paddle_ets"],
                   help="models to compare (margins against the first)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)

    overrides = list(args.override) + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    cfg = load_config(args.config, overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, store = prepare(args, cfg)
    rows = []
    for seed in args.seeds:
        for attention in args.variants:
            row = run_one(cfg, data, store, attention, seed, out)
            rows.append(row)
            print(json.dumps(row), flush=True)

    def mean(att: str, subset: str, key: str) -> float:
        vals = [r[subset][key] for r in rows if r["attention"] == att]
        return sum(vals) / len(vals)

    summary: dict[str, Any] = {"bench": "temporal_summary", "seeds": args.seeds, "epochs": rows[0]["epochs"],
                               "data": data["summary"]}
    first = args.variants[0]
    for subset in ("order_dependent", "rest"):
        for key in ("METEOR", "CIDEr", "correct"):
            values = {v: round(mean(v, subset, key), 4) for v in args.variants}
            summary[f"{subset}_{key}"] = {**values, **{f"margin_{first}_vs_{v}": round(values[first] - values[v], 4)
                                                       for v in args.variants[1:]}}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
