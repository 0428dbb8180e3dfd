"""`etspipe train`: fit the ETS captioner on a feature store."""

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


@click.command()
@training_inputs
@click.option("--save-dir", type=OUTPUT_FOLDER, default=None,
              help="Checkpoint folder.", show_default=config_default("train.save_dir"))
@click.option("--resume", default=None, help="Continue a run from a checkpoint file or folder.")
@click.option("--overwrite", is_flag=True, help="Replace the run already in --save_dir (else that is an error).")
@click.option("--weights", "--init-from", "weights", default=None, type=click.Path(),
              help="Start from a checkpoint or run folder (fine-tune; an imported run too): its architecture and "
                   "vocabulary, a new run.")
@click.option("--epochs", type=int, default=None, help="Passes over the training segments.",
              show_default=config_default("train.epochs"))
@click.option("--batch-size", type=int, default=None, help="Segments per step.",
              show_default=config_default("train.batch_size"))
@click.option("--log-interval", type=int, default=None,
              help="Steps between log lines.", show_default=config_default("train.log_interval"))
@click.option("--valid-interval", type=int, default=None,
              help="Epochs between validations.", show_default=config_default("train.valid_interval"))
@click.option("--seed", "--fix-random-seed", "seed", type=int, default=None, help="Random seed.",
              show_default=config_default("train.seed"))
@click.option("--device", type=DEVICE, default=None, help="Where to train.",
              show_default=config_default("train.device"))
@config_options
def train(store_path: str, train_paths: tuple[str, ...], save_dir: str | None, resume: str | None, overwrite: bool,
          weights: str | None, epochs: int | None, batch_size: int | None, log_interval: int | None,
          valid_interval: int | None, seed: int | None, device: str | None,
          cfg: dict, raw_overrides: tuple[str, ...]) -> None:
    """Train the ETS captioner on cached features.

    A share of the training videos (data.val_fraction) is held out for model
    selection; `best.pt`, `last.pt` and the resolved `config.yaml` go to
    --save-dir. Ctrl-C saves `last.pt` after the current step (--resume
    continues from it). Several GPUs: run under torchrun.

    \b
    Example:
      etspipe train --config configs/ets.yaml --store data/c3d.zarr --train train.json
    """
    from caption_model.train import train as run_train

    for key, value in (("train.save_dir", save_dir), ("train.epochs", epochs),
                       ("train.batch_size", batch_size), ("train.log_interval", log_interval),
                       ("train.valid_interval", valid_interval), ("train.seed", seed), ("train.device", device)):
        _set(cfg, key, value)
    run_train(cfg, store_path, list(train_paths), resume=resume, weights=weights,
              overwrite=overwrite)  # logs its own summary
