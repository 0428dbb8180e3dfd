"""The `etspipe` command line: parse options, load the config, call the packages.

No logic lives here that a Python user could not reach: every command is a few
lines over a library function (see docs/INTERFACES.md). User mistakes raised
anywhere as `UserError` end here as one `error: ...` line and exit status 1;
a corpus command where some items failed exits 3.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from etspipe import __version__
from etspipe.errors import PartialFailure, UserError

EXIT_USER_ERROR = 1
EXIT_PARTIAL = PartialFailure.exit_code


class EtsGroup(click.Group):
    """A click group that turns the project's exceptions into one line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except PartialFailure as exc:
            if str(exc):
                click.echo(str(exc), err=True)
            ctx.exit(EXIT_PARTIAL)
        except KeyboardInterrupt:
            how = "add --resume SAVE_DIR to continue training" if ctx.invoked_subcommand == "train" \
                else "rerun the same command to resume"
            click.echo(f"interrupted; {how}", err=True)
            ctx.exit(130)


class ManyValuesOption(click.Option):
    """A repeatable option that also takes the plain values after it.

    The reference layout `--annotations val_1.json val_2.json` and the
    repeated `--annotations val_1.json --annotations val_2.json` both work.
    """

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        parser_opt = parser._long_opt.get(self.opts[0]) or parser._short_opt.get(self.opts[0])
        take_one = parser_opt.process

        def take_following(value: Any, state: Any) -> None:
            take_one(value, state)
            while state.rargs and not state.rargs[0].startswith("-"):
                take_one(state.rargs.pop(0), state)

        parser_opt.process = take_following


def _split_overrides(values: tuple[str, ...]) -> list[str]:
    return [v for v in values if "=" in v]


