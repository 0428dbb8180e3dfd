"""Files in the layouts of ActivityNet's C3D release, made at test time (nothing is downloaded).

* `write_anet_pca`: ``PCA_activitynet_v1-3.hdf5`` (``data/U`` with the components in
  its columns, ``data/S``, ``data/x_mean``) with random values;
* `write_c3d_weights`: an untrained C3D saved as a state dict in the parameter names
  of the PyTorch port (``c3d.pickle``);
* `write_official_features`: ``sub_activitynet_v1-3.c3d.hdf5`` (groups ``v_*`` with
  ``c3d_features``) and annotations in the ActivityNet Captions layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from click.testing import CliRunner

from pipeline import cli


def write_anet_pca(path: Path, dim: int = 4096, n_cols: int | None = None, seed: int = 0, *,
                   rows_layout: bool = False, mean_shape: tuple[int, ...] | None = None,
                   drop: str | None = None) -> Path:
    """A PCA file in ActivityNet's layout: U (dim x n_cols, components in columns), S, x_mean.

    `rows_layout` writes U transposed (components in rows); `mean_shape` reshapes
    x_mean (e.g. (1, dim)); `drop` leaves a dataset out.
    """
    rng = np.random.default_rng(seed)
    n_cols = n_cols or dim
    u = (rng.standard_normal((dim, n_cols)) / np.sqrt(dim)).astype(np.float32)
    data = {"U": u.T if rows_layout else u, "S": np.sort(rng.random(n_cols))[::-1].astype(np.float32),
            "x_mean": rng.random(mean_shape or (dim,)).astype(np.float32)}
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            if key != drop:
                f.create_dataset(f"data/{key}", data=value)
    return path


def read_anet_pca(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(U, x_mean) as written, in float64."""
    with h5py.File(path, "r") as f:
        return f["data/U"][()].astype(np.float64), f["data/x_mean"][()].astype(np.float64).reshape(-1)


def write_c3d_weights(path: Path, width_mult: float = 1.0) -> Path:
    """An untrained C3D's weights under the PyTorch port's names (conv1.weight ... fc8.bias)."""
    import torch

    from extract_features.c3d import C3D

    torch.manual_seed(1)
    torch.save(C3D("fc7", width_mult).state_dict(), path)
    return path


SENTENCES = ["a man runs on the field", "a dog jumps over the fence", "a man jumps into the water"]


def write_official_features(folder: Path, n_videos: int = 8, dim: int = 500, seed: int = 0) -> tuple[Path, Path]:
    """(sub_activitynet_v1-3.c3d.hdf5, train.json): random rows, 2 captioned events per video."""
    rng = np.random.default_rng(seed)
    h5, ann = folder / "sub_activitynet_v1-3.c3d.hdf5", {}
    with h5py.File(h5, "w") as f:
        for i in range(n_videos):
            vid, n = f"v_off{i:02d}", int(rng.integers(16, 33))
            f.create_group(vid).create_dataset("c3d_features", data=rng.standard_normal((n, dim)).astype(np.float32))
            duration = n * 8 / 30.0
            ann[vid] = {"duration": duration, "timestamps": [[0.0, duration / 2], [duration / 3, duration]],
                        "sentences": [SENTENCES[i % 3], SENTENCES[(i + 1) % 3]]}
    train = folder / "train.json"
    train.write_text(json.dumps(ann), encoding="utf-8")
    return h5, train


def run_cli(*args: str):
    """The CLI on `args` (str() of each): click's result."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_lines(result) -> list[str]:
    """The `error:` lines of a CLI run; a traceback fails the test."""
    assert "Traceback" not in result.output, result.output
    return [line for line in result.output.splitlines() if line.startswith("error:")]
