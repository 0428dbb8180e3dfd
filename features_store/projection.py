"""The identity of the PCA projection a store keeps (store-level arrays named "pca").

`extract_features.pca` fits and applies the projection; the store only needs to
know which projection it holds, so that `store verify` can check every video's
recorded ``pca_sha256`` against it and `store info` can show it. The checksum
rule lives here, once, and the fitting side uses it.

A projection has a kind: ``etspipe`` (fitted by `etspipe extract --pca`) or
``activitynet`` (read from ActivityNet's ``PCA_activitynet_v1-3.hdf5``,
`features_store.anet_pca`). The kind is part of the checksum of every kind but
the first, so two kinds never share an identity and the checksums of existing
stores stay what they were.
"""

from __future__ import annotations

import hashlib

import numpy as np

from etspipe.errors import UserError

PCA_AUX = "pca"  # the name of the projection among a store's store-level arrays
ETSPIPE_KIND = "etspipe"


def projection_checksum(mean: np.ndarray, components: np.ndarray, n_samples: int,
                        kind: str = ETSPIPE_KIND) -> str:
    """sha256 of what defines a projection: its mean, its components, how many rows it was fitted on, its kind."""
    h = hashlib.sha256()
    for array in (mean, components):
        h.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
    h.update(str(int(n_samples)).encode())
    if kind != ETSPIPE_KIND:
        h.update(f"kind={kind}".encode())
    return h.hexdigest()


def kind_of(arrays: dict[str, np.ndarray]) -> str:
    """The kind recorded with a projection's arrays (none recorded: etspipe's own)."""
    kind = arrays.get("kind")
    return ETSPIPE_KIND if kind is None else str(np.asarray(kind).item())


def projection_identity(store) -> dict | None:
    """{"sha256", "kind", "dim", "source_dim", "n_samples"} of the projection kept in `store`, or None."""
    arrays = store.read_aux(PCA_AUX)
    if arrays is None:
        return None
    return identity_of(arrays, f"{store.path}: the store's PCA projection")


def identity_of(arrays: dict[str, np.ndarray], where: str) -> dict:
    """The identity of a projection given as its arrays (`where` names it in a message)."""
    try:
        mean, comps, n = arrays["mean"], arrays["components"], int(arrays["n_samples"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{where} is damaged (missing {exc})") from None
    if comps.ndim != 2 or mean.shape != (comps.shape[1],):
        raise UserError(f"{where} has arrays of inconsistent shapes {mean.shape}, {comps.shape}")
    kind = kind_of(arrays)
    return {"sha256": projection_checksum(mean, comps, n, kind), "kind": kind, "dim": int(comps.shape[0]),
            "source_dim": int(comps.shape[1]), "n_samples": n}
