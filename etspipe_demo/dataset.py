"""The built-in demo data set: short H.264 videos of coloured shapes with captioned events.

A newcomer has no ActivityNet on disk, so `etspipe demo` makes its own data:
real MP4 files that go through the same decord + C3D path as real videos, and
ActivityNet-format annotation files (`train.json`, `val.json`, `test.json`,
split by video) that the caption model reads like the real ones.

Each event gets a ground-truth segment and a caption (`etspipe_demo.grammar`).
A segment spanning two consecutive events is *order-dependent*: its caption
names them in time order. Pairs are generated in twins, the same two events in
both orders in two videos of the same split, so the bag of feature rows of such
a segment is (nearly) the same for both captions: only a model that uses the
order of the rows in time can tell them apart. This is what the
temporal-attention benchmark measures. (Single events are time-reversal pairs
too - appears/disappears, grows/shrinks, left/right, up/down - but a clip-level
3-D convolution sees their direction inside one clip, so they are not flagged.)

`<split>_meta.json` holds, per video, the events (object, action, times) and per
segment (in the same order as the annotation's `timestamps`) its events and the
flag `order_dependent`; the ActivityNet JSON itself stays standard. Where the
files go and when they are reused: `etspipe_demo.cache`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from etspipe.errors import UserError
from etspipe.files import read_json
from etspipe.progress import progress_bar
from etspipe_demo.cache import (
    FORMAT_VERSION,
    SPLITS,
    describe,
    manifest_for,
    remove_old_videos,
    reusable,
    set_paths,
    write_json,
)
from etspipe_demo.grammar import Event, caption_for
from etspipe_demo.mp4 import write_mp4
from etspipe_demo.params import DemoParams, make_params
from etspipe_demo.render import Canvas, background, render
from etspipe_demo.scenes import Placed, place_events, plan_events, random_pair

log = logging.getLogger(__name__)

__all__ = ["SPLITS", "DemoParams", "generate_demo_dataset", "load_meta"]


def video_ids(n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"v_demo{i + 1:0{width}d}" for i in range(n)]


def split_groups(n_groups: int, fractions: Sequence[float], rng: np.random.Generator) -> list[str]:
    """Split name per twin group: proportional to `fractions`, at least one group per split."""
    total = sum(fractions)
    counts = [max(1, int(round(n_groups * f / total))) for f in fractions[1:]]
    n_train = n_groups - sum(counts)
    if n_train < 1:
        counts = [1, 1]
        n_train = n_groups - 2
    names = ["train"] * n_train + ["val"] * counts[0] + ["test"] * counts[1]
    return [names[i] for i in rng.permutation(n_groups)]


def _segments(placed: list[Placed], p: DemoParams, pair_at: int, rng: np.random.Generator) -> list[dict]:
    """The annotated segments of one video: every event, and `pairs_per_video` consecutive pairs.

    The twin pair (`pair_at`, `pair_at + 1`) is always among the pairs.
    """
    segs = [{"timestamp": [ev.start, ev.end], "events": [list(ev.event)], "order_dependent": False,
             "event_index": [i]} for i, ev in enumerate(placed)]
    others = [i for i in range(len(placed) - 1) if i != pair_at]
    chosen = [pair_at] + [int(i) for i in rng.permutation(others)[: p.pairs_per_video - 1]]
    for i in sorted(chosen):
        a, b = placed[i], placed[i + 1]
        segs.append({"timestamp": [a.start, b.end], "events": [list(a.event), list(b.event)],
                     "order_dependent": True, "event_index": [i, i + 1]})
    segs.sort(key=lambda s: (s["timestamp"][0], s["timestamp"][1]))
    for s in segs:
        s["sentence"] = caption_for([Event(*e) for e in s["events"]])
    return segs


def _make_video(params: DemoParams, rng: np.random.Generator, forced: tuple[Event, Event], canvas: Canvas,
                path: Path) -> tuple[dict, dict]:
    """Plan, draw and encode one video around the pair `forced`; its annotation and meta entries."""
    events = plan_events(rng, params, forced)
    pair_at = next(i for i in range(len(events) - 1) if (events[i], events[i + 1]) == forced)
    placed, n_frames = place_events(rng, params, events)
    noisy = params.background == "noisy" or (params.background == "mixed" and bool(rng.random() < 0.5))
    bg = background(rng, params, noisy)
    frames = render(placed, bg, canvas, n_frames, params.fps, 3.0 if noisy else 0.0, rng)
    written = write_mp4(path, frames, params.fps, crf=params.crf)
    duration = round(written / params.fps, 4)
    segs = _segments(placed, params, pair_at, rng)
    annotation = {
        "duration": duration,
        "timestamps": [s["timestamp"] for s in segs],
        "sentences": [s["sentence"] for s in segs],
    }
    meta = {
        "duration": duration, "fps": params.fps, "n_frames": written,
        "background": "noisy" if noisy else "plain",
        "events": [{"colour": ev.event.colour, "shape": ev.event.shape, "action": ev.event.action,
                    "start": ev.start, "end": ev.end, "caption": caption_for([ev.event])}
                   for ev in placed],
        "segments": [{k: s[k] for k in ("timestamp", "sentence", "events", "order_dependent",
                                        "event_index")} for s in segs],
    }
    return annotation, meta


def _make_group(job: tuple[DemoParams, int, str]) -> list[tuple[str, dict, dict]]:
    """Write the two videos of twin group `g` (same pair of events, opposite orders).

    Every random choice comes from a generator seeded by (seed, group, twin), so
    a video does not depend on how many videos are made or on which worker
    makes it. Returns (video id, annotation entry, meta entry) per video.
    """
    params, g, videos_dir = job
    ids = video_ids(params.n_videos)
    canvas = Canvas(params.height, params.width)
    pair = random_pair(np.random.default_rng([params.seed, g]))
    out = []
    for twin in range(2):
        index = 2 * g + twin
        if index >= params.n_videos:
            break
        rng = np.random.default_rng([params.seed, g, twin])
        forced = pair if twin == 0 else (pair[1], pair[0])
        annotation, meta = _make_video(params, rng, forced, canvas, Path(videos_dir) / f"{ids[index]}.mp4")
        out.append((ids[index], annotation, meta))
    return out


def _worker_count(workers: int) -> int:
    """0 means one process per CPU core (at most 8); generation is CPU-bound and embarrassingly parallel."""
    if workers > 0:
        return workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))


def _write_videos(params: DemoParams, videos_dir: Path, workers: int,
                  progress: bool) -> tuple[dict[str, dict], dict[str, dict]]:
    """Write every video; the annotation and meta entries per split."""
    n_groups = (params.n_videos + 1) // 2
    group_split = split_groups(n_groups, params.split_fractions, np.random.default_rng([params.seed, 0x5eed]))
    jobs = [(params, g, str(videos_dir)) for g in range(n_groups)]
    n_workers = min(_worker_count(workers), n_groups)
    if n_workers > 1:
        # Processes (the encoder holds the GIL, threads gain nothing); spawn, not fork, because
        # the caller may hold torch/OpenMP threads that a forked child would inherit half-way.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(n_workers, mp_context=ctx) as pool:
            made = pool.map(_make_group, jobs, chunksize=4)
            made = list(progress_bar(made, total=n_groups, desc="demo videos", unit="pair", enabled=progress))
    else:
        made = [_make_group(j) for j in progress_bar(jobs, desc="demo videos", unit="pair", enabled=progress)]
    annotations: dict[str, dict] = {s: {} for s in SPLITS}
    metas: dict[str, dict] = {s: {} for s in SPLITS}
    for g, videos in enumerate(made):
        for vid, annotation, meta in videos:
            annotations[group_split[g]][vid] = annotation
            metas[group_split[g]][vid] = meta
    return annotations, metas


def _write_splits(paths: dict[str, Path], params: DemoParams, annotations: dict[str, dict],
                  metas: dict[str, dict]) -> dict[str, Any]:
    """Write the annotation and meta file of every split; the counts the manifest records."""
    counts: dict[str, Any] = {"videos": params.n_videos}
    total_frames = 0
    rows = 0
    for split in SPLITS:
        write_json(paths[split], annotations[split])
        write_json(paths[f"{split}_meta"], {"format_version": FORMAT_VERSION, "split": split,
                                             "videos": metas[split]})
        segs = [s for m in metas[split].values() for s in m["segments"]]
        counts[split] = {"videos": len(metas[split]), "segments": len(segs),
                         "order_dependent": sum(s["order_dependent"] for s in segs)}
        for m in metas[split].values():
            total_frames += m["n_frames"]
            rows += max(1, (m["n_frames"] - 16) // 8 + 1)
    counts["seconds_of_video"] = round(total_frames / params.fps, 2)
    counts["frames"] = total_frames
    counts["c3d_rows"] = rows
    return counts


def generate_demo_dataset(out_dir: str | Path, n_videos: int = DemoParams.n_videos, seed: int = 0,
                          *, force: bool = False, progress: bool = False, workers: int = 1,
                          **overrides: Any) -> dict:
    """Write the demo videos and annotations into `out_dir`, or reuse them if already there.

    Deterministic: the same parameters give the same files (layout:
    `etspipe_demo.cache`). `overrides` are other `DemoParams` fields (fps,
    n_events, pairs_per_video, background, ...). `workers` processes write the
    videos (0: one per core; the files do not depend on it). The default is 1,
    in-process: the default set takes about 10 s that way, and worker processes
    are started with `spawn`, which needs the caller's main module to be
    importable (a script with an `if __name__ == "__main__":` guard, the
    `etspipe` command, pytest). `force` writes everything again; `progress`
    shows a bar.

    Returns the paths (`videos_dir`, `train`, `val`, `test`, `<split>_meta`,
    `manifest`), `counts` per split, `params`, `reused`, `seconds` and a one-line
    `summary`.
    """
    params = make_params(n_videos, seed, overrides)
    out_dir = Path(out_dir)
    paths = set_paths(out_dir)
    if not force:
        manifest = reusable(paths, params)
        if manifest is not None:
            log.info("demo data in %s already made with these parameters; reusing it", out_dir)
            return describe(paths, manifest, reused=True)

    t0 = time.perf_counter()
    try:
        paths["videos_dir"].mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create demo data folder {paths['videos_dir']}: {exc.strerror}") from None
    if paths["manifest"].exists():
        remove_old_videos(paths)
        paths["manifest"].unlink()
    annotations, metas = _write_videos(params, paths["videos_dir"], workers, progress)
    counts = _write_splits(paths, params, annotations, metas)
    manifest = manifest_for(params, video_ids(params.n_videos), counts, round(time.perf_counter() - t0, 2))
    write_json(paths["manifest"], manifest)
    result = describe(paths, manifest, reused=False)
    log.info("demo data written in %.1f s: %s", manifest["seconds"], result["summary"])
    return result


def load_meta(path: str | Path) -> dict[str, dict]:
    """The per-video meta of one split (`<split>_meta.json`): video id -> events and segments."""
    data = read_json(path, "demo meta file")
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        raise UserError(f"{path}: not a demo meta file (no 'videos' mapping)")
    return data["videos"]
