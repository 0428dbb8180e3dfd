"""`etspipe store ...` and `etspipe import-features`: feature-store housekeeping."""

from __future__ import annotations

import click

from etspipe.errors import UserError
from etspipe_cli.common import ManyValuesOption, config_options


@click.group()
def store() -> None:
    """Inspect feature stores."""


@store.command("info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def store_info(path: str, as_json: bool) -> None:
    """Videos complete/failed, rows, dimension, dtype, size and extractor of a store.

    \b
    Example:
      etspipe store info data/c3d.zarr --json
    """
    import json

    from features_store import format_info, open_store

    with open_store(path, "r") as fs:
        info = fs.info()
    click.echo(json.dumps(info, indent=2, default=str) if as_json else format_info(info))


@click.command("import-features")
@click.argument("kind", type=click.Choice(["activitynet-c3d", "hdf5", "npy"]))
@click.argument("source", type=click.Path(exists=True))
@click.argument("store_path")
@click.option("--annotations", cls=ManyValuesOption, multiple=True, type=click.Path(dir_okay=False),
              help="activitynet-c3d: annotation files giving each video's duration (one or more).")
@click.option("--fps", type=float, default=None, help="hdf5/npy: feature rows per second before striding.")
@click.option("--stride", type=int, default=1, show_default=True, help="hdf5/npy: frames between rows.")
@click.option("--clip-len", type=int, default=1, show_default=True, help="hdf5/npy: frames each row covers.")
@config_options
def import_features(kind: str, source: str, store_path: str, annotations: tuple[str, ...],
                    fps: float | None, stride: int, clip_len: int, cfg: dict, raw_overrides: tuple[str, ...]) -> None:
    """Bring published feature files into a store.

    \b
    KIND is one of:
      activitynet-c3d  the official ActivityNet Captions C3D file (needs --annotations for durations)
      hdf5             one dataset per video at --fps (e.g. ResNet-152 frame features at 5 fps)
      npy              a folder of <video_id>.npy files at --fps and --stride
    \b
    Example:
      etspipe import-features activitynet-c3d sub_activitynet_v1-3.c3d.hdf5 data/anet_c3d.zarr \\
          --annotations train.json --annotations val_1.json --annotations val_2.json
    """
    from features_store import importers

    dtype = cfg["store"]["dtype"]
    if kind == "activitynet-c3d":
        if not annotations:
            raise UserError("activitynet-c3d needs --annotations FILE (the durations give the row times)")
        importers.import_activitynet_c3d(source, store_path, list(annotations), dtype=dtype)
    else:
        if fps is None:
            raise UserError(f"{kind} needs --fps (rows per second of the source features)")
        if kind == "hdf5":
            importers.import_hdf5_per_video(source, store_path, fps=fps, stride=stride, clip_len=clip_len,
                                            dtype=dtype)
        else:
            importers.import_npy_folder(source, store_path, fps=fps, stride=stride, clip_len=clip_len,
                                        dtype=dtype)
