"""`etspipe extract`: stage 1 over a corpus of videos."""

from __future__ import annotations

import click

from etspipe.errors import PartialFailure, UserError
from etspipe_cli.common import DEVICE, _set, config_default, config_options


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "--store", "store_path", default=None, help="Feature store to write (same as -o STORE).")
@click.option("--recipe", type=click.Choice(["activitynet-resnet152"]), default=None,
              help="Extract by a published recipe instead of the config's C3D. activitynet-resnet152: "
                   "ActivityNet's frame features (the seed's input): frames at 5 per second as ffmpeg's fps=5 "
                   "picks them, resized to 320x240 (aspect not kept), whole frame, torchvision ResNet-152, "
                   "ImageNet normalisation, layer4 averaged: 2048-d, row i at i/5 s. Weights: --resnet-weights.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="C3D Sports-1M weights (.pth/.pickle state dict). Without it the network is UNTRAINED.")
@click.option("--resnet-weights", type=click.Path(dir_okay=False), default=None,
              help="With --recipe activitynet-resnet152: torchvision's ResNet-152 state dict "
                   "(resnet152-394f9c45.pth, IMAGENET1K_V1). Without it the network is UNTRAINED.")
@click.option("--layer", type=click.Choice(["fc7", "fc6", "pool5"]), default=None, help="Output layer.",
              show_default=config_default("extract.layer"))
@click.option("--pca", "pca_dim", type=int, default=None,
              help="Reduce features with PCA to this many dims (500 = ActivityNet).",
              show_default=config_default("extract.pca_dim"))
@click.option("--pca-file", type=click.Path(dir_okay=False), default=None,
              help="Use a saved projection instead of fitting one: etspipe's .npz, or ActivityNet's "
                   "PCA_activitynet_v1-3.hdf5 (rows = (fc7 - x_mean) @ U[:, :k], k = --pca or extract.pca_file_dim).")
@click.option("--mean-cube", type=click.Path(dir_okay=False), default=None,
              help="Subtract this mean cube (.npy, 16x128x171x3 in the network's channel order, e.g. the Sports-1M "
                   "cube converted from Caffe) instead of the per-channel extract.mean.",
              show_default=config_default("extract.mean_cube"))
@click.option("--device", type=DEVICE, default=None, help="Where the network runs.",
              show_default=config_default("extract.device"))
@click.option("--batch-size", type=int, default=None,
              help="Clips per network batch (0: chosen for the device).",
              show_default=config_default("extract.batch_size"))
@click.option("--workers", type=int, default=0, help="Start a local dask cluster with N workers.")
@click.option("--scheduler", default=None, help="Address of an existing dask scheduler (tcp://host:8786).")
@click.option("--overwrite", is_flag=True, help="Start the store over.")
@click.option("--retry-failed", is_flag=True, help="Retry videos recorded as failed.")
@config_options(bare_store=True)
def extract(inputs: tuple[str, ...], store_path: str | None, recipe: str | None, weights: str | None,
            resnet_weights: str | None, layer: str | None,
            pca_dim: int | None, pca_file: str | None, mean_cube: str | None, device: str | None,
            batch_size: int | None,
            workers: int, scheduler: str | None, overwrite: bool, retry_failed: bool,
            cfg: dict, raw_overrides: tuple[str, ...]) -> None:
    """Extract C3D features (or a recipe's: --recipe) of videos into a feature store.

    INPUTS are video files, folders (searched recursively), globs or text files
    listing paths. The store is `-o STORE` (Zarr unless it ends in .h5/.hdf5).
    A rerun resumes: complete videos are skipped. Exit status 3 if some failed.

    \b
    Examples:
      etspipe extract videos/ -o data/c3d.zarr --weights c3d.pickle --pca 500
      etspipe extract videos/ -o data/anet.zarr --weights c3d.pickle --pca-file PCA_activitynet_v1-3.hdf5
      etspipe extract videos/ -o data/resnet.zarr --recipe activitynet-resnet152 \\
          --resnet-weights resnet152-394f9c45.pth
    """
    stores = [v for v in raw_overrides if "=" not in v]
    if store_path is None and len(stores) == 1:
        store_path = stores[0]
    elif stores and (store_path is not None or len(stores) > 1):
        raise UserError(f"give the output store once (got {', '.join(stores)})")
    if store_path is None:
        raise UserError("no output store: add -o STORE (e.g. -o data/c3d.zarr)")
    weights = _network_weights(recipe, weights, resnet_weights, layer=layer, pca_dim=pca_dim, pca_file=pca_file,
                               mean_cube=mean_cube)
    from extract_features import extract_corpus

    _set(cfg, "extract.layer", layer)
    _set(cfg, "extract.pca_dim", pca_dim)
    _set(cfg, "extract.device", device)
    _set(cfg, "extract.batch_size", batch_size)
    _set(cfg, "extract.mean_cube", mean_cube)
    summary = extract_corpus(list(inputs), store_path, cfg, weights=weights, pca_file=pca_file,
                             overwrite=overwrite, retry_failed=retry_failed, workers=workers,
                             scheduler=scheduler, recipe=recipe)
    if summary.get("failed"):
        raise PartialFailure(f"{summary['failed']} video(s) failed; see `etspipe store info {store_path}`")


def _network_weights(recipe: str | None, weights: str | None, resnet_weights: str | None, **c3d_only) -> str | None:
    """The weights file of the network that runs; an option of the other network is one line."""
    if recipe is None:
        if resnet_weights:
            raise UserError("--resnet-weights goes with --recipe activitynet-resnet152 (without a recipe the "
                            "network is C3D: --weights)")
        return weights
    if weights:
        raise UserError(f"--weights is C3D's; the {recipe} recipe's network is ResNet-152: pass --resnet-weights")
    given = [name for name, value in c3d_only.items() if value is not None]
    if given:
        flag = "--" + given[0].replace("_dim", "").replace("_", "-")
        raise UserError(f"{flag} is a setting of C3D's features; the {recipe} recipe fixes its rows: leave it out")
    return resnet_weights
