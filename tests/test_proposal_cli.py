"""`etspipe train-proposals` through the CLI, proposal evaluation (AR@AN + PNG), and DDP with two CPU ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from test_proposal_train import make_event_corpus, tiny_cfg

from caption_model.proposals.evaluate import evaluate_proposals, format_figures
from caption_model.proposals.infer import BEST, LAST
from pipeline import cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_proposals_command_writes_into_the_run_folder(tmp_path):
    store, ann = make_event_corpus(tmp_path, n_videos=8)
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"captioner")  # the captioner's files stay untouched
    result = CliRunner().invoke(cli, ["train-proposals", "--store", str(store), "--train", str(ann),
                                      "--save_dir", str(run), "--epochs", "1", "--device", "cpu",
                                      "-o", "proposals.anchors=4", "-o", "data.num_workers=0"])
    assert result.exit_code == 0, result.output
    assert f"best proposal checkpoint: {run / BEST}" in result.output
    assert (run / LAST).is_file() and (run / "best.pt").read_bytes() == b"captioner"


def test_train_proposals_user_errors_are_one_line(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"v_a": {"duration": 9.0, "timestamps": [[1, 4]],
                                                          "sentences": ["a man runs"]}}))
    result = CliRunner().invoke(cli, ["train-proposals", "--store", str(tmp_path / "nope.zarr"),
                                      "--train", str(tmp_path / "a.json"), "--save_dir", str(tmp_path / "run")])
    errors = [line for line in result.output.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert result.exit_code == 1 and errors == [f"error: no feature store at {tmp_path / 'nope.zarr'}"]
    result = CliRunner().invoke(cli, ["train-proposals", "--store", "s.zarr", "--train", "a.json",
                                      "-o", "proposals.anchor=3"])
    assert result.exit_code == 1 and "proposals.anchors" in result.output
    assert "train-proposals" in CliRunner().invoke(cli, ["--help"]).output


def test_evaluate_proposals_writes_file_png_and_counts_a_missing_video_as_missed(tmp_path):
    store, ann = make_event_corpus(tmp_path, n_videos=8)
    cfg = tiny_cfg(tmp_path / "run", epochs=2)
    from caption_model.proposals.train import train_proposals

    run = train_proposals(cfg, str(store), [str(ann)], progress=False)
    data = json.loads(ann.read_text())
    data["v_absent"] = {"duration": 5.0, "timestamps": [[1.0, 2.0]], "sentences": ["x"]}
    ann.write_text(json.dumps(data))
    figures = evaluate_proposals(cfg, run.best_path, str(store), [str(ann)], tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "proposals.json").read_text())
    assert set(doc["results"]) == set(data) - {"v_absent"} and figures["missing"] == {"v_absent": "missing from store"}
    assert (tmp_path / "out" / "proposals_ar_an.png").read_bytes()[:4] == b"\x89PNG"
    assert 0 <= figures["AR@10"] <= figures["AR@100"] <= 1 and "AR@10" in format_figures(figures)


DRIVER = """
import json, sys
import torch
torch.set_num_threads(1)
from caption_model.proposals.train import train_proposals
cfg, store, ann, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
run = train_proposals(cfg, store, [ann], progress=False)
torch.save({"model": run.net.state_dict(), "loss": [h["loss"] for h in run.history]}, out)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_ranks_train_identical_weights(tmp_path):
    store, ann = make_event_corpus(tmp_path, n_videos=12)
    cfg = tiny_cfg(tmp_path / "run", epochs=2)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    port, procs = _free_port(), []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(driver), json.dumps(cfg), str(store), str(ann),
                                       str(tmp_path / f"rank{rank}.pt")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for name, tensor in r0["model"].items():
        assert torch.equal(tensor, r1["model"][name]), name
    assert r0["loss"] != r1["loss"]  # each rank trained on its own share of the videos
    assert (tmp_path / "run" / LAST).is_file()
