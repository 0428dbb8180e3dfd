"""The identity of the PCA projection a store keeps (store-level arrays named "pca").

`extract_features.pca` fits and applies the projection; the store only needs to
know which projection it holds, so that `store verify` can check every video's
recorded ``pca_sha256`` against it and `store info` can show it. The checksum
rule lives here, once, and the fitting side uses it.
"""

from __future__ import annotations

import hashlib

import numpy as np

from etspipe.errors import UserError

PCA_AUX = "pca"  # the name of the projection among a store's store-level arrays


def projection_checksum(mean: np.ndarray, components: np.ndarray, n_samples: int) -> str:
    """sha256 of what defines a projection: its mean, its components and how many rows it was fitted on."""
    h = hashlib.sha256()
    for array in (mean, components):
        h.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
    h.update(str(int(n_samples)).encode())
    return h.hexdigest()


def projection_identity(store) -> dict | None:
    """{"sha256", "dim", "source_dim", "n_samples"} of the projection kept in `store`, or None."""
    arrays = store.read_aux(PCA_AUX)
    if arrays is None:
        return None
    try:
        mean, comps, n = arrays["mean"], arrays["components"], int(arrays["n_samples"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{store.path}: the store's PCA projection is damaged (missing {exc})") from None
    if comps.ndim != 2 or mean.shape != (comps.shape[1],):
        raise UserError(f"{store.path}: the store's PCA arrays have inconsistent shapes {mean.shape}, {comps.shape}")
    return {"sha256": projection_checksum(mean, comps, n), "dim": int(comps.shape[0]),
            "source_dim": int(comps.shape[1]), "n_samples": n}
