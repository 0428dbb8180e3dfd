"""`etspipe import-weights`: another framework's released captioner as an etspipe run folder."""

from __future__ import annotations

import click

from etspipe_cli.common import OUTPUT_FOLDER


@click.command("import-weights")
@click.argument("kind", type=click.Choice(["paddle-ets"]))
@click.argument("params", type=click.Path())
@click.option("--dict", "dict_path", type=click.Path(), default=None,
              help="The model's dict.txt (line number = word id; <s> <e> <unk> first).")
@click.option("--train-json", type=click.Path(), default=None,
              help="Without dict.txt: ActivityNet Captions' train.json, to rebuild the dictionary by the seed's "
                   "rule (PTB tokenizer, count >= 3, ties in Python 2.7's dict order; needs Java).")
@click.option("--out", "out_dir", type=OUTPUT_FOLDER, required=True, help="Run folder to write (best.pt, config.yaml, "
              "vocab.txt, import.json).")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
def import_weights(kind: str, params: str, dict_path: str | None, train_json: str | None, out_dir: str,
                   overwrite: bool) -> None:
    """Import released weights as a run folder that --weights RUN_DIR accepts everywhere.

    \b
    KIND paddle-ets: PaddlePaddle's ETS (PaddleCV/video), PARAMS its ETS.pdparams (a fluid
    pickle, Python 2 or 3) or a fluid save_params folder. Every parameter's name and shape is
    checked, and the dictionary's size against the weights' vocabulary. The run carries
    configs/paddle_ets.yaml (beam 3, 80 words, every row of a segment) and expects ActivityNet's
    2048-d ResNet-152 rows at 5 fps.

    \b
    Example:
      etspipe import-weights paddle-ets ETS.pdparams --dict dict.txt --out runs/paddle_ets
      etspipe evaluate --weights runs/paddle_ets --store resnet152_5fps.zarr --annotations val_1.json
    """
    from caption_model.paddle_import import import_paddle_ets

    best = import_paddle_ets(params, out_dir, dict_path=dict_path, train_json=train_json, overwrite=overwrite)
    click.echo(f"imported {params} -> {best} (use --weights {out_dir})")
