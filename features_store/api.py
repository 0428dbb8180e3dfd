"""Opening a store: the backend follows from the path; and the human form of `info`."""

from __future__ import annotations

from pathlib import Path

from etspipe.errors import UserError
from features_store.base import MODES, FeatureStore

HDF5_SUFFIXES = (".h5", ".hdf5")
MAX_FAILED_LINES = 200  # failed videos listed by `store info`; --json lists all


def backend_for(path: str | Path) -> str:
    """"hdf5" for ``.h5``/``.hdf5`` paths, else "zarr" (a ``.zarr`` folder or any fsspec URL)."""
    return "hdf5" if str(path).rstrip("/").lower().endswith(HDF5_SUFFIXES) else "zarr"


def open_store(path: str | Path, mode: str = "r", meta: dict | None = None, *, durable: bool = True) -> FeatureStore:
    """Open a feature store.

    mode "r" reads an existing store; "a" opens one for writing and creates it
    (from `meta`) if missing; "w" creates it, replacing an existing store.
    `meta` is the store metadata (extractor settings, at least ``dim``;
    optional ``dtype`` float16/float32 and ``chunk_rows``). Appending with
    metadata whose extractor, layer, dim, clip_len or stride differ from the
    store's is a UserError. `durable` (the config's ``store.durable``) fsyncs
    every commit of a Zarr store on a local disk before it counts as done;
    without a config a writer gets the safe behaviour. HDF5 stores ignore it.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    path = str(path)
    if not path:
        raise UserError("no feature store path given")
    if backend_for(path) == "hdf5":
        from features_store.hdf5_backend import HDF5Store

        return HDF5Store(path, mode, meta)
    from features_store.zarr_backend import ZarrStore

    return ZarrStore(path, mode, meta, durable=durable)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _projection_line(pca: dict) -> str:
    origin = (f"fitted on {pca['n_samples']} rows" if pca.get("kind", "etspipe") == "etspipe"
              else f"{pca['kind']}'s published projection")
    return f"sha256 {pca['sha256']}, {pca['source_dim']} -> {pca['dim']} dimensions, {origin}"


def format_info(info: dict) -> str:
    """`FeatureStore.info()` as aligned lines for a terminal."""
    meta = info.get("meta", {})
    failed = info.get("failed_by_reason") or {}
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(failed.items()))
    lines = [
        ("store", f"{info['path']} ({info['backend']})"),
        ("videos complete", str(info["videos_complete"])),
        ("videos failed", f"{info['videos_failed']}" + (f" ({reasons})" if reasons else "")),
        ("rows", str(info["rows_total"])),
        ("dimension", str(info["dim"])),
        ("dtype", f"{info['dtype']} (chunks of {info['chunk_rows']} rows)"),
        ("size on disk", _size(int(info["size_bytes"]))),
    ]
    pca = info.get("pca_projection")
    if pca:
        lines.append(("pca projection", pca.get("error") or _projection_line(pca)))
    skip = {"dim", "dtype", "chunk_rows", "backend", "zarr_layout", "codec"}
    lines += [(key, str(value)) for key, value in meta.items() if key not in skip]
    width = max(len(k) for k, _ in lines)
    text = [f"{k:<{width}}  {v}" for k, v in lines]
    failures = list((info.get("failed") or {}).items())
    if failures:
        text.append("failed videos:")
        text += [f"  {vid}  {f['reason']}" + (f": {f['detail']}" if f.get("detail") else "")
                 for vid, f in failures[:MAX_FAILED_LINES]]
        if len(failures) > MAX_FAILED_LINES:
            text.append(f"  ... and {len(failures) - MAX_FAILED_LINES} more (all of them: store info --json)")
    return "\n".join(text)
