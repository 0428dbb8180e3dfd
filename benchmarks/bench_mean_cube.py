"""How far the Sports-1M mean cube, against its per-channel means, moves C3D's fc7 rows.

The Caffe C3D behind ActivityNet's official features subtracts a mean *cube*
(16 x 128 x 171 x 3) before the crop; etspipe subtracted per-channel means by
default (`extract.mean` vs `extract.mean_cube`). This prints one JSON line per
cube with, over the same clips through the same network:

* ``rel_l2``: ||fc7(cube) - fc7(per-channel)|| / ||fc7(per-channel)|| per row (mean, max);
* ``cosine``: cosine of the two rows of each clip (min, mean);
* ``projected_*``: the same after a projection like ActivityNet's ((x - mean) @ U[:, :500]:
  the given --pca-file, else a PCA fitted on these rows), where the centring makes changes count more;
* ``between_clips_rel_l2``: the same distance between rows of *different* clips (median), the
  scale the change is to be read against.

Cubes: ``--mean-cube FILE`` (the real one converted to .npy, when you have it) and synthetic
cubes, the published per-channel means plus a smooth spatial pattern whose RMS deviation is
``--spreads`` grey levels (a mean of many frames is smooth; the real cube's spread is unknown
here). Network: untrained C3D from a fixed seed (``--width``), or ``--weights c3d.pickle``;
untrained figures only bound what trained weights do, they do not stand in for them.

    .venv/bin/python benchmarks/bench_mean_cube.py [--weights c3d.pickle] [--mean-cube cube.npy]
        [--pca-file PCA_activitynet_v1-3.hdf5] [--clips 8] [--spreads 2,5,10,20] [--video FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from bench_c3d import natural_clips, video_clips  # benchmarks/ is on sys.path when run as a script
from machine import load, machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))

MEAN_BGR = np.array([90.25, 97.66, 101.41], dtype=np.float32)


def synthetic_cube(spread: float, seed: int = 0) -> np.ndarray:
    """(16, 128, 171, 3) BGR: the per-channel means plus a smooth pattern of RMS `spread` (same in all frames)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:128, 0:171].astype(np.float32)
    yy, xx = yy / 127 - 0.5, xx / 170 - 0.5
    field = np.zeros((128, 171, 3), dtype=np.float32)
    for c in range(3):  # a vignette, a vertical gradient and one broad blob, mixed per channel
        a, b, k = rng.normal(size=3)
        cy, cx = rng.uniform(-0.3, 0.3, 2)
        field[..., c] = a * -(yy**2 + xx**2) + b * yy + k * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05)
    field -= field.mean(axis=(0, 1))
    field *= spread / np.sqrt((field**2).mean())
    return np.broadcast_to(MEAN_BGR + field, (16, 128, 171, 3)).astype(np.float32)


def rows(model, transform, clips: np.ndarray, torch) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(transform(torch.from_numpy(clips[i:i + 4]))).float().numpy()
                               for i in range(0, len(clips), 4)]).astype(np.float64)


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    diff = np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"rel_l2_mean": round(float(diff.mean()), 5), "rel_l2_max": round(float(diff.max()), 5),
            "cosine_min": round(float(cos.min()), 6), "cosine_mean": round(float(cos.mean()), 6)}


def between(a: np.ndarray) -> float:
    """Median relative distance between rows of different clips: the scale of a real change."""
    n = np.linalg.norm(a, axis=1)
    d = [np.linalg.norm(a[i] - a[j]) / max(n[i], 1e-12) for i in range(len(a)) for j in range(len(a)) if i != j]
    return round(float(np.median(d)), 5)


def projection(args, base: np.ndarray):
    """(mean, components (k, D)) of --pca-file, else a PCA fitted on `base` (k = its rank - 1 at most)."""
    if args.pca_file:
        from extract_features.pca import load_projection

        pca = load_projection(args.pca_file, args.pca_dim)
        return pca.mean, pca.components, "pca_file"
    centred = base - base.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return base.mean(0), vt[: max(1, min(args.pca_dim, len(base) - 1))], "fitted_on_these_rows"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="C3D Sports-1M weights (c3d.pickle); default untrained")
    parser.add_argument("--width", type=float, default=1.0, help="width_mult of an untrained network")
    parser.add_argument("--mean-cube", default=None, help="a real mean cube (.npy, 16x128x171x3 BGR)")
    parser.add_argument("--pca-file", default=None, help="ActivityNet's PCA_activitynet_v1-3.hdf5 (or an .npz)")
    parser.add_argument("--pca-dim", type=int, default=500)
    parser.add_argument("--spreads", default="2,5,10,20", help="RMS grey levels of the synthetic cubes")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--video", default=None, help="take the clips from this file instead of generating them")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    import torch

    from extract_features.c3d import C3DInput, build_c3d
    from extract_features.mean_cube import crop_cube, load_mean_cube
    from extract_features.weights import load_c3d_weights

    if args.threads:
        torch.set_num_threads(args.threads)
    width = 1.0 if args.weights else args.width
    model = build_c3d("fc7", width)
    weights = load_c3d_weights(model, args.weights)[:12] if args.weights else "untrained (seed 0)"
    clips = video_clips(args.video, args.clips) if args.video else natural_clips(args.clips)
    print(json.dumps({"kind": "machine", **machine(), "load": load(), "torch_threads": torch.get_num_threads(),
                      "weights": weights, "width_mult": width, "clips": len(clips),
                      "source": args.video or "natural_clips"}), flush=True)
    t0 = time.perf_counter()
    base = rows(model, C3DInput("bgr", MEAN_BGR), clips, torch)
    mean, comps, how = projection(args, base)
    base_p = (base - mean) @ comps.T
    cubes = [(f"synthetic_rms_{float(s):g}", synthetic_cube(float(s))) for s in args.spreads.split(",") if s]
    if args.mean_cube:
        cubes.insert(0, (f"file:{Path(args.mean_cube).name}", load_mean_cube(args.mean_cube, 16, (128, 171))))
    for name, cube in cubes:
        got = rows(model, C3DInput("bgr", mean_cube=crop_cube(cube, 112)), clips, torch)
        spread = float(np.sqrt(((cube - cube.reshape(-1, 3).mean(0)) ** 2).mean()))
        record = {"kind": "mean_cube", "cube": name, "cube_rms_from_channel_means": round(spread, 3),
                  **compare(base, got), "between_clips_rel_l2_median": between(base), "projection": how,
                  **{f"projected_{k}": v for k, v in compare(base_p, (got - mean) @ comps.T).items()},
                  "projected_between_clips_rel_l2_median": between(base_p)}
        print(json.dumps(record), flush=True)
    print(json.dumps({"kind": "time", "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
