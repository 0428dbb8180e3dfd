"""The `etspipe` command line: the group, its logging, and where each command lives.

No logic lives in the CLI that a Python user could not reach: every command
(one module each under `etspipe_cli/`) is a few lines over a library function
(see docs/INTERFACES.md). User mistakes raised anywhere as `UserError` end as
one `error: ...` line and exit status 1; a corpus command where some items
failed exits 3.
"""

from __future__ import annotations

import click

from etspipe import __version__
from etspipe.heap import keep_freed_memory
from etspipe_cli.common import CliFormatter, EtsGroup, ManyValuesOption, setup_logging  # noqa: F401  (public)
from etspipe_cli.demo import demo
from etspipe_cli.evaluate import evaluate
from etspipe_cli.extract import extract
from etspipe_cli.import_weights import import_weights
from etspipe_cli.predict import predict
from etspipe_cli.proposals import train_proposals
from etspipe_cli.store import import_features, store
from etspipe_cli.train import train
from etspipe_cli.view import view


@click.group(cls=EtsGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="etspipe")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """etspipe: videos to sentences.

    Stage 1 (`extract`) runs C3D over videos into a feature store; stage 2
    (`train`, `evaluate`, `predict`) trains and uses the ETS temporal-attention
    captioner on those features. `demo` runs everything on built-in data.
    """
    setup_logging(verbose)  # a dask cluster's own lines only with -v
    keep_freed_memory()  # every command allocates the same large tensors again and again (etspipe/heap.py)


for command in (extract, train, evaluate, predict, demo, store, import_features, import_weights, view):
    cli.add_command(command)
cli.add_command(train_proposals)


if __name__ == "__main__":
    cli()
