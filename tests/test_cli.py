"""The CLI edge: help texts, version, and one-line errors with a non-zero status."""

import subprocess
import sys

from click.testing import CliRunner

from etspipe import __version__
from pipeline import cli

COMMANDS = ["extract", "train", "evaluate", "predict", "demo", "store", "import-features"]


def test_help_lists_every_command_with_one_line():
    out = CliRunner().invoke(cli, ["--help"]).output
    for name in COMMANDS:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name + " "))
        assert len(line.split(None, 1)[1]) > 10


def test_each_command_has_help():
    for name in COMMANDS:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Usage:" in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_unknown_override_is_one_line_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "train", "--store", "x.zarr", "--train", "t.json",
         "-o", "train.batchsize=3"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: -o: unknown config key 'train.batchsize' (did you mean 'train.batch_size'?)"]


def test_extract_without_store_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["extract", str(tmp_path)])
    assert result.exit_code == 1
    assert "no output store" in result.output
