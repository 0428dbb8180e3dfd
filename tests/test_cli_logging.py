"""The command's log: a dask cluster's own lines (scheduler, nanny, worker INFO) only with -v.

`extract --workers N` starts a LocalCluster, and `distributed` sets its logger
back to INFO when first imported, after the CLI has set its logging up; so
the check is made once for real (a 2-worker extract in a fresh process, as a
user runs it) and once in-process at the group's own setup, with that import
reset reproduced, for -v and without.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import videos

from pipeline import cli

ROOT = Path(__file__).resolve().parent.parent
ETSPIPE = Path(sys.executable).parent / "etspipe"
CLOSING = "Closing scheduler. Reason: unknown"
DASK_LOGGERS = ("distributed", "tornado", "bokeh")  # etspipe_cli.common.DASK_LOGGERS


@pytest.fixture
def restore_logging():
    """The group's setup replaces the root handler and logger levels: give the other tests theirs back."""
    root = logging.getLogger()
    names = (*DASK_LOGGERS, "numba", "matplotlib", "fsspec", "h5py", "PIL", "distributed.scheduler")
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in names}
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def _log_after_setup(verbose: int, imported_after_setup: bool) -> None:
    """The group's callback (what `etspipe [-v] COMMAND` runs first), then what an extract with workers logs.

    `imported_after_setup`: `distributed` is first imported by the command (as in
    `etspipe extract --workers`), which sets its logger back to INFO; otherwise it
    was imported before (a test session, a Python caller) and keeps the setup's level.
    """
    cli.callback(verbose=verbose)
    if imported_after_setup:
        logging.getLogger("distributed").setLevel(logging.INFO)  # what `import distributed` does
    logging.getLogger("distributed.scheduler").info(CLOSING)
    logging.getLogger("distributed.core").warning("a dask warning")
    logging.getLogger("extract_features.corpus").info("extract: 1 done")


@pytest.mark.parametrize("imported_after_setup", [True, False])
@pytest.mark.usefixtures("restore_logging")
def test_dask_info_lines_stay_out_without_verbose(capsys, imported_after_setup):
    _log_after_setup(verbose=0, imported_after_setup=imported_after_setup)
    err = capsys.readouterr().err
    assert CLOSING not in err
    assert "warning: a dask warning" in err and "extract: 1 done" in err  # warnings and our progress still show


@pytest.mark.parametrize("imported_after_setup", [True, False])
@pytest.mark.usefixtures("restore_logging")
def test_dask_info_lines_show_with_verbose(capsys, imported_after_setup):
    _log_after_setup(verbose=1, imported_after_setup=imported_after_setup)
    err = capsys.readouterr().err
    assert f"[distributed.scheduler] {CLOSING}" in err and "[extract_features.corpus] extract: 1 done" in err


@pytest.mark.usefixtures("restore_logging")
def test_setup_sets_the_dask_logger_levels():
    cli.callback(verbose=0)
    assert {n: logging.getLogger(n).level for n in DASK_LOGGERS} == dict.fromkeys(DASK_LOGGERS, logging.WARNING)
    cli.callback(verbose=1)
    assert {n: logging.getLogger(n).level for n in DASK_LOGGERS} == dict.fromkeys(DASK_LOGGERS, logging.INFO)
    assert logging.getLogger("numba").level == logging.WARNING  # other libraries stay quiet with -v


def test_extract_with_two_workers_prints_no_dask_lines(tmp_path):
    """A real 2-process LocalCluster in a fresh `etspipe` process (~6 s): only our own lines come out."""
    folder = tmp_path / "in"
    folder.mkdir()
    videos.write_video(folder / "v_one.mp4", n_frames=24)
    command = [str(ETSPIPE)] if ETSPIPE.exists() else [sys.executable, "-m", "pipeline"]
    proc = subprocess.run([*command, "extract", str(folder), "-o", str(tmp_path / "s.zarr"), "--workers", "2",
                           "-o", "extract.width_mult=0.0625", "-o", "extract.batch_size=4",
                           "-o", "extract.decode_workers=1", "-o", "store.durable=false"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "extract: 1 done" in out
    for dask_line in (CLOSING, "Start Nanny", "Register worker", "Scheduler at"):
        assert dask_line not in out, out
