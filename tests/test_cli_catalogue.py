"""The catalogue of user mistakes (issue 11): every row runs one mistake through the CLI.

Each row asserts what a new user is promised (README, "Errors and exit status"):
the documented exit status, no traceback, exactly one `error:` line that names
the thing at fault, and nothing written that the user did not ask for. A new
command or option adds its mistakes here. Rows whose fix belongs to another
branch are strict xfails naming it: they start passing when that work lands,
and strict makes the suite say so, so the mark is removed then.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import cli

TINY_MODEL = ["-o", "model.hidden_dim=8", "-o", "model.proj_dim=8", "-o", "model.embed_dim=8",
              "-o", "model.attn_dim=8", "-o", "data.num_workers=0", "-o", "train.val_meteor=false",
              "-o", "decode.max_len=4"]


@dataclass(frozen=True)
class Case:
    id: str
    args: str                        # split on spaces; {d} is the inputs folder, {ck} the trained run
    status: int | tuple[int, ...]    # the documented exit status (README, "Errors and exit status")
    names: str | None                # what the one error line must name (None: no error expected)
    writes: tuple[str, ...] = ()     # paths (relative to the working folder) the user asked for
    forbid: str | None = None        # words the error line must not hold (misleading advice)
    owner: str | None = None         # another branch fixes it: strict xfail until merged
    anywhere: bool = False           # a corpus run (status 3 allowed): names/forbid hold for all of stderr


TRAIN = "train --store {d}/s.zarr --train {d}/ann.json --save-dir ck"
EVAL = "evaluate --results {d}/res.json --annotations {d}/ann.json"

CASES = [
    # --- silent or wrong, exit 0 before
    Case("o-bare-key", TRAIN + " -o train.epochs", 1, "-o train.epochs"),
    Case("o-bare-folder", TRAIN + " -o ck_dir", 1, "-o ck_dir"),
    Case("o-bare-evaluate", EVAL + " -o out", 1, "-o out"),
    Case("o-two-stores-extract", "extract {d}/videos -o a.zarr -o b.zarr", 1, "a.zarr, b.zarr"),
    Case("epochs-negative", TRAIN + " -o train.epochs=-1", 1, "train.epochs=-1 is out of range (allowed: >= 1)"),
    Case("epochs-empty", TRAIN + " -o train.epochs=", 1, "train.epochs needs a value"),
    Case("hidden-dim-0", TRAIN + " -o model.hidden_dim=0", 1, "model.hidden_dim=0"),
    Case("val-fraction-1.5", TRAIN + " -o data.val_fraction=1.5", 1, "data.val_fraction=1.5"),
    Case("val-fraction-1", TRAIN + " -o data.val_fraction=1", 1, "data.val_fraction=1.0"),
    Case("batch-size-0", TRAIN + " -o train.batch_size=0", 1, "train.batch_size=0"),
    Case("batch-size-flag-0", TRAIN + " --batch-size 0", 1, "--batch-size: train.batch_size=0"),
    Case("warmup-0", TRAIN + " -o train.warmup_steps=0", 1, "train.warmup_steps=0"),
    Case("dropout-2", TRAIN + " -o model.dropout=2", 1, "model.dropout=2.0"),
    Case("dropout-1.5", TRAIN + " -o model.dropout=1.5", 1, "model.dropout=1.5"),
    Case("encoder-transformer", TRAIN + " -o model.encoder=transformer", 1,
         "model.encoder=transformer is not allowed (allowed: linear|bilstm)"),
    Case("beam-size-0", EVAL + " -o decode.beam_size=0", 1, "decode.beam_size=0"),
    Case("beam-size-flag-0", "predict --filelist {d}/fl.txt --weights {ck} --beam-size 0", 1,
         "--beam-size: decode.beam_size=0"),
    Case("tious-1.5", EVAL + " -o eval.tious=[1.5]", 1, "eval.tious=[1.5] holds 1.5"),
    Case("pca-dim-abc", "extract {d}/videos -o s.zarr -o extract.pca_dim=abc", 1, "extract.pca_dim=abc"),
    Case("config-file-value", TRAIN + " --config {d}/bad.yaml", 1, "bad.yaml: train.epochs=0"),
    Case("annotations-all-invalid", "train --store {d}/s.zarr --train {d}/negative.json --save-dir ck", 1,
         "negative.json: no valid caption segment left (the quirk rules dropped: outside 12)"),
    # --- tracebacks before
    Case("save-dir-is-file", "train --store {d}/s.zarr --train {d}/ann.json --save-dir {d}/afile", 2,
         "afile is a file"),
    Case("evaluate-out-is-file", EVAL + " --out {d}/afile", 2, "afile is a file"),
    Case("evaluate-save-dir-is-file", EVAL + " --save-dir {d}/afile", 2, "afile is a file"),
    Case("predict-out-is-file", "predict --filelist {d}/fl.txt --out {d}/afile", 2, "afile is a file"),
    Case("predict-plot-is-file", "predict --filelist {d}/fl.txt --plot {d}/afile", 2, "afile is a file"),
    Case("demo-out-is-file", "demo --out {d}/afile", 2, "afile is a file"),
    Case("demo-out-under-file", "demo --out {d}/afile/sub", 2, "afile/sub lies under"),
    # --- misleading words before
    Case("annotations-no-videos", "train --store {d}/s.zarr --train {d}/empty.json --save-dir ck", 1,
         "empty.json: the file has no videos"),
    Case("weights-not-a-checkpoint", "evaluate --store {d}/s.zarr --annotations {d}/ann.json --weights {d}/vocab.txt",
         1, "vocab.txt: not a checkpoint", forbid="weights_only"),
    Case("annotations-then-store", "import-features activitynet-c3d {d}/anet.h5 --annotations {d}/ann.json "
         "{d}/ann2.json new.zarr", 0, None, writes=("new.zarr",)),
    Case("annotations-no-store", "import-features activitynet-c3d {d}/anet.h5 --annotations {d}/ann.json "
         "{d}/ann2.json", 2, "STORE_PATH"),
    Case("store-wording", "evaluate --store {d}/nope.zarr --annotations {d}/ann.json --weights {ck}", 1,
         "no feature store at {d}/nope.zarr"),
    Case("proposals-not-a-proposal-file", "evaluate --proposals {d}/res.json --annotations {d}/ann.json", 1,
         "{d}/res.json: not a valid ActivityNet proposal file"),
    Case("proposals-with-store", "evaluate --proposals {d}/res.json --annotations {d}/ann.json --store {d}/s.zarr", 1,
         "drop --store"),
    Case("subset-without-proposals", EVAL + " --subset training", 1, "--subset goes with --proposals"),
    Case("dim-mismatch-no-overwrite-advice", "import-features npy {d}/npy64 {d}/dim.zarr --fps 30", 1, "dim.zarr",
         forbid="overwrite it"),
    Case("list-of-missing-video", "extract {d}/missing.txt -o pc.zarr --pca 4", (1, 3), "missing1.mp4",
         forbid="PCA needs", writes=("pc.zarr", "pc.zarr.raw.zarr"), anywhere=True),
    # --- projections and mean cubes (issue 21)
    Case("pca-file-foreign", "extract {d}/missing.txt -o pf.zarr --pca-file {d}/vocab.txt", 1,
         "vocab.txt: not a PCA file"),
    Case("mean-cube-not-npy", "extract {d}/missing.txt -o mc.zarr --mean-cube {d}/afile", 1,
         "afile: not a .npy mean cube"),
    Case("set-projection-not-hdf5", "store set-projection {d}/s.zarr {d}/vocab.txt", 1,
         "vocab.txt: not a readable HDF5 file"),
    Case("import-pca-file-other-kind", "import-features npy {d}/npy pi.zarr --fps 30 --pca-file {d}/vocab.txt", 1,
         "--pca-file is for activitynet-c3d imports"),
    # --- the command line itself (exit 2, README)
    Case("unknown-command", "trian", 2, "'trian'"),
    Case("unknown-option", TRAIN + " --bogus", 2, "--bogus"),
    Case("missing-option", "train --train {d}/ann.json", 2, "--store"),
    Case("bad-choice", TRAIN + " --device gpu", 2, "'gpu'"),
]


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Small real inputs: a 16-d store of 6 videos, annotation files good and bad, a result file."""
    import h5py

    from features_store.importers import import_npy_folder

    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    (d / "npy").mkdir()
    (d / "npy64").mkdir()
    ann = {}
    for i in range(6):
        np.save(d / "npy" / f"v_a{i}.npy", rng.random((20, 16), dtype=np.float32))
        ann[f"v_a{i}"] = {"duration": 20 * 8 / 30, "timestamps": [[0, 2], [1, 4]],
                          "sentences": ["a man runs fast", "a dog sits down"]}
    np.save(d / "npy64" / "v_z.npy", rng.random((5, 64), dtype=np.float32))
    import_npy_folder(d / "npy", d / "s.zarr", fps=30, stride=8, clip_len=16, dtype="float32")
    import_npy_folder(d / "npy", d / "dim.zarr", fps=30, stride=8, clip_len=16, dtype="float32")
    _write(d / "ann.json", ann)
    _write(d / "ann2.json", ann)
    _write(d / "negative.json", {v: {**e, "timestamps": [[-3, -1], [-2, -0.5]]} for v, e in ann.items()})
    _write(d / "empty.json", {})
    _write(d / "res.json", {"version": "VERSION 1.0", "external_data": {"used": False, "details": ""},
                            "results": {"v_a0": [{"timestamp": [0, 2], "sentence": "a man runs"}]}})
    with h5py.File(d / "anet.h5", "w") as f:
        for i in range(2):
            f.create_group(f"v_a{i}").create_dataset("c3d_features", data=rng.random((20, 16), dtype=np.float32))
    (d / "bad.yaml").write_text("train:\n  epochs: 0\n")
    (d / "vocab.txt").write_text("a\nman\n")
    (d / "afile").write_text("not a folder\n")
    (d / "fl.txt").write_text("v_a0 0 2\n")
    (d / "missing.txt").write_text(f"{d / 'missing1.mp4'}\n")
    (d / "videos").mkdir()
    return d


