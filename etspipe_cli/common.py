"""Pieces every command shares: the error-to-exit-status group, option helpers, log format."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from etspipe.errors import PartialFailure, UserError

EXIT_USER_ERROR = 1
EXIT_PARTIAL = PartialFailure.exit_code


class OneLineUsageError(click.UsageError):
    """A click usage error shown as one `error:` line (click prints usage, a hint and the error on 4)."""

    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"error: {self.format_message()}{hint}", err=True)


def _one_line(exc: click.UsageError) -> OneLineUsageError:
    return OneLineUsageError(exc.format_message(), exc.ctx)


def dashes(token: str) -> str:
    """An option or command name with underscores spelled as dashes (click's token normaliser)."""
    return token.replace("_", "-")


class EtsGroup(click.Group):
    """A click group that turns the project's exceptions into one line and an exit status.

    User mistakes exit 1, one `error:` line per mistake; a command line that does
    not parse (unknown option, missing argument, a malformed option value) keeps
    click's usage status 2, the convention of click, argparse and the GNU tools,
    so a script can tell a typo in its command from a problem in the data.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = kwargs.setdefault("context_settings", {})
        # the reference implementation's spellings (--save_dir, --batch_size) work for every option of every
        # command (and `import_features` names the command): dashes are what help and README show
        settings.setdefault("token_normalize_func", dashes)
        super().__init__(*args, **kwargs)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except OneLineUsageError:
            raise
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OneLineUsageError:
            raise
        except click.UsageError as exc:
            raise _one_line(exc) from None
        except UserError as exc:
            for line in str(exc).splitlines() or [""]:
                click.echo(f"error: {line}", err=True)
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
    """A repeatable option that also takes the plain values of its kind after it.

    The reference layout `--annotations val_1.json val_2.json` and the
    repeated `--annotations val_1.json --annotations val_2.json` both work.
    After the first value only values of the option's kind are taken (names
    ending in `.json`; existing folders for a folder option such as view's
    --videos), so the command's own arguments after the list (`... b.json
    STORE`) stay its arguments instead of being swallowed into the list.
    """

    follow_suffixes = (".json",)

    def _takes(self, value: str) -> bool:
        from pathlib import Path

        if value.startswith("-"):
            return False
        if isinstance(self.type, click.Path) and not self.type.file_okay:
            return Path(value).is_dir()
        return value.lower().endswith(self.follow_suffixes)

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        parser_opt = parser._long_opt.get(self.opts[0]) or parser._short_opt.get(self.opts[0])
        take_one = parser_opt.process

        def take_following(value: Any, state: Any) -> None:
            take_one(value, state)
            while state.rargs and self._takes(state.rargs[0]):
                take_one(state.rargs.pop(0), state)

        parser_opt.process = take_following


class OutputFolder(click.ParamType):
    """A folder the command writes into: it may not exist yet, but must not be (or lie under) a file.

    Checked when the command line is parsed, so a wrong --out fails in one line
    before any work, instead of a FileExistsError after it.
    """

    name = "folder"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from pathlib import Path

        path = Path(value)
        for part in (path, *path.parents):
            if part.exists():
                if not part.is_dir():
                    what = "is a file" if part == path else f"lies under {part}, which is a file"
                    self.fail(f"{value} {what}; give a folder (it is created when missing)", param, ctx)
                break
        return str(value)


OUTPUT_FOLDER = OutputFolder()


def _overrides(values: tuple[str, ...], bare_store: bool) -> list[str]:
    """The `section.key=value` items; a bare value is an error unless it may name the store (extract)."""
    bare = [v for v in values if "=" not in v]
    if bare and not bare_store:
        raise UserError(f"-o {bare[0]}: an override must look like section.key=value "
                        f"(e.g. -o train.epochs=5); only `extract` takes a bare -o STORE")
    return [v for v in values if "=" in v]


def config_options(func: Callable | None = None, *, bare_store: bool = False) -> Callable:
    """--config FILE and repeatable -o section.key=value overrides, loaded into `cfg`.

    `bare_store=True` (extract only) lets one `-o` value without `=` through in
    `raw_overrides`: there it names the output store, as in the README recipes.
    """
    if func is None:
        return functools.partial(config_options, bare_store=bare_store)

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

        cfg = load_config(config_path, _overrides(overrides, bare_store))
        return func(*args, cfg=cfg, raw_overrides=overrides, **kwargs)

    return wrapper


def _flag_for(key: str) -> str:
    """The option of the running command that sets `key` (by its name), for messages."""
    ctx = click.get_current_context(silent=True)
    name = key.rpartition(".")[2]
    for param in ctx.command.params if ctx is not None else ():
        if param.name == name and param.opts:
            return next((o for o in param.opts if "_" not in o), param.opts[0])
    return "option"


def _set(cfg: dict, key: str, value: Any) -> None:
    """Apply a CLI flag to the config only when the user gave it (checked like -o key=value)."""
    if value is not None:
        from etspipe.config import set_value

        set_value(cfg, key, value, source=_flag_for(key))


DEVICE = click.Choice(["auto", "cpu", "cuda"])


def config_default(key: str) -> str:
    """`--help`'s default of an option that sets `key`: read from configs/ets.yaml, never copied into code."""
    from etspipe.config import reference_config

    section, _, name = key.partition(".")
    value = reference_config()[section][name]
    shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return f"{key} = {shown}"


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


DASK_LOGGERS = ("distributed", "tornado", "bokeh")  # a dask cluster's own chatter: shown with -v
QUIET_LOGGERS = ("numba", "matplotlib", "fsspec", "h5py", "PIL")  # warnings only, even with -v


def _under(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


class DaskLogFilter(logging.Filter):
    """Drops records of the dask loggers below `level` at the command's handler.

    Setting the logger level is not enough: `distributed` sets its own logger
    back to INFO when first imported, which `extract --workers` does after the
    logging is set up, so without this filter every scheduler and nanny line
    ("Closing scheduler. Reason: unknown") reached the terminal.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or not _under(record.name, DASK_LOGGERS)


def dask_log_level(verbose: int) -> int:
    """WARNING by default, INFO with -v, DEBUG with -vv.

    (`distributed` imported after the setup sets its own logger to INFO, so its
    DEBUG lines show with -vv only where it was imported before.)
    """
    return logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG


def setup_logging(verbose: int) -> logging.Handler:
    """The command's logging: one stderr handler (`CliFormatter`); libraries' chatter only when asked for.

    Our own INFO lines are the command's progress, so they show; -v adds DEBUG
    and the logger names. A dask cluster's INFO lines (workers starting, the
    scheduler closing) say nothing to someone extracting videos, so they show
    only with -v (`DaskLogFilter` keeps them out even after `distributed`
    resets its level on import). Returns the handler.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CliFormatter(debug=verbose > 0))
    dask_level = dask_log_level(verbose)
    handler.addFilter(DaskLogFilter(dask_level))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    for name in DASK_LOGGERS:
        logging.getLogger(name).setLevel(dask_level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def training_inputs(func: Callable) -> Callable:
    """--store and --train, the inputs every training command (captioner, proposals) reads."""
    func = click.option("--train", "train_paths", cls=ManyValuesOption, multiple=True, required=True,
                        type=click.Path(dir_okay=False),
                        help="Training annotations (ActivityNet Captions JSON), one or more.")(func)
    return click.option("--store", "store_path", required=True,
                        help="Feature store made by `extract` or `import-features`.")(func)
