"""The Sports-1M mean cube: the input mean the Caffe C3D was trained with, as an option of the input transform.

The Caffe C3D subtracts a mean *cube*, ``sport1m_train16_128_mean`` (16 frames x
128 x 171 x 3 channels, BGR), from the resized clip before the 112x112 crop; a
per-channel mean (`extract.mean`) is its average. Subtraction is per pixel, so
"subtract, then crop" equals "crop the cube the same way, then subtract from the
cropped clip", which is what the transform does (`crop_cube`). How far the two
means move fc7 rows is measured by benchmarks/bench_mean_cube.py
(docs/PERFORMANCE.md).

Files: a NumPy ``.npy`` of shape (16, 128, 171, 3) (frames, height, width,
channels: the transform's own layout) or (3, 16, 128, 171) / (1, 3, 16, 128, 171)
(Caffe's channels-first blob), in the network's channel order (BGR for the
Sports-1M weights). Caffe's ``.binaryproto`` is not read: PyPI has no maintained
reader that does not need Caffe itself, and C3D's blob has the extra
``length`` axis of C3D's own Caffe fork; convert it once to ``.npy`` (README).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from etspipe.errors import UserError
from extract_features.weights import file_sha256


def load_mean_cube(path: str | Path, clip_len: int, frame_size: tuple[int, int]) -> np.ndarray:
    """The cube at `path` as float32 (clip_len, H, W, 3); one line naming the file when it does not fit."""
    path = Path(path)
    if path.suffix.lower() == ".binaryproto":
        raise UserError(f"{path}: Caffe .binaryproto mean files are not read; convert it once to .npy "
                        "(README, 'Running on ActivityNet Captions')")
    if not path.is_file():
        raise UserError(f"mean cube file not found: {path}")
    try:
        cube = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: not a .npy mean cube ({str(exc).splitlines()[0][:120]})") from None
    height, width = (int(v) for v in frame_size)
    cube = np.asarray(cube)
    if cube.ndim == 5 and cube.shape[0] == 1:
        cube = cube[0]
    if cube.ndim == 4 and cube.shape[0] == 3 and cube.shape[-1] != 3:
        cube = cube.transpose(1, 2, 3, 0)  # Caffe's (C, T, H, W) to the transform's (T, H, W, C)
    want = (clip_len, height, width, 3)
    if cube.shape != want:
        raise UserError(f"{path}: mean cube of shape {tuple(np.shape(cube))}, expected {want} "
                        f"(frames, height, width, channels; or Caffe's (3, {clip_len}, {height}, {width}))")
    if not np.issubdtype(cube.dtype, np.number) or not np.isfinite(cube).all():
        raise UserError(f"{path}: the mean cube holds no finite numbers")
    return np.ascontiguousarray(cube, dtype=np.float32)


def crop_cube(cube: np.ndarray, crop: int) -> np.ndarray:
    """The centre `crop` x `crop` of every frame of the cube: the part the cropped clip is taken from
    (the same offsets as `clips.center_crop`)."""
    height, width = cube.shape[1:3]
    top, left = (height - crop) // 2, (width - crop) // 2
    return np.ascontiguousarray(cube[:, top : top + crop, left : left + crop])


def cube_identity(path: str | Path, cube: np.ndarray) -> dict:
    """What a store records about the cube its rows were made with."""
    return {"sha256": file_sha256(path), "shape": list(cube.shape),
            "channel_means": [round(float(v), 4) for v in cube.reshape(-1, 3).mean(axis=0)]}
