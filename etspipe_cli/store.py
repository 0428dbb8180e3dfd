"""`etspipe store ...` and `etspipe import-features`: feature-store housekeeping."""

from __future__ import annotations

import click

from etspipe.errors import PartialFailure, UserError
from etspipe_cli.common import ManyValuesOption, config_options


@click.group()
def store() -> None:
    """Inspect, check and tidy feature stores."""


@store.command("info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def store_info(path: str, as_json: bool) -> None:
    """Videos complete/failed (with reasons), rows, dimension, dtype, size, extractor and PCA projection.

    \b
    Example:
      etspipe store info data/c3d.zarr --json
    """
    import json

    from features_store import format_info, open_store

    with open_store(path, "r") as fs:
        info = fs.info()
    click.echo(json.dumps(info, indent=2, default=str) if as_json else format_info(info))


@store.command("verify")
@click.argument("path")
@click.option("--repair", is_flag=True,
              help="Mark bad videos not done (the next extract redoes them) and remove orphaned files.")
def store_verify(path: str, repair: bool) -> None:
    """Read every complete video and check it; exit 0 when clean, 3 when not.

    \b
    Checks: marker against rows (count, dtype, dim), every chunk decodes and
    matches its checksum, values finite, row times follow the store's rule,
    each video's PCA is the projection kept in the store, no orphaned arrays
    or temporary files. Good videos are never touched.

    \b
    Example:
      etspipe store verify data/c3d.zarr --repair
    """
    from features_store import open_store
    from features_store.verify import verify_store

    with open_store(path, "a" if repair else "r") as fs:
        report = verify_store(fs, repair=repair, progress=True)
    for line in report.lines():
        click.echo(line)
    if not report.clean and not repair:
        raise PartialFailure("")


@store.command("ls")
@click.argument("path")
def store_ls(path: str) -> None:
    """One line per complete video: id, rows, duration (s), source.

    \b
    Example:
      etspipe store ls data/c3d.zarr | sort -k2 -n | head
    """
    from features_store import open_store

    with open_store(path, "r") as fs:
        for vid in fs.complete_ids():
            try:
                vm = fs.video_meta(vid)
            except UserError:  # removed by another process since the listing
                continue
            click.echo(f"{vid}\t{vm['n_rows']}\t{float(vm['duration']):.2f}\t{vm.get('source') or ''}")


@store.command("rm")
@click.argument("path")
@click.argument("video_ids", nargs=-1, required=True)
def store_rm(path: str, video_ids: tuple[str, ...]) -> None:
    """Remove videos (rows and failure records); the next extract redoes them.

    \b
    Example:
      etspipe store rm data/c3d.zarr v_abc v_def
    """
    from features_store import open_store

    with open_store(path, "a") as fs:
        missing = [v for v in video_ids if not fs.is_complete(v) and v not in fs.failed()]
        if missing:
            raise UserError(f"{path} has no video {missing[0]!r}" + (f" (and {len(missing) - 1} more)"
                                                                      if len(missing) > 1 else ""))
        for vid in video_ids:
            fs.delete_video(vid)
            fs.clear_failed(vid)
    click.echo(f"removed {len(video_ids)} video(s) from {path}")


@store.command("export")
@click.argument("path")
@click.argument("video_id")
@click.option("--format", "fmt", type=click.Choice(["npy"]), default="npy", show_default=True,
              help="npy: a plain NumPy file of the float32 rows (n_rows, dim).")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: VIDEO_ID.npy in the current folder).")
def store_export(path: str, video_id: str, fmt: str, out: str | None) -> None:
    """Write one video's rows as a plain NumPy file (no etspipe needed to read it).

    \b
    Example:
      etspipe store export data/c3d.zarr v_abc --format npy -o v_abc.npy
    """
    import numpy as np

    from features_store import open_store
    from features_store.ids import store_key

    with open_store(path, "r") as fs:
        rows = fs.rows(video_id)
    target = out or f"{store_key(video_id)}.{fmt}"
    try:
        np.save(target, rows, allow_pickle=False)
    except OSError as exc:
        raise UserError(f"{target}: cannot write ({exc.strerror or exc})") from None
    click.echo(f"{video_id}: {rows.shape[0]} rows x {rows.shape[1]} -> {target}")


@store.command("set-projection")
@click.argument("path")
@click.argument("pca_file", type=click.Path(dir_okay=False))
@config_options
def store_set_projection(path: str, pca_file: str, cfg: dict, raw_overrides: tuple[str, ...]) -> None:
    """Keep the projection an imported store's rows went through (ActivityNet's PCA_activitynet_v1-3.hdf5).

    An imported official ActivityNet C3D store records the recipe of its rows;
    with its projection kept in the store, `etspipe predict` extracts raw videos
    by that recipe without --pca-file. The file is checked against the store
    (dimension, kind, a checksum recorded before); a store holding another
    projection is refused. A square data/U is read by extract.pca_file_u.

    \b
    Example:
      etspipe store set-projection data/anet_c3d.zarr PCA_activitynet_v1-3.hdf5
    """
    from features_store import open_store
    from features_store.anet_pca import read_activitynet_pca
    from features_store.recipes import set_projection

    with open_store(path, "a", durable=bool(cfg["store"]["durable"])) as fs:
        arrays = read_activitynet_pca(pca_file, fs.dim, cfg["extract"]["pca_file_u"])
        identity = set_projection(fs, arrays, pca_file)
    click.echo(f"{path}: projection {pca_file} (sha256 {identity['sha256'][:12]}, {identity['source_dim']} -> "
               f"{identity['dim']} dimensions) kept in the store")