@pytest.fixture(scope="module")
def trained(inputs, tmp_path_factory):
    """One tiny training run through the CLI (its output is checked by the quiet-run test)."""
    import torch

    save_dir = tmp_path_factory.mktemp("run") / "ck"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks run fastest on one thread of a busy machine
    result = CliRunner().invoke(cli, ["train", "--store", str(inputs / "s.zarr"), "--train", str(inputs / "ann.json"),
                                      "--save-dir", str(save_dir), "-o", "train.max_steps=1", "-o", "train.epochs=1",
                                      *TINY_MODEL])
    torch.set_num_threads(threads)
    return result, save_dir


def _snapshot(*roots: Path) -> dict[str, int]:
    """Every file under `roots` with its size and mtime: what a command added or changed."""
    out = {}
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                st = (Path(dirpath) / name).stat()
                out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=f"fixed by {case.owner}")] if case.owner else []
        yield pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", list(_params()))
def test_mistake_gives_one_clear_line(case: Case, inputs: Path, trained, tmp_path: Path, monkeypatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    args = case.args.format(d=inputs, ck=trained[1]).split()
    before = _snapshot(inputs, cwd)
    result = CliRunner().invoke(cli, args)
    stderr = result.stderr
    allowed = (case.status,) if isinstance(case.status, int) else case.status
    assert result.exit_code in allowed, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    if case.names is None:
        assert errors == [], stderr
    elif case.anywhere:
        assert len(errors) <= 1, stderr
        assert case.names.format(d=inputs) in stderr and (not case.forbid or case.forbid not in stderr), stderr
    else:
        assert len(errors) == 1, stderr
        assert case.names.format(d=inputs) in errors[0], errors[0]
        if case.forbid:
            assert case.forbid not in errors[0]
    written = set(_snapshot(inputs, cwd).items()) - set(before.items())
    asked = [str(cwd / w) for w in case.writes]
    unasked = sorted(p for p, _ in written if not any(p == a or p.startswith(a + os.sep) for a in asked))
    assert unasked == [], f"written without being asked: {unasked}"
    for path in asked if case.status == 0 else ():
        assert Path(path).exists(), f"{path} was asked for and not written"


def test_a_redirected_run_draws_no_progress_bars_and_prints_its_summary_once(trained):
    result, save_dir = trained
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output and "it/s" not in result.output  # no tqdm frames off a terminal
    summary = [line for line in result.output.splitlines() if str(save_dir / "last.pt") in line
               or str(save_dir / "best.pt") in line]
    assert len(summary) == 1, result.output


def test_import_prints_its_summary_once(inputs, tmp_path):
    result = CliRunner().invoke(cli, ["import-features", "npy", str(inputs / "npy"), str(tmp_path / "i.zarr"),
                                      "--fps", "30"])
    assert result.exit_code == 0, result.output
    assert sum("imported" in line for line in result.output.splitlines()) == 1, result.output


def test_predict_prints_its_summary_once(inputs, trained, tmp_path):
    result = CliRunner().invoke(cli, ["predict", "--filelist", str(inputs / "fl.txt"), "--weights", str(trained[1]),
                                      "--store", str(inputs / "s.zarr"), "--out", str(tmp_path / "p"), *TINY_MODEL])
    assert result.exit_code == 0, result.output
    assert sum("caption" in line and "v_a0" not in line for line in result.output.splitlines()) == 1, result.output


@pytest.mark.parametrize("args, line", [
    (TRAIN + " -o train.epochs=-1", "error: -o: train.epochs=-1 is out of range (allowed: >= 1)"),
    (TRAIN + " --bogus", "error: No such option '--bogus'. (see 'etspipe train --help')"),
])
def test_readme_error_examples_are_what_the_cli_prints(args, line, inputs, tmp_path, monkeypatch):
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"`{line}`" in readme
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args.format(d=inputs).split(), prog_name="etspipe")
    assert result.stderr.strip() == line
