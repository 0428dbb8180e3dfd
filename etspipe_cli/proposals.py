"""`etspipe train-proposals`: fit the temporal event proposal model into a run folder."""

from __future__ import annotations

import click

from etspipe_cli.common import (
    DEVICE,
    OUTPUT_FOLDER,
    _set,
    config_default,
    config_options,
    training_inputs,
)


@click.command("train-proposals")
@training_inputs
@click.option("--save-dir", type=OUTPUT_FOLDER, default=None,
              help="Run folder, shared with the captioner.", show_default=config_default("train.save_dir"))
@click.option("--resume", default=None, help="Continue a proposal run from its folder or proposals_last.pt.")
@click.option("--epochs", type=int, default=None, help="Passes over the training videos.",
              show_default=config_default("proposals.epochs"))
@click.option("--device", type=DEVICE, default=None, help="Where to train.",
              show_default=config_default("proposals.device"))
@config_options
def train_proposals(store_path: str, train_paths: tuple[str, ...], save_dir: str | None, resume: str | None,
                    epochs: int | None, device: str | None, cfg: dict, raw_overrides: tuple[str, ...]) -> None:
    """Train the event proposal model (proposals.model: bmn, boundary matching, or sst).

    It learns where events start and end from the training timestamps, holds
    out the same videos as `train` (data.val_fraction), topped up to
    proposals.min_val_videos, to pick proposals_best.pt by AR@AN and to
    calibrate how many events a video gets, and writes proposals_best.pt / proposals_last.pt
    into the run folder beside the captioner's checkpoints, so that evaluate
    and predict find both. Settings: the `proposals` section of the config.
    Several GPUs: run under torchrun.

    \b
    Example:
      etspipe train-proposals --store data/c3d.zarr --train train.json --save-dir data/checkpoints
      etspipe train-proposals --store data/c3d.zarr --train train.json -o proposals.model=sst
    """
    from caption_model.proposals.train import train_proposals as run

    _set(cfg, "proposals.epochs", epochs)
    _set(cfg, "proposals.device", device)
    result = run(cfg, store_path, list(train_paths), save_dir=save_dir, resume=resume)
    click.echo(f"best proposal checkpoint: {result.best_path}")