@click.command("import-features")
@click.argument("kind", type=click.Choice(["activitynet-c3d", "activitynet-resnet152", "hdf5", "npy"]))
@click.argument("source", type=click.Path(exists=True))
@click.argument("store_path")
@click.option("--annotations", cls=ManyValuesOption, multiple=True, type=click.Path(dir_okay=False),
              help="activitynet-c3d: annotation files giving each video's duration (one or more).")
@click.option("--fps", type=float, default=None, help="hdf5/npy: feature rows per second before striding.")
@click.option("--stride", type=int, default=1, show_default=True, help="hdf5/npy: frames between rows.")
@click.option("--clip-len", type=int, default=1, show_default=True, help="hdf5/npy: frames each row covers.")
@click.option("--pca-file", type=click.Path(dir_okay=False), default=None,
              help="activitynet-c3d: ActivityNet's PCA_activitynet_v1-3.hdf5, kept in the store so raw videos "
                   "can be extracted by the official recipe (or later: etspipe store set-projection).")
@config_options
def import_features(kind: str, source: str, store_path: str, annotations: tuple[str, ...],
                    fps: float | None, stride: int, clip_len: int, pca_file: str | None, cfg: dict,
                    raw_overrides: tuple[str, ...]) -> None:
    """Bring published feature files into a store.

    \b
    KIND is one of:
      activitynet-c3d        the official ActivityNet Captions C3D file (needs --annotations for durations)
      activitynet-resnet152  ActivityNet's ResNet-152 frame features at 5 fps, the seed's input:
                             resnet152_features_activitynet_5fps_320x240.pkl (read as a stream, ~1 video
                             in memory), Paddle's feat_data folder of per-video pickles, or the .hdf5 variant
      hdf5                   one dataset per video at --fps
      npy                    a folder of <video_id>.npy files at --fps and --stride

    The activitynet-c3d and activitynet-resnet152 stores record the recipe of
    the official rows (C3D Sports-1M fc7 with ActivityNet's PCA; ResNet-152
    layer4 averaged on whole 320x240 frames at 5 fps), so raw videos can be
    extracted to rows of the same meaning. Rerunning an import skips the videos
    the store holds (an interrupted one goes on where it stopped).

    \b
    Examples:
      etspipe import-features activitynet-c3d sub_activitynet_v1-3.c3d.hdf5 data/anet_c3d.zarr \\
          --annotations train.json --annotations val_1.json --annotations val_2.json \\
          --pca-file PCA_activitynet_v1-3.hdf5
      etspipe import-features activitynet-resnet152 resnet152_features_activitynet_5fps_320x240.pkl \\
          data/anet_resnet152.zarr
    """
    from features_store import importers

    dtype, durable = cfg["store"]["dtype"], bool(cfg["store"]["durable"])
    if kind == "activitynet-c3d":
        if not annotations:
            raise UserError("activitynet-c3d needs --annotations FILE (the durations give the row times)")
        importers.import_activitynet_c3d(source, store_path, list(annotations), dtype=dtype, durable=durable,
                                         pca_file=pca_file, pca_u=cfg["extract"]["pca_file_u"])
    elif kind == "activitynet-resnet152":
        from features_store.resnet_import import import_activitynet_resnet152

        given = [name for name, used in (("--annotations", bool(annotations)), ("--pca-file", bool(pca_file)),
                                         ("--fps", fps not in (None, 5.0)), ("--stride", stride != 1),
                                         ("--clip-len", clip_len != 1)) if used]
        if given:
            raise UserError(f"{given[0]} does not apply to activitynet-resnet152: its rows are single frames at "
                            "5 per second, row i at i/5 s")
        import_activitynet_resnet152(source, store_path, dtype=dtype, durable=durable)
    else:
        if pca_file:
            raise UserError(f"--pca-file is for activitynet-c3d imports (the official recipe), not {kind}")
        if fps is None:
            raise UserError(f"{kind} needs --fps (rows per second of the source features)")
        if kind == "hdf5":
            importers.import_hdf5_per_video(source, store_path, fps=fps, stride=stride, clip_len=clip_len,
                                            dtype=dtype, durable=durable)
        else:
            importers.import_npy_folder(source, store_path, fps=fps, stride=stride, clip_len=clip_len,
                                        dtype=dtype, durable=durable)
