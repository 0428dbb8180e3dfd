"""How close etspipe's official-recipe rows come to ActivityNet's published rows of the same videos.

For users who have the real files: the challenge's features
(``sub_activitynet_v1-3.c3d.hdf5``), its projection (``PCA_activitynet_v1-3.hdf5``), the
Sports-1M weights (``c3d.pickle``), optionally the mean cube (.npy), and a few ActivityNet
videos saved as ``v_<youtube id>.mp4``. Each video is extracted once by the official recipe
(`features_store.recipes.official_recipe`: fc7, clip 16 stride 8, 128x171, crop 112), with the
per-channel mean and, given ``--mean-cube``, with the cube; its fc7 rows are projected with the
components read from U's columns (the documented layout) and from its rows, and each is compared
with the published rows of that video (the first min(n) rows: decoders can disagree on the last
frames). One JSON line per video and variant: cosine (mean, min) and relative L2 (mean). The
variant with cosines near 1 is the recipe the published rows were made with; that settles
``extract.pca_file_u`` and how much ``--mean-cube`` matters on real weights (docs/PERFORMANCE.md).
(A non-square U reads one way only, so its two lines are equal.)

    .venv/bin/python benchmarks/bench_official_rows.py --features sub_activitynet_v1-3.c3d.hdf5 \\
        --pca-file PCA_activitynet_v1-3.hdf5 --weights c3d.pickle [--mean-cube cube.npy] v_*.mp4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from machine import load, machine  # benchmarks/machine.py (the script folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))


def compare(ours: np.ndarray, theirs: np.ndarray) -> dict:
    n = min(len(ours), len(theirs))
    a, b = ours[:n].astype(np.float64), theirs[:n].astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-12)
    rel = np.linalg.norm(a - b, axis=1) / np.maximum(nb, 1e-12)
    return {"rows_ours": len(ours), "rows_published": len(theirs), "rows_compared": n,
            "cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5),
            "rel_l2_mean": round(float(rel.mean()), 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", help="ActivityNet videos named v_<id>.<ext>")
    parser.add_argument("--features", required=True, help="sub_activitynet_v1-3.c3d.hdf5")
    parser.add_argument("--pca-file", required=True, help="PCA_activitynet_v1-3.hdf5")
    parser.add_argument("--weights", required=True, help="c3d.pickle (Sports-1M)")
    parser.add_argument("--mean-cube", default=None, help="the Sports-1M mean cube as .npy")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import h5py

    from etspipe.config import load_config
    from extract_features.recipe import recipe_options
    from extract_features.runner import extract_one, make_extractor
    from features_store.anet_pca import read_activitynet_pca
    from features_store.recipes import official_recipe

    cfg = load_config(None, [f"extract.device={args.device}"])
    with h5py.File(args.features, "r") as f:
        first = next(iter(f))
        dim = int(f[first]["c3d_features"].shape[1])
    recipe = official_recipe(dim)
    projections = {side: read_activitynet_pca(args.pca_file, dim, side) for side in ("columns", "rows")}
    means = [("per-channel", None)] + ([("cube", args.mean_cube)] if args.mean_cube else [])
    print(json.dumps({"kind": "machine", **machine(), "load": load(), "features_dim": dim}), flush=True)
    for mean_name, cube in means:
        opts = recipe_options(cfg, recipe, cube)
        extractor = make_extractor(opts, args.weights)
        for video in args.videos:
            vid = Path(video).stem
            with h5py.File(args.features, "r") as f:
                if vid not in f:
                    print(json.dumps({"kind": "skipped", "video": vid, "why": "not in the features file"}))
                    continue
                theirs = f[vid]["c3d_features"][()]
            fc7, _ = extract_one(video, opts, extractor)
            for side, p in projections.items():
                ours = (fc7.astype(np.float64) - p["mean"]) @ p["components"].T
                print(json.dumps({"kind": "official_rows", "video": vid, "mean": mean_name, "u": side,
                                  **compare(ours, theirs)}), flush=True)


if __name__ == "__main__":
    main()
