"""`etspipe predict`: caption listed videos or segments, raw files included.

The options are parsed here; `etspipe_flows.predict.predict_videos` does the work
(extracting raw files with the store's recipe, then captioning store ids).
"""

from __future__ import annotations

import click

from etspipe.errors import PartialFailure, UserError
from etspipe_cli.common import DEVICE, OUTPUT_FOLDER, _set, config_default, config_options
from etspipe_flows.predict import predict_videos


@click.command()
@click.argument("videos", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--filelist", default=None, type=click.Path(dir_okay=False),
              help="Lines 'VIDEO [START END]' (a video file or a store id), or 'id<TAB>start<TAB>end'.")
@click.option("--weights", default=None, type=click.Path(),
              help="Checkpoint.", show_default="best.pt under --save-dir")
@click.option("--save-dir", type=OUTPUT_FOLDER, default=None,
              show_default=config_default("train.save_dir"),
              help="Where to look for the best checkpoint.")
@click.option("--store", "store_path", default=None,
              help="Feature store to read ids from and cache new videos in.", show_default="beside the results")
@click.option("--out", "out_dir", type=OUTPUT_FOLDER, default=None,
              help="Output folder.", show_default=config_default("predict.results_dir"))
@click.option("--plot", "plot_dir", type=OUTPUT_FOLDER, default=None,
              help="Save one attention plot (PNG) per caption here.")
@click.option("--html", is_flag=True,
              help="Also write <results>.html: the videos with their captions, events and attention (see view).")
@click.option("--c3d-weights", default=None, type=click.Path(dir_okay=False),
              help="C3D weights for raw videos, when the store's rows came from trained weights "
                   "(an imported ActivityNet store: the Sports-1M c3d.pickle).")
@click.option("--resnet-weights", default=None, type=click.Path(dir_okay=False),
              help="torchvision ResNet-152 weights (resnet152-394f9c45.pth, IMAGENET1K_V1) for raw videos, when "
                   "the model's rows are ActivityNet's ResNet-152 frame features (e.g. a run from "
                   "import-weights paddle-ets).")
@click.option("--pca-file", default=None, type=click.Path(dir_okay=False),
              help="Projection for raw videos: ActivityNet's PCA_activitynet_v1-3.hdf5 for an imported "
                   "ActivityNet store (kept in the store once given), else the store's own .npz.")
@click.option("--mean-cube", default=None, type=click.Path(dir_okay=False),
              help="Sports-1M mean cube (.npy, 16x128x171x3) for raw videos; without it an imported ActivityNet "
                   "store's videos get the cube's per-channel means.")
@click.option("--beam-size", type=int, default=None, help="Beam width (1 = greedy).",
              show_default=config_default("decode.beam_size"))
@click.option("--device", type=DEVICE, default=None, help="Where to run.", show_default=config_default("train.device"))
@click.option("--max-events", type=click.IntRange(1, None), default=None,
              help="At most this many events per video without times.",
              show_default=config_default("proposals.max_events"))
@click.option("--subtitles", type=click.Choice(["srt", "vtt"]), default=None,
              help="Also write one subtitle file per video (SRT or WebVTT), in a folder named after "
                   "the result JSON: <results stem>/<video>.srt|vtt.")
@config_options
def predict(videos: tuple[str, ...], filelist: str | None, weights: str | None, save_dir: str | None,
            store_path: str | None, out_dir: str | None, plot_dir: str | None, html: bool, c3d_weights: str | None,
            resnet_weights: str | None, pca_file: str | None, mean_cube: str | None, beam_size: int | None,
            device: str | None, max_events: int | None, subtitles: str | None, cfg: dict,
            raw_overrides: tuple[str, ...]) -> None:
    """Caption whole video files (VIDEO...) or the videos or segments listed in a file.

    A video id is read from the store. Times are seconds; times past the stored
    end (downloads are often shorter than annotated), reversed or zero-length
    get rows by the same alignment rule as evaluate, and each case is counted
    in one line. A video without times is described
    event by event (start, end, proposal score, caption; sorted by start) when
    the run folder holds a proposal model (`etspipe train-proposals`), else as
    a whole. A video file not in the store is extracted with the settings (and
    PCA projection) the store records and cached in that store: --store, or
    by default the working store features.zarr in the results folder, made
    with the settings of the features the model was trained on. A store
    etspipe extracted needs --c3d-weights when its rows came from trained
    weights. An imported ActivityNet C3D store (import-features
    activitynet-c3d) is extracted by the recipe it records: C3D Sports-1M fc7,
    clip 16 stride 8, 128x171 frames, crop 112, mean cube, ActivityNet's PCA;
    that needs --c3d-weights c3d.pickle and --pca-file
    PCA_activitynet_v1-3.hdf5 (once; the store keeps it), and takes
    --mean-cube. A model whose rows are ActivityNet's ResNet-152 frame
    features (import-weights paddle-ets, import-features
    activitynet-resnet152, extract --recipe activitynet-resnet152) extracts
    raw videos by that recipe: frames at 5 fps as ffmpeg's fps=5 picks them,
    320x240, ResNet-152 layer4 averaged; that needs --resnet-weights
    resnet152-394f9c45.pth. Other imported stores cannot extract new videos. A line
    whose video cannot be extracted or captioned says why in one line; the
    others are still captioned (exit status 3 then).

    \b
    Examples:
      etspipe predict my_video.mp4 --plot data/attention
      etspipe predict my_video.mp4 --html        # then open data/predict_results/predict_videos_*.html
      etspipe predict --filelist to_caption.txt --store data/c3d.zarr
      etspipe predict --filelist my_videos.txt --subtitles vtt --max-events 5
      etspipe predict my_video.mp4 --weights data/checkpoints/best.pt \\
          --c3d-weights c3d.pickle --pca-file PCA_activitynet_v1-3.hdf5     # a model trained on imported features
      etspipe predict my_video.mp4 --weights data/paddle_ets/best.pt \\
          --resnet-weights resnet152-394f9c45.pth                        # the seed's model (ResNet-152 rows)
    """
    if not videos and not filelist:
        raise UserError("give video files (etspipe predict VIDEO...) or --filelist FILE")
    if c3d_weights and resnet_weights:
        raise UserError("give --c3d-weights or --resnet-weights, not both: a model's rows come from one network")
    _set(cfg, "train.save_dir", save_dir)
    _set(cfg, "predict.results_dir", out_dir)
    _set(cfg, "decode.beam_size", beam_size)
    _set(cfg, "train.device", device)
    # the flow's c3d_weights is the file of whichever network the store's rows came from; extract_like_store
    # follows the store's recipe and names the flag it needs, the loader refuses a file of the other network
    summary = predict_videos(cfg, weights, filelist, videos, store_path=store_path, plot_dir=plot_dir, html=html,
                             c3d_weights=c3d_weights or resnet_weights, max_events=max_events, subtitles=subtitles,
                             pca_file=pca_file, mean_cube=mean_cube, echo=click.echo)
    if summary["n_failed"] or not summary["n_ok"]:
        source = filelist or "the videos given"
        raise PartialFailure(f"{summary['n_failed']} line(s) of {source} could not be captioned")
