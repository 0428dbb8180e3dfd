"""An ActivityNet-shaped proxy for stage 2 (issue 20): a store in which every event codes itself.

What it is. Real ActivityNet Captions videos (ids, annotated durations and
timestamps from ``--annotations-dir``: ``train_modified.json``, ``val_1.json``,
``val_2.json``) with made-up rows and sentences whose content is known:

* rows: 500-d, one per 8 frames at 30 fps (clip 16), as a local C3D + PCA
  extraction; background noise N(0, 1) per dimension, AR(1) over time
  (``--rho``; neighbouring clips share half their frames), so every row is
  still N(0, 1) marginally;
* events code themselves: each event has one of ``--classes`` activities (a
  fixed random unit direction each, orthogonalised) and adds ``--strength``
  (in noise sigmas) along it to the rows inside it, weighted by the share of
  each row's 16-frame window that lies inside the event (soft edges);
  overlapping events add;
* "and then": an event that another event starts inside (after the first 15 %
  of it, before its last 15 %) is described as "A person X and then Y" (its rows
  show X, then X + Y); of the other events of 8 s or more, ``--compound`` of them
  are two consecutive activities (the first 35-65 % codes X, the rest Y), also
  "A person X and then Y"; the rest "A person X.";
* downloads shorter than annotated: ``--truncated`` of the videos (train and
  test) are stored 1-20 % shorter than their annotated duration, so some
  segments run past the stored end (the alignment rule handles it);
* test videos: ``--n-test`` videos of val_1 (all but 32 of val_1's videos are in
  val_2 too, and val_2 has none of its own, so there are no val_2-only videos to
  pick); a val_2 segment that matches a val_1 event (tIoU >= 0.5) is that event
  seen by a second annotator (same class, no second signal); any other val_2
  segment is an event of its own and codes itself.

What it runs, through the CLI only (``python -m pipeline``), into ``--work``:
``train`` (captioner, temporal attention) + ``evaluate`` (ground-truth
segments); the same with ``-o model.attention=mean`` (the no-attention
baseline, trained with the same seed and budget); ``train-proposals`` (the
config's ``proposals`` section as it is); ``evaluate --dense`` (the default
dense run); and a second ``evaluate --dense`` with
``proposals.score_threshold=0 proposals.max_events=100 decode.max_len=2
decode.beam_size=1 eval.tious=[0.5]`` whose "events" are simply every proposal
(best first, after NMS): this pass was how the proposal list was read when
`evaluate --dense` wrote only its events and AR figures (it now also writes
`*_proposals.json`, the full list; reading that instead would save the pass), so it gives the
per-length-bucket recall at 10 proposals, the scores of the proposals and the
lengths of the top 10 are read from files. Its captions are not used.

Prints one JSON line per result (store, captioner temporal/mean, proposals,
dense, summary), each with the stage's seconds, the load average sampled while
it ran and the machine. Figures: AR@1/10/100 and AUC (tIoU 0.5:0.05:0.95,
as `evaluate --dense` writes them), recall at tIoU >= 0.5 with the top 10
proposals per video by event length (< 10, 10-30, 30-68, >= 68 s; references =
val_1 + val_2 segments of the test videos, duplicates once), events per video
(dense run vs references), dense precision / recall / METEOR at tIoU 0.5 and
the official averages, ground-truth-segment METEOR of both captioners.

Defaults: 300 training videos, 100 test videos; captioner at the ets.yaml
sizes but 6 epochs, 200 warm-up steps, best epoch by held-out loss;
proposals with the config's `proposals` section but 10 epochs instead of 30
(``--proposal-epochs 0`` runs the config's). Sized for about 15 minutes on the
2-core development machine when it is not shared (docs/PERFORMANCE.md).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/anet_proxy.py \\
        --annotations-dir ../shared/data/activitynet_captions --work /tmp/anet_proxy
    # one stage again (the earlier stages' outputs in --work are reused):
    ... benchmarks/anet_proxy.py --work /tmp/anet_proxy --stage dense -o proposals.max_events=5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from machine import cpu_model  # benchmarks/machine.py (the script folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FPS, CLIP_LEN, STRIDE, DIM = 30.0, 16, 8, 500
BUCKETS = (("<10s", 0.0, 10.0), ("10-30s", 10.0, 30.0), ("30-68s", 30.0, 68.0), (">=68s", 68.0, float("inf")))
# (verb, object): verbs and objects are shared between activities, so no single word names a class.
ACTIVITIES = (
    ("plays", "the guitar"), ("plays", "the drums"), ("plays", "the piano"), ("rides", "a bike"),
    ("rides", "a horse"), ("brushes", "a horse"), ("washes", "a car"), ("washes", "the dishes"),
    ("paints", "a wall"), ("paints", "a fence"), ("cleans", "the floor"), ("cleans", "a window"),
    ("throws", "a ball"), ("kicks", "a ball"), ("lifts", "a weight"), ("cuts", "the grass"),
    ("cuts", "some hair"), ("climbs", "a wall"), ("shovels", "the snow"), ("mixes", "a drink"),
    ("pushes", "a cart"), ("carries", "a box"), ("opens", "a box"), ("folds", "a shirt"),
)
# What the captioner is trained with by default (on top of configs/ets.yaml): the reference model size,
# but few epochs, a warm-up of about the whole run (the reference 1,000 steps is ~60 epochs here) and the
# best epoch chosen by held-out loss (no Java METEOR start per epoch).
CAPTIONER_DEFAULTS = ("train.warmup_steps=200", "train.val_meteor=false")
DEFAULT_EPOCHS = 6
# The config's 30 proposal epochs take 17-30 min here; the held-out AUC that picks proposals_best.pt peaked at
# epoch 1 and stayed below it up to epoch 13 (docs/PERFORMANCE.md), so 10 most likely pick the same checkpoint.
DEFAULT_PROPOSAL_EPOCHS = 10
TOP_PASS = ("proposals.score_threshold=0", "proposals.max_events=100", "decode.max_len=2", "decode.beam_size=1",
            "eval.tious=[0.5]")


# ----------------------------------------------------------------------------- the data


def tiou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def phrase(cls: int) -> str:
    verb, obj = ACTIVITIES[cls]
    return f"{verb} {obj}"


def plan_events(rng: np.random.Generator, stamps: list[list[float]], n_classes: int, compound: float,
                matched: dict[int, int] | None = None, base: list[dict] | None = None) -> tuple[list[dict], list[int]]:
    """Coded events of one video and, for each annotated segment, the index of the coded event it is.

    `base` (val_1's coded events) and `matched` (segment index -> base index)
    let a second annotator's segments reuse the events they match.
    """
    events = [dict(e) for e in (base or [])]
    which = []
    for i, (s, e) in enumerate(stamps):
        if matched and i in matched:
            which.append(matched[i])
            continue
        events.append({"start": float(s), "end": float(e), "cls": int(rng.integers(n_classes))})
        which.append(len(events) - 1)
    for k, ev in enumerate(events):
        if "phases" in ev:
            continue
        s, e = ev["start"], ev["end"]
        length = e - s
        followers = sorted((o["start"], j) for j, o in enumerate(events) if j != k and o["cls"] != ev["cls"]
                           and s + 0.15 * length <= o["start"] <= e - 0.15 * length)
        ev["phases"] = [[ev["cls"], s, e]]
        ev["then"] = events[followers[0][1]]["cls"] if followers else None
    for ev in events:  # compound events: only where no other event starts inside (decided after all followers)
        if ev.get("compound_checked"):
            continue
        ev["compound_checked"] = True
        s, e = ev["start"], ev["end"]
        if ev["then"] is None and e - s >= 8.0 and rng.random() < compound:
            second = int((ev["cls"] + 1 + rng.integers(n_classes - 1)) % n_classes)
            cut = s + (e - s) * float(rng.uniform(0.35, 0.65))
            ev["phases"] = [[ev["cls"], s, cut], [second, cut, e]]
            ev["then"] = second
    for ev in events:
        words = f"A person {phrase(ev['cls'])}"
        ev["sentence"] = words + (f" and then {phrase(ev['then'])}." if ev["then"] is not None else ".")
    return events, which


def code_rows(rng: np.random.Generator, events: list[dict], stored: float, directions: np.ndarray,
              strength: float, rho: float) -> np.ndarray:
    """Rows of a video stored `stored` seconds long: AR(1) N(0, 1) noise plus every event's phases."""
    n_frames = int(stored * FPS)
    n = max(1, (n_frames - CLIP_LEN) // STRIDE + 1)
    eps = rng.standard_normal((n, DIM), dtype=np.float32)
    rows = np.empty_like(eps)
    rows[0] = eps[0]
    keep, fresh = np.float32(rho), np.float32(np.sqrt(1.0 - rho * rho))
    for i in range(1, n):
        rows[i] = keep * rows[i - 1] + fresh * eps[i]
    lo = np.arange(n) * STRIDE / FPS
    hi = lo + CLIP_LEN / FPS
    for ev in events:
        for cls, a, b in ev["phases"]:
            w = np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None) / (CLIP_LEN / FPS)
            if w.any():
                rows += (strength * w)[:, None].astype(np.float32) * directions[cls][None, :]
    return rows


def build_store(args: argparse.Namespace, data_dir: Path) -> dict:
    """Pick the videos, plan their events, write the store and the annotation files; returns the stage line."""
    from features_store import open_store

    ann_dir = Path(args.annotations_dir)
    train_all = json.loads((ann_dir / "train_modified.json").read_text(encoding="utf-8"))
    val1_all = json.loads((ann_dir / "val_1.json").read_text(encoding="utf-8"))
    val2_all = json.loads((ann_dir / "val_2.json").read_text(encoding="utf-8"))
    rng = np.random.default_rng(args.seed)
    train_ids = sorted(rng.choice(sorted(train_all), args.n_train, replace=False).tolist())
    test_ids = sorted(rng.choice(sorted(val1_all), args.n_test, replace=False).tolist())
    q, _ = np.linalg.qr(rng.standard_normal((DIM, args.classes)))
    directions = q.T.astype(np.float32)  # (classes, DIM), orthonormal

    data_dir.mkdir(parents=True, exist_ok=True)
    store_path = data_dir / "proxy.zarr"
    meta = {"extractor": "anet-proxy", "layer": "fc7", "dim": DIM, "clip_len": CLIP_LEN, "stride": STRIDE,
            "weights": "untrained", "dtype": "float16"}
    files = {"train": {}, "val_1": {}, "val_2": {}}
    truth, truncated, n_rows, n_events = {}, 0, 0, 0
    with open_store(str(store_path), "w", meta=meta, durable=False) as store:
        for vid in train_ids + test_ids:
            vrng = np.random.default_rng([args.seed, int.from_bytes(vid.encode()[-6:], "little")])
            if vid in train_all:
                ann = train_all[vid]
                events, which = plan_events(vrng, ann["timestamps"], args.classes, args.compound)
                files["train"][vid] = {**ann, "sentences": [events[k]["sentence"] for k in which]}
            else:
                a1, a2 = val1_all[vid], val2_all.get(vid)
                events, which = plan_events(vrng, a1["timestamps"], args.classes, args.compound)
                files["val_1"][vid] = {**a1, "sentences": [events[k]["sentence"] for k in which]}
                if a2 is not None:
                    matched = {}
                    for i, seg in enumerate(a2["timestamps"]):
                        best = max(range(len(a1["timestamps"])), key=lambda j: tiou(seg, a1["timestamps"][j]))
                        if tiou(seg, a1["timestamps"][best]) >= 0.5:
                            matched[i] = which[best]
                    events, which2 = plan_events(vrng, a2["timestamps"], args.classes, args.compound, matched,
                                                 base=events)
                    files["val_2"][vid] = {**a2, "sentences": [events[k]["sentence"] for k in which2]}
            duration = float(ann["duration"] if vid in train_all else val1_all[vid]["duration"])
            stored = duration
            if vrng.random() < args.truncated:
                stored = duration * (1.0 - float(vrng.uniform(0.01, 0.20)))
                truncated += 1
            rows = code_rows(vrng, events, stored, directions, args.strength, args.rho)
            store.write_video(vid, rows, {"fps": FPS, "n_frames": int(stored * FPS), "duration": stored,
                                          "source": f"{vid}.mp4", "annotated_duration": duration})
            truth[vid] = {"annotated": duration, "stored": round(stored, 3), "events": events}
            n_rows += len(rows)
            n_events += len(events)
    paths = {}
    for name, doc in files.items():
        paths[name] = data_dir / f"{name}.json"
        paths[name].write_text(json.dumps(doc), encoding="utf-8")
    (data_dir / "truth.json").write_text(json.dumps(truth), encoding="utf-8")
    seg_rows = [(e - s) * FPS / STRIDE for doc in files.values() for a in doc.values() for s, e in a["timestamps"]]
    sentences = [x for doc in files.values() for a in doc.values() for x in a["sentences"]]
    return {"videos_train": len(train_ids), "videos_test": len(test_ids), "truncated_downloads": truncated,
            "rows": n_rows, "coded_events": n_events, "classes": args.classes, "strength": args.strength,
            "rho": args.rho, "compound": args.compound,
            "median_rows_per_segment": round(float(np.median(seg_rows)), 1),
            "and_then_share": round(sum(" and then " in x for x in sentences) / max(len(sentences), 1), 3),
            "segments": {k: sum(len(a["timestamps"]) for a in doc.values()) for k, doc in files.items()}}


# ----------------------------------------------------------------------------- running the CLI


class Loads:
    """Load average samples (1 min) taken while a stage runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def sample(self) -> None:
        self.samples.append(os.getloadavg()[0])

    def figures(self) -> dict:
        if not self.samples:
            self.sample()
        return {"load_1m_mean": round(float(np.mean(self.samples)), 2), "load_1m_max": round(max(self.samples), 2)}


def etspipe(args: argparse.Namespace, log: Path, loads: Loads, *words: str) -> float:
    """Run one `etspipe` command in a child process (output to `log`); its seconds. A failure stops the proxy."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, "-m", "pipeline", *words]
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        out.write("$ " + " ".join(cmd[2:]) + "\n")
        out.flush()
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        while True:
            try:
                rc = child.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                loads.sample()
    seconds = time.perf_counter() - t0
    if rc != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        sys.exit(f"etspipe {words[0]} failed (exit {rc}); last lines of {log}:\n" + "\n".join(tail))
    return seconds


def overrides(items) -> list[str]:
    return [w for item in items for w in ("-o", item)]


def fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def newest(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        sys.exit(f"no {pattern} in {folder}")
    return found[-1]


def data_paths(work: Path) -> dict[str, Path]:
    data = work / "data"
    paths = {"store": data / "proxy.zarr", "train": data / "train.json", "val_1": data / "val_1.json",
             "val_2": data / "val_2.json"}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        sys.exit(f"{missing[0]} is missing: run --stage store first")
    return paths


def captioner(args: argparse.Namespace, work: Path) -> list[dict]:
    """Train and evaluate (ground-truth segments) the temporal-attention captioner and the mean baseline."""
    p = data_paths(work)
    epochs = args.epochs or DEFAULT_EPOCHS
    lines = []
    for attention, run in (("temporal", work / "run"), ("mean", work / "run_mean")):
        loads = Loads()
        opts = overrides([*CAPTIONER_DEFAULTS, f"train.seed={args.seed}", f"model.attention={attention}",
                          *args.override])
        if attention == "temporal" and (run / "proposals_best.pt").exists():
            keep = [run / n for n in ("proposals_best.pt", "proposals_last.pt") if (run / n).exists()]
            saved = [(q, q.read_bytes()) for q in keep]  # a captioner rerun keeps the proposal model beside it
        else:
            saved = []
        fresh(run)
        for q, blob in saved:
            q.write_bytes(blob)
        train_s = etspipe(args, work / "logs" / f"train_{attention}.log", loads, "train", "--store", str(p["store"]),
                          "--train", str(p["train"]), "--save_dir", str(run), "--epochs", str(epochs), *opts)
        out = fresh(work / f"eval_{attention}")
        eval_s = etspipe(args, work / "logs" / f"evaluate_{attention}.log", loads, "evaluate", "--store",
                         str(p["store"]), "--annotations", str(p["val_1"]), str(p["val_2"]), "--save_dir", str(run),
                         "--out", str(out), *opts)
        scores = json.loads(newest(out, "*_scores.json").read_text(encoding="utf-8"))
        results = json.loads(newest(out, "evaluate_*[0-9].json").read_text(encoding="utf-8"))["results"]
        lines.append({"proxy": "captioner", "attention": attention, "epochs": epochs,
                      "overrides": [*CAPTIONER_DEFAULTS, *args.override],
                      "gt_METEOR": _r(scores["average"]["METEOR"]), "gt_CIDEr": _r(scores["average"]["CIDEr"]),
                      "gt_BLEU4": _r(scores["average"]["Bleu_4"]),
                      "gt_METEOR_tiou0.5": _r(scores["per_tiou"]["0.5"]["METEOR"]),
                      "exact_sentences": _exact(results, p["val_1"]),
                      "train_seconds": round(train_s, 1), "evaluate_seconds": round(eval_s, 1), **loads.figures()})
    t, m = lines[0]["gt_METEOR"], lines[1]["gt_METEOR"]
    lines.append({"proxy": "temporal_vs_mean", "gt_METEOR_temporal": t, "gt_METEOR_mean": m,
                  "margin": None if t is None or m is None else round(t - m, 2),
                  "how": "two models trained with the same config, seed and epochs; model.attention temporal vs mean"})
    return lines


def _r(x, nd: int = 2):
    return None if x is None else round(float(x), nd)


def _exact(results: dict, ref_path: Path) -> dict:
    """Exact captions of the val_1 segments (case and final '.' ignored): all, "X and then Y" ones, single ones.

    ``and_then_swapped``: share of the "X and then Y" segments captioned "Y and then X" (order wrong, both right).
    """
    ref = json.loads(ref_path.read_text(encoding="utf-8"))
    counts = {"all": [0, 0], "and_then": [0, 0], "single": [0, 0], "and_then_swapped": [0, 0]}
    for vid, ann in ref.items():
        got = {tuple(round(t, 2) for t in e["timestamp"]): e["sentence"] for e in results.get(vid, [])}
        for (s, e), sent in zip(ann["timestamps"], ann["sentences"], strict=True):
            want = sent.strip(" .").lower()
            pred = (got.get((round(s, 2), round(e, 2))) or "").strip(" .").lower()
            kind = "and_then" if " and then " in want else "single"
            for key in ("all", kind):
                counts[key][0] += pred == want
                counts[key][1] += 1
            if kind == "and_then":
                first, second = want.removeprefix("a person ").split(" and then ")
                counts["and_then_swapped"][0] += pred == f"a person {second} and then {first}"
                counts["and_then_swapped"][1] += 1
    return {key: round(h / t, 4) if t else None for key, (h, t) in counts.items()}


def proposals(args: argparse.Namespace, work: Path) -> list[dict]:
    """train-proposals with the config's proposals section into the captioner's run folder."""
    p = data_paths(work)
    run = work / "run"
    if not (run / "best.pt").exists() and not (run / "last.pt").exists():
        sys.exit(f"no captioner in {run}: run --stage captioner first (dense evaluation needs both)")
    for name in ("proposals_best.pt", "proposals_last.pt"):
        (run / name).unlink(missing_ok=True)
    loads = Loads()
    words = ["--epochs", str(args.proposal_epochs)] if args.proposal_epochs else []
    seconds = etspipe(args, work / "logs" / "train_proposals.log", loads, "train-proposals", "--store",
                      str(p["store"]), "--train", str(p["train"]), "--save_dir", str(run), *words,
                      *overrides([f"proposals.seed={args.seed}", *args.override]))
    text = (work / "logs" / "train_proposals.log").read_text(encoding="utf-8")
    aucs = [float(m) for m in re.findall(r"held-out AUC ([0-9.]+)", text)]
    best = [i + 1 for i, line in enumerate(re.findall(r"held-out AUC [^\n]*", text)) if "best so far" in line]
    anchors = re.search(r"anchors of ([0-9, ]+) rows", text)
    return [{"proxy": "train_proposals", "seconds": round(seconds, 1), "epochs": args.proposal_epochs or "config",
             "held_out_AUC_by_epoch": aucs, "best_epoch": best[-1] if best else None,
             "anchors_rows": anchors.group(1) if anchors else None, **loads.figures()}]


def references(p: dict[str, Path], vids) -> dict[str, np.ndarray]:
    """Test videos' reference segments, val_1 and val_2 together, exact duplicates once."""
    out = {}
    docs = [json.loads(p[k].read_text(encoding="utf-8")) for k in ("val_1", "val_2")]
    for vid in vids:
        segs = sorted({(float(s), float(e)) for d in docs for s, e in d.get(vid, {}).get("timestamps", [])})
        out[vid] = np.array(segs, dtype=np.float64).reshape(-1, 2)
    return out


def hits(gt: np.ndarray, props: np.ndarray, thr: float = 0.5) -> np.ndarray:
    """Per reference segment: does some proposal reach tIoU >= thr."""
    if not len(gt) or not len(props):
        return np.zeros(len(gt), dtype=bool)
    s = np.maximum(gt[:, None, 0], props[None, :, 0])
    e = np.minimum(gt[:, None, 1], props[None, :, 1])
    inter = np.clip(e - s, 0.0, None)
    union = (gt[:, 1] - gt[:, 0])[:, None] + (props[:, 1] - props[:, 0])[None, :] - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return (iou >= thr).any(axis=1)


def bucket_of(length: float) -> str:
    return next(name for name, lo, hi in BUCKETS if lo <= length < hi)


def bucket_recall(gt: dict[str, np.ndarray], props: dict[str, np.ndarray], n: int | None) -> dict:
    """Recall at tIoU >= 0.5 of the first `n` proposals of each video (None: all), per reference-length bucket."""
    got = {name: [0, 0] for name, _, _ in BUCKETS}
    for vid, segs in gt.items():
        mine = props.get(vid, np.zeros((0, 2)))
        found = hits(segs, mine if n is None else mine[:n])
        for (s, e), ok in zip(segs, found, strict=True):
            got[bucket_of(e - s)][0] += int(ok)
            got[bucket_of(e - s)][1] += 1
    out = {name: round(h / t, 4) if t else None for name, (h, t) in got.items()}
    out["all"] = round(sum(h for h, _ in got.values()) / max(sum(t for _, t in got.values()), 1), 4)
    return out


def dense(args: argparse.Namespace, work: Path) -> list[dict]:
    """evaluate --dense as configured, then the all-proposals pass; dense scores and proposal figures."""
    p = data_paths(work)
    run = work / "run"
    if not (run / "proposals_best.pt").exists() and not (run / "proposals_last.pt").exists():
        sys.exit(f"no proposal model in {run}: run --stage proposals first")
    loads = Loads()
    out = fresh(work / "dense")
    ann = ["--annotations", str(p["val_1"]), str(p["val_2"])]
    dense_s = etspipe(args, work / "logs" / "evaluate_dense.log", loads, "evaluate", "--dense", "--store",
                      str(p["store"]), *ann, "--save_dir", str(run), "--out", str(out), *overrides(args.override))
    scores = json.loads(newest(out, "dense_*[0-9]_scores.json").read_text(encoding="utf-8"))
    figures = json.loads(newest(out, "*_proposals_scores.json").read_text(encoding="utf-8"))
    results = json.loads(newest(out, "dense_*[0-9].json").read_text(encoding="utf-8"))["results"]

    top = fresh(work / "dense_all_proposals")
    top_s = etspipe(args, work / "logs" / "evaluate_dense_all_proposals.log", loads, "evaluate", "--dense",
                    "--store", str(p["store"]), *ann, "--save_dir", str(run), "--out", str(top),
                    *overrides([*args.override, *TOP_PASS]))
    listed = json.loads(newest(top, "dense_*[0-9].json").read_text(encoding="utf-8"))["results"]
    val1 = json.loads(p["val_1"].read_text(encoding="utf-8"))
    val2 = json.loads(p["val_2"].read_text(encoding="utf-8"))
    vids = sorted(val1)
    gt = references(p, vids)
    # the pass's entries are sorted by start; the proposal list is best first
    ranked = {v: sorted(es, key=lambda x: -(x["proposal_score"] or 0.0)) for v, es in listed.items()}
    props = {v: np.array([x["timestamp"] for x in es], dtype=np.float64).reshape(-1, 2) for v, es in ranked.items()}
    prop_scores = {v: np.array([x["proposal_score"] or 0.0 for x in es]) for v, es in ranked.items()}
    events = {v: np.array([x["timestamp"] for x in es], dtype=np.float64).reshape(-1, 2) for v, es in results.items()}
    n_events = [len(results.get(v, [])) for v in vids]
    threshold = _config_value(args, "proposals.score_threshold")
    if threshold in (None, "null"):  # the events threshold calibrated when the proposal model trained
        import torch

        ckpt = torch.load(run / "proposals_best.pt", map_location="cpu", weights_only=False)
        threshold = (ckpt.get("calibration") or {}).get("threshold", 0.5)
    max_events = _config_value(args, "proposals.max_events")
    per05 = scores["per_tiou"]["0.5"]

    top10 = [x for v in vids for x in prop_scores.get(v, np.zeros(0))[:10]]
    hit10 = np.concatenate([_proposal_hits(gt[v], props.get(v, np.zeros((0, 2)))[:10]) for v in vids])
    bins = [(0.0, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)]
    calib = {f"{lo:g}-{min(hi, 1):g}": _share(hit10[(np.array(top10) >= lo) & (np.array(top10) < hi)])
             for lo, hi in bins}
    len10 = [e - s for v in vids for s, e in props.get(v, np.zeros((0, 2)))[:10]]
    len_gt = [e - s for v in vids for s, e in gt[v]]
    lines = [{
        "proxy": "proposals", "AR@1": _pct(figures["AR@1"]), "AR@10": _pct(figures["AR@10"]),
        "AR@100": _pct(figures["AR@100"]), "AUC": _r(figures["AUC"]), "R@0.5_10": _pct(figures["R@0.5_10"]),
        "R@0.5_10_by_length": {k: _pct(v) for k, v in bucket_recall(gt, props, 10).items()},
        "R@0.5_100_by_length": {k: _pct(v) for k, v in bucket_recall(gt, props, None).items()},
        "reference_segments_by_length": {name: sum(bucket_of(x) == name for x in len_gt) for name, _, _ in BUCKETS},
        "top10_proposals_by_length": {name: round(sum(bucket_of(x) == name for x in len10) / max(len(len10), 1), 3)
                                      for name, _, _ in BUCKETS},
        "reference_segments_share_by_length": {name: round(sum(bucket_of(x) == name for x in len_gt)
                                                           / max(len(len_gt), 1), 3) for name, _, _ in BUCKETS},
        "proposals_per_video": _r(np.mean([len(props.get(v, [])) for v in vids]), 1),
        "top10_scores": {"mean": _r(np.mean(top10), 3), "min": _r(np.min(top10), 3) if top10 else None,
                         f"share>={threshold}": _r(np.mean(np.array(top10) >= float(threshold)), 3)},
        "top10_hit_rate_by_score": calib,
        "proposals_per_video_scoring>=threshold": _r(np.mean([int((prop_scores.get(v, np.zeros(0))
                                                                   >= float(threshold)).sum()) for v in vids]), 1),
        "note": "R@0.5_*_by_length: references = val_1 + val_2 segments of the test videos (duplicates once), "
                "proposals = every proposal of the model, best first, read from an evaluate --dense pass with "
                + " ".join(TOP_PASS) + " (timestamps rounded to 0.01 s there, so 'all' can differ from "
                "R@0.5_10 by a segment or two); top10_hit_rate_by_score: share of the top-10 proposals in each "
                "score bin that reach tIoU >= 0.5 with some reference",
        "seconds": round(top_s, 1), **loads.figures()}]
    lines.append({
        "proxy": "dense", "score_threshold": threshold, "max_events": max_events,
        "events_per_video": _r(np.mean(n_events), 2),
        "videos_with_max_events": _r(np.mean([n == int(max_events) for n in n_events]), 3),
        "reference_per_video": {"val_1": _r(np.mean([len(val1[v]["timestamps"]) for v in vids]), 2),
                                "val_2": _r(np.mean([len(val2[v]["timestamps"]) for v in vids if v in val2]), 2),
                                "union": _r(np.mean([len(gt[v]) for v in vids]), 2)},
        "SODA_c": _r((scores.get("soda_c") or {}).get("soda_c")),
        "precision_tiou0.5": _r(per05["Precision"]), "recall_tiou0.5": _r(per05["Recall"]),
        "METEOR_tiou0.5": _r(per05["METEOR"]), "METEOR_official_average": _r(scores["average"]["METEOR"]),
        "precision_average": _r(scores["average"]["Precision"]), "recall_average": _r(scores["average"]["Recall"]),
        "events_R@0.5_by_length": {k: _pct(v) for k, v in bucket_recall(gt, events, None).items()},
        "seconds": round(dense_s, 1), **loads.figures()})
    return lines


def _proposal_hits(gt: np.ndarray, props: np.ndarray) -> np.ndarray:
    """Per proposal: does it reach tIoU >= 0.5 with some reference segment."""
    return hits(props, gt) if len(props) else np.zeros(0, dtype=bool)


def _share(x: np.ndarray) -> dict:
    return {"proposals": int(len(x)), "hit": _r(float(np.mean(x)), 3) if len(x) else None}


def _pct(x):
    return None if x is None else round(100.0 * float(x), 1)


def _config_value(args: argparse.Namespace, key: str):
    """A config value as the dense run saw it: an -o override, else configs/ets.yaml."""
    for item in reversed(args.override):
        k, _, v = item.partition("=")
        if k.strip() == key:
            return v.strip()
    from etspipe.config import load_config

    section, name = key.split(".")
    return load_config()[section][name]


# ----------------------------------------------------------------------------- main


STAGES = ("store", "captioner", "proposals", "dense")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations-dir", default=str(ROOT.parent / "shared/data/activitynet_captions"),
                    help="folder with train_modified.json, val_1.json, val_2.json (read only; never copied)")
    ap.add_argument("--work", default="/tmp/anet_proxy", help="store, annotation files, runs, results, logs")
    ap.add_argument("--stage", default="all", choices=("all", *STAGES),
                    help="all, or one stage (later stages reuse the earlier ones' outputs in --work)")
    ap.add_argument("--n-train", type=int, default=300, help="training videos (train_modified.json)")
    ap.add_argument("--n-test", type=int, default=100, help="test videos (val_1.json, with their val_2 segments)")
    ap.add_argument("--seed", type=int, default=0, help="picks, events, rows; also train.seed / proposals.seed")
    ap.add_argument("--classes", type=int, default=20, help=f"activities (directions); at most {len(ACTIVITIES)}")
    ap.add_argument("--strength", type=float, default=3.0, help="event signal along its direction, noise sigmas")
    ap.add_argument("--rho", type=float, default=0.5, help="AR(1) correlation of neighbouring rows' noise")
    ap.add_argument("--compound", type=float, default=0.25, help="share of events >= 8 s that are two activities")
    ap.add_argument("--truncated", type=float, default=0.10, help="share of downloads 1-20%% shorter than annotated")
    ap.add_argument("--epochs", type=int, default=None, help=f"captioner epochs (default {DEFAULT_EPOCHS})")
    ap.add_argument("--proposal-epochs", type=int, default=DEFAULT_PROPOSAL_EPOCHS,
                    help="proposal epochs; 0 = the config's (30)")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                    help="config override passed to every etspipe command (repeatable); wins over the proxy's own")
    ap.add_argument("--threads", type=int, default=0, help="OMP/MKL threads of the etspipe processes (0: default)")
    args = ap.parse_args()
    if not 2 <= args.classes <= len(ACTIVITIES):
        ap.error(f"--classes must be 2..{len(ACTIVITIES)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    where = {"machine": cpu_model(), "cpus": os.cpu_count(), "seed": args.seed}
    stages = STAGES if args.stage == "all" else (args.stage,)
    t_all = time.perf_counter()
    for stage in stages:
        t0 = time.perf_counter()
        if stage == "store":
            loads = Loads()
            line = {"proxy": "store", **build_store(args, work / "data")}
            loads.sample()
            lines = [{**line, "seconds": round(time.perf_counter() - t0, 1), **loads.figures()}]
        else:
            lines = {"captioner": captioner, "proposals": proposals, "dense": dense}[stage](args, work)
        for line in lines:
            print(json.dumps({**line, **where}), flush=True)
    if args.stage == "all":
        print(json.dumps({"proxy": "total", "seconds": round(time.perf_counter() - t_all, 1),
                          "n_train": args.n_train, "n_test": args.n_test, "load_1m_now": os.getloadavg()[0],
                          **where}), flush=True)


if __name__ == "__main__":
    main()
