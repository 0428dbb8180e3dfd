"""Pieces every command shares: the error-to-exit-status group, option helpers, log format."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import click

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
        except KeyboardInterrupt as exc:
            # train's message says whether a checkpoint was saved and how to continue
            how = str(exc) or ("add --resume SAVE_DIR to continue training" if ctx.invoked_subcommand == "train"
                               else "rerun the same command to resume")
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


class CliFormatter(logging.Formatter):
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