def config_options(func: Callable) -> Callable:
    """--config FILE and repeatable -o section.key=value overrides, loaded into `cfg`."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="YAML config; its keys override configs/ets.yaml (the reference values).",
    )
    @click.option(
        "-o",
        "--override",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one config key, e.g. -o train.batch_size=32 (repeatable).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, config_path: str | None, overrides: tuple[str, ...], **kwargs: Any) -> Any:
        from etspipe.config import load_config

        cfg = load_config(config_path, _split_overrides(overrides))
        return func(*args, cfg=cfg, raw_overrides=overrides, **kwargs)

    return wrapper


def _set(cfg: dict, key: str, value: Any) -> None:
    """Apply a CLI flag to the config only when the user gave it."""
    if value is not None:
        from etspipe.config import set_value

        set_value(cfg, key, value)


DEVICE = click.Choice(["auto", "cpu", "cuda"])


@click.group(cls=EtsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="etspipe")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """etspipe: videos to sentences.

    Stage 1 (`extract`) runs C3D over videos into a feature store; stage 2
    (`train`, `evaluate`, `predict`) trains and uses the ETS temporal-attention
    captioner on those features. `demo` runs everything on built-in data.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_CliFormatter(debug=verbose > 0))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    for noisy in ("distributed", "numba", "matplotlib", "fsspec", "h5py", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _CliFormatter(logging.Formatter):
    """Plain progress messages; warnings and errors say so; -v adds the logger name."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        prefix = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"[{record.name}] {prefix}{msg}" if self.debug else prefix + msg


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "--store", "store_path", default=None, help="Feature store to write (same as -o STORE).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="C3D Sports-1M weights (.pth/.pickle state dict). Without it the network is UNTRAINED.")
@click.option("--layer", type=click.Choice(["fc7", "fc6", "pool5"]), default=None, help="Output layer (default fc7).")
@click.option("--pca", "pca_dim", type=int, default=None,
              help="Reduce features with PCA to this many dims (500 = ActivityNet).")
@click.option("--pca-file", type=click.Path(dir_okay=False), default=None,
              help="Use a saved PCA (.npz) instead of fitting one.")
@click.option("--device", type=DEVICE, default=None, help="Where the network runs (default auto).")
@click.option("--batch-size", type=int, default=None, help="Clips per network batch (default: chosen for the device).")
@click.option("--workers", type=int, default=0, help="Start a local dask cluster with N workers.")
@click.option("--scheduler", default=None, help="Address of an existing dask scheduler (tcp://host:8786).")
@click.option("--overwrite", is_flag=True, help="Start the store over.")
@click.option("--retry-failed", is_flag=True, help="Retry videos recorded as failed.")
@config_options
def extract(inputs: tuple[str, ...], store_path: str | None, weights: str | None, layer: str | None,
            pca_dim: int | None, pca_file: str | None, device: str | None, batch_size: int | None,
            workers: int, scheduler: str | None, overwrite: bool, retry_failed: bool,
            cfg: dict, raw_overrides: tuple[str, ...]) -> None:
    """Extract C3D features of videos into a feature store.

    INPUTS are video files, folders (searched recursively), globs or text files
    listing paths. The store is `-o STORE` (Zarr unless it ends in .h5/.hdf5).
    A rerun resumes: complete videos are skipped. Exit status 3 if some failed.

    \b
    Example:
      etspipe extract videos/ -o data/c3d.zarr --weights c3d.pickle --pca 500
    """
    stores = [v for v in raw_overrides if "=" not in v]
    if store_path is None and len(stores) == 1:
        store_path = stores[0]
    elif stores and (store_path is not None or len(stores) > 1):
        raise UserError(f"give the output store once (got {', '.join(stores)})")
    if store_path is None:
        raise UserError("no output store: add -o STORE (e.g. -o data/c3d.zarr)")
    from extract_features import extract_corpus

    _set(cfg, "extract.layer", layer)
    _set(cfg, "extract.pca_dim", pca_dim)
    _set(cfg, "extract.device", device)
    _set(cfg, "extract.batch_size", batch_size)
    summary = extract_corpus(list(inputs), store_path, cfg, weights=weights, pca_file=pca_file,
                             overwrite=overwrite, retry_failed=retry_failed, workers=workers,
                             scheduler=scheduler)
    if summary.get("failed"):
        raise PartialFailure(f"{summary['failed']} video(s) failed; see `etspipe store info {store_path}`")


@cli.command()
@click.option("--store", "store_path", required=True, help="Feature store made by `extract` or `import-features`.")
@click.option("--train", "train_paths", cls=ManyValuesOption, multiple=True, required=True,
              type=click.Path(dir_okay=False), help="Training annotations (ActivityNet Captions JSON), one or more.")
@click.option("--save_dir", "--save-dir", default=None, help="Checkpoint folder (default data/checkpoints).")
@click.option("--resume", default=None, help="Continue a run from a checkpoint file or folder.")
@click.option("--weights", default=None, type=click.Path(), help="Start from a checkpoint (fine-tune).")
@click.option("--epochs", type=int, default=None, help="Passes over the training segments.")
@click.option("--batch_size", "--batch-size", type=int, default=None, help="Segments per step.")
@click.option("--log_interval", "--log-interval", type=int, default=None, help="Steps between log lines.")
@click.option("--valid_interval", "--valid-interval", type=int, default=None, help="Epochs between validations.")
@click.option("--fix_random_seed", "--seed", "seed", type=int, default=None, help="Random seed (default 0).")
@click.option("--device", type=DEVICE, default=None, help="Where to train (default auto).")
@config_options
def train(store_path: str, train_paths: tuple[str, ...], save_dir: str | None, resume: str | None,
          weights: str | None, epochs: int | None, batch_size: int | None, log_interval: int | None,
          valid_interval: int | None, seed: int | None, device: str | None,
          cfg: dict, raw_overrides: tuple[str, ...]) -> None:
    """Train the ETS captioner on cached features.

    A share of the training videos (data.val_fraction) is held out for model
    selection; `best.pt` and `last.pt` go to --save_dir. Several GPUs: run
    under torchrun.

    \b
    Example:
      etspipe train --config configs/ets.yaml --store data/c3d.zarr --train train.json
    """
    from caption_model.train import train as run_train

    for key, value in (("train.save_dir", save_dir), ("train.epochs", epochs),
                       ("train.batch_size", batch_size), ("train.log_interval", log_interval),
                       ("train.valid_interval", valid_interval), ("train.seed", seed), ("train.device", device)):
        _set(cfg, key, value)
    best = run_train(cfg, store_path, list(train_paths), resume=resume, weights=weights)
    click.echo(f"best checkpoint: {best}")


@cli.command()
@click.option("--weights", default=None, type=click.Path(),
              help="Checkpoint to evaluate (default: best.pt under --save_dir).")
@click.option("--save_dir", "--save-dir", default=None, help="Where to look for the best checkpoint.")
@click.option("--store", "store_path", default=None, help="Feature store holding the evaluated videos.")
@click.option("--annotations", cls=ManyValuesOption, multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Reference files (e.g. val_1.json val_2.json); segments of the first are captioned.")
@click.option("--results", "results_path", default=None, type=click.Path(dir_okay=False),
              help="Score this existing result JSON instead of running a model.")
@click.option("--out", "out_dir", default=None, help="Output folder (default data/evaluate_results).")
@click.option("--beam-size", type=int, default=None, help="Beam width (1 = greedy).")
@click.option("--device", type=DEVICE, default=None, help="Where to decode (default auto).")
@config_options
def evaluate(weights: str | None, save_dir: str | None, store_path: str | None, annotations: tuple[str, ...],
             results_path: str | None, out_dir: str | None, beam_size: int | None, device: str | None,
             cfg: dict, raw_overrides: tuple[str, ...]) -> None:
    """Caption ground-truth segments and score them (ActivityNet Captions protocol).

    Scores are METEOR, BLEU-1..4, ROUGE-L and CIDEr over tIoU 0.3/0.5/0.7/0.9,
    as the official densevid_eval computes them; x100.

    \b
    Examples:
      etspipe evaluate --store data/c3d.zarr --annotations val_1.json --annotations val_2.json
      etspipe evaluate --results my_results.json --annotations val_1.json --annotations val_2.json
    """
    from caption_model.evaluate import run_evaluate

    _set(cfg, "train.save_dir", save_dir)
    _set(cfg, "eval.results_dir", out_dir)
    _set(cfg, "decode.beam_size", beam_size)
    _set(cfg, "train.device", device)
    if results_path is None and store_path is None:
        raise UserError("give --store STORE to caption segments, or --results FILE to score a result file")
    run_evaluate(cfg, weights=weights, store_path=store_path, annotation_paths=list(annotations),
                 results_path=results_path, out_dir=out_dir, device=cfg["train"]["device"],
                 batch_size=cfg["decode"]["batch_size"])


@cli.command()
@click.option("--filelist", required=True, type=click.Path(dir_okay=False),
              help="Lines 'VIDEO [START END]' (a video file or a store id), or 'id<TAB>start<TAB>end'.")
@click.option("--weights", default=None, type=click.Path(),
              help="Checkpoint (default: best.pt under --save_dir).")
@click.option("--save_dir", "--save-dir", default=None, help="Where to look for the best checkpoint.")
@click.option("--store", "store_path", default=None,
              help="Feature store to read ids from and cache new videos in (default: beside the results).")
@click.option("--out", "out_dir", default=None, help="Output folder (default data/predict_results).")
@click.option("--plot", "plot_dir", default=None, help="Save one attention plot (PNG) per caption here.")
@click.option("--c3d-weights", default=None, type=click.Path(dir_okay=False),
              help="C3D weights for raw videos, when the store was extracted with trained weights.")
@click.option("--beam-size", type=int, default=None, help="Beam width (1 = greedy).")
@click.option("--device", type=DEVICE, default=None, help="Where to run (default auto).")
@config_options
def predict(filelist: str, weights: str | None, save_dir: str | None, store_path: str | None,
            out_dir: str | None, plot_dir: str | None, c3d_weights: str | None, beam_size: int | None,
            device: str | None,
            cfg: dict, raw_overrides: tuple[str, ...]) -> None:
    """Caption the videos or segments listed in a file.

    Raw video files are extracted on the fly with the checkpoint's extractor
    settings and cached in the store. Bad lines are reported with their line
    numbers; the others are still captioned (exit status 3 then).

    \b
    Example:
      etspipe predict --filelist to_caption.txt --plot data/attention
    """
    from caption_model.predict import run_predict

    _set(cfg, "train.save_dir", save_dir)
    _set(cfg, "predict.results_dir", out_dir)
    _set(cfg, "decode.beam_size", beam_size)
    _set(cfg, "train.device", device)
    summary = run_predict(cfg, weights, filelist, store_path=store_path, plot_dir=plot_dir,
                          c3d_weights=c3d_weights, device=cfg["train"]["device"],
                          batch_size=cfg["decode"]["batch_size"])
    if summary.get("n_failed"):
        raise PartialFailure(f"{summary['n_failed']} line(s) of {filelist} could not be captioned")


@cli.command()
@click.option("--out", "out_dir", default="demo_out", show_default=True,
              help="Folder for data, features, model and results.")
@click.option("--fresh", is_flag=True, help="Redo every stage instead of reusing finished ones.")
@click.option("--generate-only", "generate_only", default=None, metavar="DIR",
              help="Only write the demo videos and annotations to DIR.")
@click.option("--videos", "n_videos", type=click.IntRange(6, None), default=None,
              help="Size of the generated demo set (default 450).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config (default configs/demo.yaml, over configs/ets.yaml).")
@click.option("-o", "--override", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config key, e.g. -o train.epochs=5 (repeatable).")
def demo(out_dir: str, fresh: bool, generate_only: str | None, n_videos: int | None, config_path: str | None,
         overrides: tuple[str, ...]) -> None:
    """Run the whole pipeline on a built-in captioned video set (minutes, CPU).

    Generates videos of moving shapes with captions, extracts C3D features
    (an untrained, narrow C3D: the demo has no weights to download), trains,
    evaluates on the test split with the official protocol and predicts on raw
    test videos with attention plots, then prints a report. A rerun reuses
    finished stages unless --fresh.
    """
    from etspipe.config import load_config
    from etspipe.demo import DEMO_CONFIG, DEMO_VIDEOS, run_demo
    from etspipe.demo import generate_only as run_generate

    if generate_only:
        run_generate(generate_only, n_videos=n_videos or DEMO_VIDEOS)
        return
    cfg = load_config(config_path or DEMO_CONFIG, list(overrides))
    run_demo(Path(out_dir), fresh=fresh, cfg=cfg, n_videos=n_videos or DEMO_VIDEOS)


@cli.group()
def store() -> None:
    """Inspect feature stores."""


@store.command("info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def store_info(path: str, as_json: bool) -> None:
    """Videos complete/failed, rows, dimension, dtype, size and extractor of a store."""
    import json

    from features_store import format_info, open_store

    with open_store(path, "r") as fs:
        info = fs.info()
    click.echo(json.dumps(info, indent=2, default=str) if as_json else format_info(info))


@cli.command("import-features")
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
        summary = importers.import_activitynet_c3d(source, store_path, list(annotations), dtype=dtype)
    else:
        if fps is None:
            raise UserError(f"{kind} needs --fps (rows per second of the source features)")
        if kind == "hdf5":
            summary = importers.import_hdf5_per_video(source, store_path, fps=fps, stride=stride, clip_len=clip_len,
                                                      dtype=dtype)
        else:
            summary = importers.import_npy_folder(source, store_path, fps=fps, stride=stride, clip_len=clip_len,
                                                  dtype=dtype)
    click.echo(", ".join(f"{k}: {v}" for k, v in summary.items() if not isinstance(v, (list, dict))))


if __name__ == "__main__":
    cli()
