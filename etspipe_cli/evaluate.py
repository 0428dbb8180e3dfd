"""`etspipe evaluate`: caption ground-truth segments and score them; or score a proposal file (AR@AN)."""

from __future__ import annotations

import click

from etspipe.errors import UserError
from etspipe_cli.common import DEVICE, OUTPUT_FOLDER, ManyValuesOption, _set, config_default, config_options


@click.command()
@click.option("--weights", default=None, type=click.Path(),
              help="Checkpoint to evaluate.", show_default="best.pt under --save-dir")
@click.option("--save-dir", type=OUTPUT_FOLDER, default=None,
              show_default=config_default("train.save_dir"),
              help="Where to look for the best checkpoint.")
@click.option("--store", "store_path", default=None, help="Feature store holding the evaluated videos.")
@click.option("--annotations", cls=ManyValuesOption, multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Reference files (e.g. val_1.json val_2.json); segments of the first are captioned "
                   "(--dense: every video of all of them).")
@click.option("--results", "results_path", default=None, type=click.Path(dir_okay=False),
              help="Score this existing result JSON instead of running a model.")
@click.option("--out", "out_dir", type=OUTPUT_FOLDER, default=None,
              help="Output folder.", show_default=config_default("eval.results_dir"))
@click.option("--beam-size", type=int, default=None, help="Beam width (1 = greedy).",
              show_default=config_default("decode.beam_size"))
@click.option("--device", type=DEVICE, default=None, help="Where to decode.",
              show_default=config_default("train.device"))
@click.option("--dense", is_flag=True,
              help="Caption the proposal model's own events (run folder's proposals_best.pt) and add AR@AN.")
@click.option("--proposals", "proposals_path", default=None, type=click.Path(dir_okay=False),
              help="Score this proposal file (ActivityNet proposal-task format) with AR@AN; no model, no store. "
                   "Scores and AR-AN PNG go beside it (or in --out).")
@click.option("--subset", default=None, show_default="validation",
              help="With --proposals: the subset of a {\"database\": ...} annotation file (ActivityNet v1.3, "
                   "YouCook2) that is scored.")
@config_options
def evaluate(weights: str | None, save_dir: str | None, store_path: str | None, annotations: tuple[str, ...],
             results_path: str | None, out_dir: str | None, beam_size: int | None, device: str | None,
             dense: bool, proposals_path: str | None, subset: str | None, cfg: dict,
             raw_overrides: tuple[str, ...]) -> None:
    """Caption ground-truth segments and score them (ActivityNet Captions protocol).

    Scores are METEOR, BLEU-1..4, ROUGE-L and CIDEr over tIoU 0.3/0.5/0.7/0.9,
    as the official densevid_eval computes them; x100. With --dense the
    captions are of the proposal model's events instead (dense captioning), and
    every proposal is written beside the results in ActivityNet's proposal-task
    format (<results>_proposals.json) and scored with AR@AN (and an AR-AN PNG).
    With --proposals a proposal file (yours or anyone's) is scored the same way,
    as ActivityNet's eval_proposal.py does: <file>_scores.json and
    <file>_ar_an.png beside it (or in --out).

    \b
    Examples:
      etspipe evaluate --store data/c3d.zarr --annotations val_1.json --annotations val_2.json
      etspipe evaluate --results my_results.json --annotations val_1.json --annotations val_2.json
      etspipe evaluate --dense --store data/c3d.zarr --annotations val_1.json val_2.json
      etspipe evaluate --proposals my_proposals.json --annotations val_1.json val_2.json
    """
    if proposals_path is not None:
        from caption_model.scoring.proposal_metrics import score_proposal_file

        given = [flag for flag, value in (("--store", store_path), ("--results", results_path), ("--dense", dense),
                                          ("--weights", weights)) if value]
        if given:
            raise UserError(f"--proposals scores a proposal file on its own: drop {', '.join(given)}")
        score_proposal_file(proposals_path, list(annotations), out_dir, subset=subset or "validation",
                            echo=click.echo)
        return
    if subset is not None:
        raise UserError("--subset goes with --proposals (the subset of the annotations a proposal file is scored on)")
    from caption_model.evaluate import run_evaluate

    _set(cfg, "train.save_dir", save_dir)
    _set(cfg, "eval.results_dir", out_dir)
    _set(cfg, "decode.beam_size", beam_size)
    _set(cfg, "train.device", device)
    if results_path is None and store_path is None:
        raise UserError("give --store STORE to caption segments, --results FILE to score a result file, "
                        "or --proposals FILE to score a proposal file")
    if dense:
        from caption_model.proposals.dense import run_dense_evaluate

        if results_path is not None or store_path is None:
            raise UserError("--dense captions the model's own events: give --store, not --results")
        run_dense_evaluate(cfg, weights, store_path, list(annotations), out_dir=out_dir,
                           device=cfg["train"]["device"], batch_size=cfg["decode"]["batch_size"])
        return
    run_evaluate(cfg, weights=weights, store_path=store_path, annotation_paths=list(annotations),
                 results_path=results_path, out_dir=out_dir, device=cfg["train"]["device"],
                 batch_size=cfg["decode"]["batch_size"])
