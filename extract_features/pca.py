"""PCA of feature rows, fitted incrementally, saved as .npz beside the store.

ActivityNet's published C3D features are fc7 reduced to 500 dimensions with PCA;
`--pca 500` reproduces that layout. The fit streams rows video by video and
keeps only the running mean and scatter matrix (D x D in float64: 128 MiB for
fc7), merged exactly with Chan et al.'s pairwise update, so it is the exact PCA
of all rows, needs no sklearn and never holds the corpus in memory. Components
are the top eigenvectors of the covariance, sign-fixed (largest |loading|
positive) so that the same rows always give the same projection.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from etspipe.errors import UserError


class IncrementalPCA:
    """Exact streaming PCA: `partial_fit` batches of rows, then `finish(n_components)`."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0
        self.mean = np.zeros(dim, dtype=np.float64)
        self.scatter = np.zeros((dim, dim), dtype=np.float64)
        self.components: np.ndarray | None = None
        self.explained_variance: np.ndarray | None = None

    def partial_fit(self, rows: np.ndarray) -> None:
        x = np.asarray(rows, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"rows must be (n, {self.dim}), got {x.shape}")
        m = len(x)
        if m == 0:
            return
        batch_mean = x.mean(axis=0)
        centred = x - batch_mean
        batch_scatter = centred.T @ centred
        delta = batch_mean - self.mean
        total = self.n + m
        self.scatter += batch_scatter + np.outer(delta, delta) * (self.n * m / total)
        self.mean += delta * (m / total)
        self.n = total

    def finish(self, n_components: int) -> IncrementalPCA:
        if n_components > self.dim:
            raise UserError(f"PCA to {n_components} dimensions needs features of at least that "
                            f"size; these have {self.dim}")
        if self.n < 2:
            raise UserError(f"PCA needs at least 2 feature rows to fit, got {self.n}")
        cov = self.scatter / (self.n - 1)
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1][:n_components]
        comps = vectors[:, order].T  # (k, D)
        signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
        signs[signs == 0] = 1
        self.components = comps * signs[:, None]
        self.explained_variance = np.maximum(values[order], 0.0)
        return self

    @property
    def n_components(self) -> int:
        return 0 if self.components is None else len(self.components)

    def transform(self, rows: np.ndarray) -> np.ndarray:
        if self.components is None:
            raise RuntimeError("PCA is not fitted")
        x = np.asarray(rows, dtype=np.float64) - self.mean
        return (x @ self.components.T).astype(np.float32)

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file, then rename): a crash never leaves half a PCA."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, mean=self.mean, components=self.components,
                 explained_variance=self.explained_variance, n_samples=np.int64(self.n))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> IncrementalPCA:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"PCA file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                mean, comps = data["mean"], data["components"]
                var = data["explained_variance"]
                n = int(data["n_samples"])
        except (OSError, KeyError, ValueError) as exc:
            raise UserError(f"{path}: not a PCA file written by etspipe ({exc})") from None
        if comps.ndim != 2 or mean.shape != (comps.shape[1],):
            raise UserError(f"{path}: PCA arrays have inconsistent shapes {mean.shape}, {comps.shape}")
        pca = cls(comps.shape[1])
        pca.mean, pca.components, pca.explained_variance, pca.n = mean, comps, var, n
        return pca

    def describe(self, path: str | Path) -> dict:
        return {"dim": self.n_components, "source_dim": self.dim, "n_samples": int(self.n),
                "file": str(path), "whitened": False}


def pca_path_for(store_path: str) -> str:
    """Where the PCA of a store lives: beside it, `<store>.pca.npz`."""
    return str(store_path).rstrip("/") + ".pca.npz"


def raw_store_path_for(store_path: str) -> str:
    """The store of unreduced features a PCA is fitted on: `<store>.raw.zarr`."""
    return str(store_path).rstrip("/") + ".raw.zarr"
