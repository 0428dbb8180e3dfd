"""`etspipe predict`: caption listed videos or segments."""

from __future__ import annotations

import click

from etspipe.errors import PartialFailure
from etspipe_cli.common import DEVICE, OUTPUT_FOLDER, _set, config_default, config_options


@click.command()
@click.option("--filelist", required=True, type=click.Path(dir_okay=False),
              help="Lines 'VIDEO [START END]' (a video file or a store id), or 'id<TAB>start<TAB>end'.")
@click.option("--weights", default=None, type=click.Path(),
              help="Checkpoint.", show_default="best.pt under --save-dir")
@click.option("--save_dir", "--save-dir", type=OUTPUT_FOLDER, default=None,
              show_default=config_default("train.save_dir"),
              help="Where to look for the best checkpoint.")
@click.option("--store", "store_path", default=None,
              help="Feature store to read ids from and cache new videos in.", show_default="beside the results")
@click.option("--out", "out_dir", type=OUTPUT_FOLDER, default=None,
              help="Output folder.", show_default=config_default("predict.results_dir"))
@click.option("--plot", "plot_dir", type=OUTPUT_FOLDER, default=None,
              help="Save one attention plot (PNG) per caption here.")
@click.option("--c3d-weights", default=None, type=click.Path(dir_okay=False),
              help="C3D weights for raw videos, when the store was extracted with trained weights.")
@click.option("--beam-size", type=int, default=None, help="Beam width (1 = greedy).",
              show_default=config_default("decode.beam_size"))
@click.option("--device", type=DEVICE, default=None, help="Where to run.", show_default=config_default("train.device"))
@config_options
def predict(filelist: str, weights: str | None, save_dir: str | None, store_path: str | None,
            out_dir: str | None, plot_dir: str | None, c3d_weights: str | None, beam_size: int | None,
            device: str | None,
            cfg: dict, raw_overrides: tuple[str, ...]) -> None:
    """Caption the videos or segments listed in a file.

    A listed video id is read from --store. A raw video file not in the store
    is extracted with the settings the store records and cached there; this
    needs a store that etspipe extracted itself without PCA (imported or
    PCA-reduced features cannot be made from a new file). Bad lines are
    reported with their line numbers; the others are still captioned (exit
    status 3 then).

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
