"""`etspipe demo`: the whole pipeline on built-in data."""

from __future__ import annotations

from pathlib import Path

import click

from etspipe_cli.common import OUTPUT_FOLDER


@click.command()
@click.option("--out", "out_dir", type=OUTPUT_FOLDER, default="demo_out", show_default=True,
              help="Folder for data, features, model and results.")
@click.option("--fresh", is_flag=True, help="Redo every stage instead of reusing finished ones.")
@click.option("--generate-only", "generate_only", default=None, metavar="DIR",
              help="Only write the demo videos and annotations to DIR.")
@click.option("--videos", "n_videos", type=click.IntRange(6, None), default=None,
              help="Size of the generated demo set.", show_default="450")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config, over configs/ets.yaml.", show_default="configs/demo.yaml")
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

    \b
    Examples:
      etspipe demo                      # everything, into demo_out/
      etspipe demo --out /tmp/demo --videos 60 -o train.epochs=5   # a quicker, smaller run
    """
    from etspipe.config import load_config
    from etspipe_demo.run import DEMO_CONFIG, DEMO_VIDEOS, run_demo
    from etspipe_demo.run import generate_only as run_generate

    if generate_only:
        run_generate(generate_only, n_videos=n_videos or DEMO_VIDEOS)
        return
    cfg = load_config(config_path or DEMO_CONFIG, list(overrides))
    run_demo(Path(out_dir), fresh=fresh, cfg=cfg, n_videos=n_videos or DEMO_VIDEOS)
