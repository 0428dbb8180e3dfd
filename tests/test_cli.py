"""The CLI edge: help texts, version, and one-line errors with a non-zero status."""

import subprocess
import sys
from pathlib import Path

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


def test_import_npy_then_store_info(tmp_path):
    import numpy as np

    src = tmp_path / "npy"
    src.mkdir()
    for i in range(3):
        np.save(src / f"v_a{i}.npy", np.full((5 + i, 8), i, dtype=np.float32))
    store = str(tmp_path / "s.zarr")
    runner = CliRunner()
    result = runner.invoke(cli, ["import-features", "npy", str(src), store, "--fps", "30", "--stride", "8",
                                 "--clip-len", "16", "-o", "store.dtype=float32"])
    assert result.exit_code == 0, result.output
    info = runner.invoke(cli, ["store", "info", store, "--json"])
    assert info.exit_code == 0
    import json

    data = json.loads(info.output)
    assert data["videos_complete"] == 3 and data["rows_total"] == 5 + 6 + 7 and data["dim"] == 8
    missing_fps = runner.invoke(cli, ["import-features", "npy", str(src), store])
    assert missing_fps.exit_code == 1 and "needs --fps" in missing_fps.output


def test_many_values_option_takes_both_layouts():
    import click

    from pipeline import ManyValuesOption

    @click.command()
    @click.option("--annotations", cls=ManyValuesOption, multiple=True)
    @click.option("--store")
    def cmd(annotations, store):
        click.echo(f"{list(annotations)} {store}")

    runner = CliRunner()
    assert runner.invoke(cmd, ["--annotations", "a.json", "b.json", "--store", "s"]).output.strip() == \
        "['a.json', 'b.json'] s"
    assert runner.invoke(cmd, ["--annotations", "a.json", "--store", "s", "--annotations", "b.json"]).output.strip() \
        == "['a.json', 'b.json'] s"

    @click.command()
    @click.option("--annotations", cls=ManyValuesOption, multiple=True)
    @click.argument("store")
    def positional(annotations, store):
        click.echo(f"{list(annotations)} {store}")

    # the list stops at a name that is not a JSON file: the command's own argument stays its own
    assert runner.invoke(positional, ["--annotations", "a.json", "B.JSON", "data/s.zarr"]).output.strip() == \
        "['a.json', 'B.JSON'] data/s.zarr"


def test_many_values_option_of_folders_takes_existing_folders_only(tmp_path):
    import click

    from pipeline import ManyValuesOption

    @click.command()
    @click.argument("results")
    @click.option("--videos", cls=ManyValuesOption, multiple=True, type=click.Path(file_okay=False))
    def cmd(results, videos):
        click.echo(f"{[v.rsplit('/', 1)[-1] for v in videos]} {results}")

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    out = CliRunner().invoke(cmd, ["--videos", str(tmp_path / "a"), str(tmp_path / "b"), "res.json"]).output
    assert out.strip() == "['a', 'b'] res.json"


def _all_commands():
    """(path, command) of every command, subcommands of groups included."""
    import click

    todo = [(name, cmd) for name, cmd in cli.commands.items()]
    while todo:
        name, cmd = todo.pop(0)
        if isinstance(cmd, click.Group):
            todo.extend((f"{name} {sub}", c) for sub, c in cmd.commands.items())
        else:
            yield name, cmd


def test_every_command_and_option_has_help_and_every_command_an_example():
    missing = []
    for name, cmd in _all_commands():
        if "Example" not in (cmd.help or ""):
            missing.append(f"{name}: no example in its help")
        for param in cmd.params:
            if getattr(param, "param_type_name", "") == "option" and not param.hidden and not param.help:
                missing.append(f"{name} {param.opts[0]}: no help text")
    assert missing == []


def test_every_command_is_in_the_readme():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert [name for name, _ in _all_commands() if f"etspipe {name}" not in readme] == []


def test_help_shows_the_defaults_of_configs_ets_yaml():
    from etspipe.config import reference_config

    ref = reference_config()
    text = " ".join(CliRunner().invoke(cli, ["train", "--help"], terminal_width=200).output.split())
    assert f"train.epochs = {ref['train']['epochs']}" in text
    assert f"train.save_dir = {ref['train']['save_dir']}" in text
    assert "[default: 0]" in " ".join(CliRunner().invoke(cli, ["extract", "--help"], terminal_width=200).output.split())


def test_evaluate_scores_a_result_file_against_two_reference_files(tmp_path):
    import json

    ref1 = {"v_a": {"duration": 10.0, "timestamps": [[0, 5]], "sentences": ["a man is running"]}}
    ref2 = {"v_a": {"duration": 10.0, "timestamps": [[0, 5]], "sentences": ["a person runs"]}}
    res = {"version": "VERSION 1.0", "results": {"v_a": [{"timestamp": [0, 5], "sentence": "a man is running"}]},
           "external_data": {"used": False, "details": ""}}
    for name, doc in (("r1.json", ref1), ("r2.json", ref2), ("res.json", res)):
        (tmp_path / name).write_text(json.dumps(doc))
    result = CliRunner().invoke(cli, ["evaluate", "--results", str(tmp_path / "res.json"), "--annotations",
                                      str(tmp_path / "r1.json"), str(tmp_path / "r2.json"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    scores = json.loads(next((tmp_path / "out").glob("*_scores.json")).read_text())
    assert scores["reference_files"] == [str(tmp_path / "r1.json"), str(tmp_path / "r2.json")]
    # the protocol scores each (prediction, reference) pair on its own, one video's pairs as one corpus:
    # unigram matches 4/4 against r1 and 1/4 ("a") against r2, hypothesis 8 words >= references 7 -> no
    # brevity penalty: BLEU-1 = 5/8 at every tIoU threshold
    assert abs(scores["average"]["Bleu_1"] - 62.5) < 1e-4


def test_underscore_spellings_work_for_every_option_and_help_shows_dashes():
    """The reference implementation's `--save_dir` / `--batch_size` work on every command, or none would."""
    import click

    unknown, shown = [], []
    for name, cmd in _all_commands():
        for param in cmd.params:
            if not isinstance(param, click.Option):
                continue
            for opt in param.opts:
                if opt.startswith("--") and "_" in opt:
                    shown.append(f"{name} {opt}")
            long = next((o for o in param.opts if o.startswith("--") and "-" in o[2:]), None)
            if long is None:
                continue
            args = [long[:2] + long[2:].replace("-", "_")] + ([] if param.is_flag else ["x.json"])
            parent = click.Context(cli, info_name="etspipe", **cli.context_settings)  # the group's normaliser
            try:
                cmd.make_context(name, list(args), parent=parent, resilient_parsing=True)
            except click.UsageError as exc:
                unknown.append(f"{name} {args[0]}: {exc}")
    assert unknown == []
    assert shown == [], "help should show the dashed spellings only"


def test_import_features_follows_store_durable(tmp_path, monkeypatch):
    """`-o store.durable=false` skips the fsyncs on import as it does on extract; the default keeps them."""
    import os

    import numpy as np

    src = tmp_path / "npy"
    src.mkdir()
    for i in range(2):
        np.save(src / f"v_a{i}.npy", np.zeros((4, 8), dtype=np.float32))
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    def import_into(name: str, *extra: str) -> None:
        args = ["import-features", "npy", str(src), str(tmp_path / name), "--fps", "30", "--stride", "8", *extra]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output

    import_into("fast.zarr", "-o", "store.durable=false")
    assert synced == []
    import_into("durable.zarr")
    assert synced, "the default (store.durable: true) must fsync the commits"
