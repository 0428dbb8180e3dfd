"""PCA of feature rows, fitted incrementally, kept inside the feature store it made.

ActivityNet's published C3D features are fc7 reduced to 500 dimensions with PCA;
`--pca 500` reproduces that layout. The fit streams rows video by video and
keeps only the running mean and scatter matrix (D x D in float64: 128 MiB for
fc7), merged exactly with Chan et al.'s pairwise update, so it is the exact PCA
of all rows, needs no sklearn and never holds the corpus in memory. Components
are the top eigenvectors of the covariance, sign-fixed (largest |loading|
positive) so that the same rows always give the same projection.

The projection is stored in the store itself (`FeatureStore.write_aux`, name
"pca"), written once: a copied store carries it, and its checksum (`identity`)
is recorded with every video projected by it. A `.npz` file (`save`/`load`)
is the exchange form for `--pca-file`; ActivityNet's published
``PCA_activitynet_v1-3.hdf5`` is read too (`load_projection`), as a projection
of kind ``activitynet`` with its own checksum (`features_store.anet_pca`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from etspipe.errors import UserError
from features_store.anet_pca import is_hdf5, read_activitynet_pca
from features_store.projection import ETSPIPE_KIND, PCA_AUX, kind_of, projection_checksum


class IncrementalPCA:
    """Exact streaming PCA: `partial_fit` batches of rows, then `finish(n_components)`."""

    def __init__(self, dim: int, kind: str = ETSPIPE_KIND) -> None:
        self.dim = dim
        self.kind = kind  # etspipe (fitted here) or activitynet (ActivityNet's published file)
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
        if self.n <= n_components:
            # n rows span at most n-1 directions: the rest of a wider projection would be noise
            raise UserError(f"PCA to {n_components} dimensions needs more feature rows than dimensions; "
                            f"the videos so far give {self.n} (extract more videos, or choose a smaller --pca)")
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

    def project(self, rows: np.ndarray, video_meta: dict) -> tuple[np.ndarray, dict]:
        """Rows through the projection, and the video's metadata naming the projection (its sha256)."""
        return self.transform(rows), {**video_meta, "pca_sha256": self.checksum()}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean, "components": self.components,
               "explained_variance": self.explained_variance, "n_samples": np.int64(self.n)}
        if self.kind != ETSPIPE_KIND:  # etspipe's own stay as they always were
            out["kind"] = np.array(self.kind)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], where: str) -> IncrementalPCA:
        try:
            mean, comps = arrays["mean"], arrays["components"]
            var, n = arrays["explained_variance"], int(arrays["n_samples"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: not a PCA written by etspipe (missing {exc})") from None
        if comps.ndim != 2 or mean.shape != (comps.shape[1],):
            raise UserError(f"{where}: PCA arrays have inconsistent shapes {mean.shape}, {comps.shape}")
        pca = cls(comps.shape[1], kind_of(arrays))
        pca.mean, pca.components, pca.explained_variance, pca.n = mean, comps, var, n
        return pca

    def checksum(self) -> str:
        """sha256 of what defines the projection (mean, components, sample count)."""
        key = (id(self.components), self.n)
        if getattr(self, "_checksum", (None, None))[0] == key:
            return self._checksum[1]
        self._checksum = (key, projection_checksum(self.mean, self.components, self.n, self.kind))
        return self._checksum[1]

    def identity(self) -> dict:
        """What a video records about the projection it went through."""
        return {"sha256": self.checksum(), "kind": self.kind, "dim": self.n_components, "source_dim": self.dim,
                "n_samples": int(self.n)}

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
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{path}: not a PCA file (neither etspipe's .npz nor ActivityNet's "
                            f"PCA_activitynet_v1-3.hdf5: {str(exc).splitlines()[0][:120]})") from None
        return cls.from_arrays(arrays, str(path))


def load_projection(path: str | Path, n_components: int | None, u_layout: str = "columns") -> IncrementalPCA:
    """A saved projection: etspipe's `.npz`, or ActivityNet's HDF5 layout (told apart by the file's signature).

    `n_components` is what the caller needs: the number of U's components kept
    from an ActivityNet file (required there), and for a `.npz` the number it
    must reduce to (None: any). `u_layout` is how a square U holds its components.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"PCA file not found: {path}")
    if is_hdf5(path):
        if n_components is None:
            raise ValueError("an ActivityNet PCA file needs the number of components to keep")
        return IncrementalPCA.from_arrays(read_activitynet_pca(path, n_components, u_layout), str(path))
    pca = IncrementalPCA.load(path)
    if n_components is not None and pca.n_components != n_components:
        raise UserError(f"{path} reduces to {pca.n_components} dimensions, {n_components} are needed")
    return pca


STORE_AUX = PCA_AUX  # the name of the projection among a store's store-level arrays


def stored_projection(store) -> IncrementalPCA | None:
    """The projection kept inside `store`, or None."""
    arrays = store.read_aux(STORE_AUX)
    return None if arrays is None else IncrementalPCA.from_arrays(arrays, f"{store.path} (its PCA)")


def store_pca_meta(dim: int, source_dim: int, kind: str = ETSPIPE_KIND) -> dict:
    """The store metadata's "pca" entry: fixed at creation, before the projection is fitted.

    The kind is named only when it is not etspipe's own, so stores made before kinds existed
    keep comparing equal on a rerun.
    """
    meta = {"dim": int(dim), "source_dim": int(source_dim), "whitened": False, "stored": f"aux:{STORE_AUX}"}
    if kind != ETSPIPE_KIND:
        meta["kind"] = kind
    return meta


def raw_store_path_for(store_path: str) -> str:
    """The working store of unreduced features a PCA is fitted on: `<store>.raw.zarr`.

    Only the fit and the projection pass read it; the final store never needs it
    (videos added later are projected on the fly with the stored projection).
    """
    return str(store_path).rstrip("/") + ".raw.zarr"
