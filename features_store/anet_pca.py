"""ActivityNet's published projection, ``PCA_activitynet_v1-3.hdf5``, read as a projection a store can keep.

The ActivityNet challenge's C3D features are fc7 of the Sports-1M C3D reduced to
500 dimensions; the challenge also published that reduction: an HDF5 file with
``data/U`` (4096 x 4096, or 4096 x k, the components in its columns),
``data/S`` (the spectrum) and ``data/x_mean`` (4096,). Its rows are standard PCA,
``(fc7 - x_mean) @ U[:, :k]`` (no whitening: S is kept for the record only).
With it, a raw video's fc7 rows get the meaning of the published rows.

Orientation: a non-square U says itself where its components are (the side whose
length is x_mean's holds the coordinates). A square U does not; it is read by
its columns, the documented layout, unless ``extract.pca_file_u`` says ``rows``
(one public script reads ``U[:k, :]``; docs/PERFORMANCE.md says how to check
on the real files). The arrays returned are those `extract_features.pca`
keeps in a store, of kind ``activitynet``: ``components`` (k, D) with
``rows = (x - mean) @ components.T``; the sample count is unknown and stored as 0.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from etspipe.errors import UserError

ANET_KIND = "activitynet"
U_LAYOUTS = ("columns", "rows")
_KEYS = ("data/U", "data/x_mean")


def is_hdf5(path: str | Path) -> bool:
    """Whether the file is HDF5 (by its signature, not its name)."""
    try:
        return bool(h5py.is_hdf5(str(path)))
    except OSError:
        return False


def _vector(values: np.ndarray, what: str, where: str) -> np.ndarray:
    """A 1-D copy of an (n,), (1, n) or (n, 1) array; another shape is the file's fault."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise UserError(f"{where}: {what} has shape {array.shape}, expected a vector")
    return array


def _orientation(shape: tuple[int, ...], dim: int, layout: str, where: str) -> str:
    if len(shape) != 2:
        raise UserError(f"{where}: data/U has shape {shape}, expected a ({dim}, k) matrix")
    if shape == (dim, dim):
        return layout
    if shape[0] == dim:
        return "columns"
    if shape[1] == dim:
        return "rows"
    raise UserError(f"{where}: data/U has shape {shape} but data/x_mean has {dim} values; "
                    f"U needs {dim} rows (one per feature, the components in its columns)")


def read_activitynet_pca(path: str | Path, n_components: int, layout: str = "columns") -> dict[str, np.ndarray]:
    """The first `n_components` components of an ActivityNet PCA file, as store arrays (module docstring)."""
    path = Path(path)
    where = str(path)
    if layout not in U_LAYOUTS:
        raise ValueError(f"layout must be one of {U_LAYOUTS}, got {layout!r}")
    if not path.is_file():
        raise UserError(f"PCA file not found: {path}")
    try:
        src = h5py.File(path, "r")
    except OSError as exc:
        raise UserError(f"{path}: not a readable HDF5 file ({str(exc).splitlines()[0][:120]})") from None
    with src:
        missing = [key for key in _KEYS if not isinstance(src.get(key), h5py.Dataset)]
        if missing:
            raise UserError(f"{path}: not ActivityNet's PCA layout (no dataset {missing[0]}; "
                            "PCA_activitynet_v1-3.hdf5 holds data/U, data/S and data/x_mean)")
        mean = _vector(src["data/x_mean"][()], "data/x_mean", where)
        u = src["data/U"]
        side = _orientation(tuple(u.shape), len(mean), layout, where)
        available = u.shape[1] if side == "columns" else u.shape[0]
        if not 1 <= n_components <= available:
            raise UserError(f"{path}: data/U holds {available} components, {n_components} are needed")
        comps = u[:, :n_components].T if side == "columns" else u[:n_components, :]
        spectrum = src.get("data/S")
        s = _spectrum(spectrum[()] if isinstance(spectrum, h5py.Dataset) else None, n_components, where)
    comps = np.ascontiguousarray(comps, dtype=np.float64)
    if not (np.isfinite(comps).all() and np.isfinite(mean).all()):
        raise UserError(f"{path}: data/U or data/x_mean holds NaN or infinity")
    return {"mean": mean, "components": comps, "explained_variance": s, "n_samples": np.int64(0),
            "kind": np.array(ANET_KIND)}


def _spectrum(values: np.ndarray | None, k: int, where: str) -> np.ndarray:
    """The first k values of S (a vector, or the diagonal of a matrix); zeros where the file has fewer."""
    out = np.zeros(k, dtype=np.float64)
    if values is None:
        return out
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[0] == array.shape[1] and array.shape[0] > 1:
        array = np.diag(array)
    array = _vector(array, "data/S", where)[:k]
    out[: len(array)] = array
    return out
