"""Every option issue 30 listed, driven through the `etspipe` command line and checked for what it does.

Parsing alone proves little (an option can parse and be dropped on the way to the library), so each case
runs the command in-process (click's CliRunner) on tiny inputs and looks at the outcome the option
changes: checkpoints, metrics, store contents, the page's data, the log. Runs are kept small (a 1/16-width
C3D, 2-step training epochs, a handful of generated frames); where the real work would take minutes (the
demo) or machines (a dask cluster of processes), the effect is checked at the function the option reaches,
through the CLI, with monkeypatching, as each case says.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import videos
from official_files import run_cli
from stage2_store import make_checkpoint
from test_train import make_corpus

from caption_model.runs.checkpoint import load_checkpoint
from etspipe.config import load_config
from features_store import open_store

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_MODEL = ["-o", "model.proj_dim=16", "-o", "model.embed_dim=16", "-o", "model.hidden_dim=16",
              "-o", "model.attn_dim=8", "-o", "model.dropout=0.0", "-o", "data.min_word_count=1",
              "-o", "data.val_fraction=0.2", "-o", "data.num_workers=0", "-o", "train.batch_size=8",
              "-o", "train.warmup_steps=10", "-o", "train.noam_factor=20.0", "-o", "train.val_meteor=false",
              "-o", "train.log_interval=1", "-o", "train.device=cpu"]
W = 0.0625  # a 1/16-width C3D: the same code paths, ~50x fewer FLOPs
SMALL_C3D = ["-o", f"extract.width_mult={W}", "-o", "extract.batch_size=4", "-o", "extract.decode_workers=1",
             "-o", "store.dtype=float32", "-o", "store.durable=false"]


@contextlib.contextmanager
def one_torch_thread():
    """conftest's `one_thread` for the module fixtures below (function fixtures cannot serve them)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ok(*args) -> object:
    result = run_cli(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def metrics(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    return [r for r in rows if r["kind"] == kind]


# ----------------------------------------------------------------------------- train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """6 videos x 3 captions: 1 video held out, 15 training segments = 2 steps of 8 per epoch; one base run."""
    root = tmp_path_factory.mktemp("train_cli")
    store, ann = make_corpus(root, n_videos=6, missing=0)
    base = root / "base"
    with one_torch_thread():
        ok("train", "--store", store, "--train", ann, "--save-dir", base, "--epochs", "1", *TINY_MODEL)
    return {"root": root, "store": store, "ann": ann, "base": base}


def train_cli(corpus: dict, *args) -> object:
    return run_cli("train", "--store", corpus["store"], "--train", corpus["ann"], *TINY_MODEL, *args)


def test_train_resume_continues_the_run_in_its_own_folder(corpus, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(corpus["base"], run)
    before = metrics(run, "train")
    result = train_cli(corpus, "--resume", run, "--epochs", "2", "--save-dir", tmp_path / "elsewhere")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "elsewhere").exists()  # a resumed run stays where it was
    ckpt = load_checkpoint(run / "last.pt")
    assert (ckpt["epoch"], ckpt["step"]) == (2, 4)
    after = metrics(run, "train")
    assert after[:2] == before and [int(r["step"]) for r in after] == [1, 2, 3, 4]  # epoch 1 kept, not redone


def test_train_overwrite_replaces_the_run_and_without_it_nothing_is_touched(corpus, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(corpus["base"], run)
    before = (run / "last.pt").read_bytes()
    refused = train_cli(corpus, "--save-dir", run, "--epochs", "1", "--seed", "3")
    assert refused.exit_code == 1 and "--overwrite" in refused.output
    assert (run / "last.pt").read_bytes() == before
    ok("train", "--store", corpus["store"], "--train", corpus["ann"], *TINY_MODEL, "--save-dir", run, "--epochs", "1",
       "--seed", "3", "--overwrite")
    assert (run / "last.pt").read_bytes() != before
    assert load_config(run / "config.yaml")["train"]["seed"] == 3
    assert [int(r["step"]) for r in metrics(run, "train")] == [1, 2]  # the new run's lines only


def test_train_weights_starts_from_the_checkpoint(corpus, tmp_path):
    """With a learning rate ~0 the fine-tuned weights stay those of --weights (a fresh start would not)."""
    tuned = tmp_path / "tuned"
    ok("train", "--store", corpus["store"], "--train", corpus["ann"], *TINY_MODEL, "--save-dir", tuned,
       "--epochs", "1", "--weights", corpus["base"] / "last.pt", "-o", "train.noam_factor=1.0e-9",
       "-o", "train.weight_decay=0.0")
    base, new = load_checkpoint(corpus["base"] / "last.pt"), load_checkpoint(tuned / "last.pt")
    assert new["vocab"] == base["vocab"] and new["step"] == 2  # a new run (its own steps) on the old weights
    for name, tensor in base["model"].items():
        torch.testing.assert_close(new["model"][name], tensor, atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("spelling", ["--seed", "--fix-random-seed"])
def test_train_seed_sets_initialisation_and_batching(corpus, tmp_path, spelling):
    ok("train", "--store", corpus["store"], "--train", corpus["ann"], *TINY_MODEL, "--save-dir", tmp_path / "a",
       "--epochs", "1", spelling, "5")
    seeded = load_checkpoint(tmp_path / "a" / "last.pt")
    base = load_checkpoint(corpus["base"] / "last.pt")  # the default seed (0)
    assert seeded["config"]["train"]["seed"] == 5
    assert any(not torch.equal(seeded["model"][k], v) for k, v in base["model"].items())
    if spelling == "--seed":
        return
    # both spellings are one option: the same seed gives the same run, bit for bit
    ok("train", "--store", corpus["store"], "--train", corpus["ann"], *TINY_MODEL, "--save-dir", tmp_path / "b",
       "--epochs", "1", "--seed", "5")
    again = load_checkpoint(tmp_path / "b" / "last.pt")
    assert all(torch.equal(again["model"][k], v) for k, v in seeded["model"].items())


def test_train_log_and_valid_intervals(corpus, tmp_path):
    """--log-interval 3 over 4 steps: one train line at step 3; --valid-interval 2: validation at epoch 2 only."""
    run = tmp_path / "run"
    ok("train", "--store", corpus["store"], "--train", corpus["ann"], *TINY_MODEL, "--save-dir", run,
       "--epochs", "2", "--log-interval", "3", "--valid-interval", "2")
    assert [int(r["step"]) for r in metrics(run, "train")] == [3]
    assert [int(r["epoch"]) for r in metrics(run, "val")] == [2]
    assert [int(r["epoch"]) for r in metrics(corpus["base"], "val")] == [1]  # the default: every epoch
    assert [int(r["step"]) for r in metrics(corpus["base"], "train")] == [1, 2]  # -o train.log_interval=1


# ----------------------------------------------------------------------------- train-proposals


def test_train_proposals_resume_continues_after_the_saved_epoch(tmp_path):
    from test_proposal_train import make_event_corpus

    store, ann = make_event_corpus(tmp_path, n_videos=8)
    run = tmp_path / "run"
    args = ["train-proposals", "--store", store, "--train", ann, "--device", "cpu", "-o", "proposals.anchors=4",
            "-o", "proposals.hidden_dim=16", "-o", "proposals.proj_dim=16", "-o", "data.num_workers=0"]
    ok(*args, "--save-dir", run, "--epochs", "1")
    first = (run / "proposals_metrics.csv").read_text().splitlines()
    result = ok(*args, "--resume", run, "--epochs", "2", "--save-dir", tmp_path / "elsewhere")
    assert "after epoch 1" in result.output and not (tmp_path / "elsewhere").exists()
    assert torch.load(run / "proposals_last.pt", weights_only=False)["epoch"] == 2
    lines = (run / "proposals_metrics.csv").read_text().splitlines()
    assert lines[: len(first)] == first and len(lines) == len(first) + 1  # epoch 1 kept, epoch 2 added


# ----------------------------------------------------------------------------- extract


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    """Two tiny videos (4 and 2 clips of 16 frames every 8) and their store from a plain `extract`."""
    folder = tmp_path_factory.mktemp("clips")
    videos.write_video(folder / "v_one.mp4", n_frames=40)
    videos.write_video(folder / "v_two.mp4", n_frames=24, size=(48, 64))
    plain = folder.parent / f"{folder.name}_plain.zarr"
    with one_torch_thread():
        ok("extract", folder, "-o", plain, *SMALL_C3D)
    return {"folder": folder, "plain": plain}


def rows_of(store: Path) -> dict[str, np.ndarray]:
    with open_store(str(store), "r") as st:
        return {vid: st.rows(vid) for vid in st.complete_ids()}


def store_meta(store: Path) -> dict:
    with open_store(str(store), "r") as st:
        return dict(st.meta)


def test_extract_layer_selects_the_output_layer(clips, tmp_path):
    from extract_features import feature_dim

    ok("extract", clips["folder"], "-o", tmp_path / "s.zarr", "--layer", "pool5", *SMALL_C3D)
    meta = store_meta(tmp_path / "s.zarr")
    assert meta["layer"] == "pool5" and meta["dim"] == feature_dim("pool5", W) != feature_dim("fc7", W)
    assert rows_of(tmp_path / "s.zarr")["v_one"].shape == (4, feature_dim("pool5", W))


def test_extract_weights_are_loaded_and_recorded(clips, tmp_path):
    """fc7 = relu(W x + b): weights whose fc7 layer is doubled (all else the untrained network's) give exactly
    twice the untrained rows, and the store records the file's checksum instead of "untrained"."""
    from extract_features import build_c3d
    from extract_features.weights import file_sha256

    state = build_c3d("fc7", W).state_dict()
    state["fc7.weight"], state["fc7.bias"] = state["fc7.weight"] * 2, state["fc7.bias"] * 2
    torch.save(state, tmp_path / "c3d.pth")
    ok("extract", clips["folder"], "-o", tmp_path / "s.zarr", "--weights", tmp_path / "c3d.pth", *SMALL_C3D)
    assert store_meta(tmp_path / "s.zarr")["weights"] == file_sha256(tmp_path / "c3d.pth")
    plain, weighted = rows_of(clips["plain"]), rows_of(tmp_path / "s.zarr")
    assert set(weighted) == set(plain) == {"v_one", "v_two"}
    for vid, rows in plain.items():
        assert rows.any()
        np.testing.assert_allclose(weighted[vid], 2 * rows, rtol=1e-5, atol=1e-6, err_msg=vid)


def test_extract_device_is_where_the_network_runs(clips, tmp_path, monkeypatch):
    """With a CUDA GPU reported present, `auto` would pick it: --device cpu must keep the network on the CPU."""
    import extract_features.runner as runner

    placed = []
    prepare = runner.prepare_extractor

    def recording(model, opts, device, weights_id):
        placed.append(torch.device(device).type)
        return prepare(model, opts, device, weights_id)

    monkeypatch.setattr(runner, "prepare_extractor", recording)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ok("extract", clips["folder"], "-o", tmp_path / "s.zarr", "--device", "cpu", *SMALL_C3D)
    assert placed == ["cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    refused = run_cli("extract", clips["folder"], "-o", tmp_path / "t.zarr", "--device", "cuda", *SMALL_C3D)
    assert refused.exit_code == 1 and "extract.device is cuda but no CUDA GPU" in refused.output


def test_extract_batch_size_is_the_networks_batch(clips, tmp_path, monkeypatch):
    from extract_features.runner import Extractor

    sizes = []
    forward = Extractor.forward

    def recording(self, clips_batch):
        sizes.append(int(clips_batch.shape[0]))
        return forward(self, clips_batch)

    monkeypatch.setattr(Extractor, "forward", recording)
    ok("extract", clips["folder"], "-o", tmp_path / "s.zarr", *SMALL_C3D, "--batch-size", "3")  # after -o 4
    assert sum(sizes) == 6 and max(sizes) == 3  # 4 + 2 clips in batches of at most 3, not 4


def test_extract_workers_start_a_local_dask_cluster_of_that_size(clips, tmp_path, monkeypatch):
    """The cluster is made in this process (processes=False) instead of N spawned processes: same tasks, less time."""
    import dask.distributed

    made = []
    real = dask.distributed.LocalCluster

    def in_process(**kwargs):
        made.append(kwargs["n_workers"])
        return real(**{**kwargs, "processes": False})

    monkeypatch.setattr(dask.distributed, "LocalCluster", in_process)
    ok("extract", clips["folder"], "-o", tmp_path / "s.zarr", "--workers", "2", *SMALL_C3D)
    assert made == [2]
    plain, dask_rows = rows_of(clips["plain"]), rows_of(tmp_path / "s.zarr")
    assert set(dask_rows) == set(plain)
    for vid, rows in plain.items():
        np.testing.assert_allclose(dask_rows[vid], rows, rtol=1e-4, atol=1e-5, err_msg=vid)


def test_extract_scheduler_sends_the_videos_to_that_cluster(clips, tmp_path):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        ok("extract", clips["folder"], "-o", tmp_path / "s.zarr", "--scheduler", cluster.scheduler_address,
           *SMALL_C3D)
        ran = sorted(cluster.scheduler.task_prefixes)  # the scheduler's record of what it ran
    assert ran == ["extract"]  # extract_video_task under the keys extract-<video id>
    assert set(rows_of(tmp_path / "s.zarr")) == {"v_one", "v_two"}


def test_extract_retry_failed_retries_recorded_failures(clips, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(clips["folder"] / "v_two.mp4", folder)
    videos.write_text_as_video(folder / "v_fixed.mp4")
    store = tmp_path / "s.zarr"
    assert run_cli("extract", folder, "-o", store, *SMALL_C3D).exit_code == 3  # v_fixed failed
    videos.write_video(folder / "v_fixed.mp4", n_frames=24)  # repaired
    assert run_cli("extract", folder, "-o", store, *SMALL_C3D).exit_code == 3  # remembered, not retried
    ok("extract", folder, "-o", store, "--retry-failed", *SMALL_C3D)
    assert set(rows_of(store)) == {"v_fixed", "v_two"}
    with open_store(str(store), "r") as st:
        assert st.failed() == {}


def test_extract_overwrite_starts_the_store_over(clips, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(clips["plain"], store)
    ok("extract", clips["folder"] / "v_two.mp4", "-o", store, *SMALL_C3D)
    assert set(rows_of(store)) == {"v_one", "v_two"}  # a rerun adds to the store
    ok("extract", clips["folder"] / "v_two.mp4", "-o", store, "--overwrite", *SMALL_C3D)
    assert set(rows_of(store)) == {"v_two"}


# ----------------------------------------------------------------------------- predict


def test_predict_plot_writes_one_attention_plot_per_caption(tmp_path):
    from stage2_store import make_store

    store = make_store(tmp_path / "s.zarr", {"v_a": 6.0, "v_b": 4.0})
    ckpt = make_checkpoint(tmp_path / "best.pt")
    (tmp_path / "list.txt").write_text("v_a 0 3\nv_a 2 5\nv_b 0 4\n")
    args = ["predict", "--filelist", tmp_path / "list.txt", "--weights", ckpt, "--store", store,
            "-o", "decode.max_len=4", "--device", "cpu"]
    ok(*args, "--out", tmp_path / "plain")
    ok(*args, "--out", tmp_path / "plotted", "--plot", tmp_path / "plots")
    assert not list((tmp_path / "plain").rglob("*.png"))
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert len(pngs) == 3 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_predict_mean_cube_extracts_raw_videos_with_the_cube(tmp_path):
    """A store made with `extract --mean-cube`: a raw video predicted with the same --mean-cube gets the rows
    `extract --mean-cube` gives it; without it the line fails and says to pass the cube."""
    from test_mean_cube import cube

    np.save(tmp_path / "cube.npy", cube())
    first, new = tmp_path / "v_first.mp4", tmp_path / "v_new.mp4"
    videos.write_video(first, n_frames=24, fps=8)
    videos.write_video(new, n_frames=32, fps=8, size=(48, 64))
    store, alone = tmp_path / "s.zarr", tmp_path / "alone.zarr"
    cubed = ["--mean-cube", tmp_path / "cube.npy"]
    ok("extract", first, "-o", store, *cubed, *SMALL_C3D)
    ok("extract", new, "-o", alone, *cubed, *SMALL_C3D)
    ckpt = make_checkpoint(tmp_path / "best.pt", feat_dim=store_meta(store)["dim"], store_meta=store_meta(store))
    args = ["predict", new, "--weights", ckpt, "--store", store, "-o", "decode.max_len=4", "--device", "cpu",
            *SMALL_C3D]
    without = run_cli(*args, "--out", tmp_path / "p0")
    assert without.exit_code == 3 and "pass --mean-cube FILE" in without.output
    ok(*args, "--out", tmp_path / "p1", *cubed)
    np.testing.assert_allclose(rows_of(store)["v_new"], rows_of(alone)["v_new"], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- view


def page_data(page: Path) -> tuple[str, dict]:
    text = page.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="etspipe-data">(.*?)</script>', text, re.S)
    return text, json.loads(m.group(1))


@pytest.fixture(scope="module")
def view_inputs(tmp_path_factory) -> dict:
    """A result file, and what each option brings: a store recording v_a's duration and source file,
    annotations, a scores file in a place the viewer would not look by itself."""
    d = tmp_path_factory.mktemp("view")
    (d / "res.json").write_text(json.dumps({"version": "VERSION 1.0", "external_data": {},
                                            "results": {"v_a": [{"timestamp": [1, 3], "sentence": "a man runs"}]}}))
    (d / "media").mkdir()
    (d / "media" / "source_a.mp4").write_bytes(b"not decoded by the viewer")
    with open_store(str(d / "s.zarr"), "w", meta={"extractor": "t", "dim": 2, "clip_len": 16, "stride": 8,
                                                   "dtype": "float32"}) as st:
        st.write_video("v_a", np.zeros((3, 2), np.float32),
                       {"fps": 30.0, "duration": 12.5, "source": str(d / "media" / "source_a.mp4")})
    (d / "ann.json").write_text(json.dumps({"v_a": {"timestamps": [[1, 3], [4, 6]],
                                                    "sentences": ["a man runs fast", "he stops"]}}))
    (d / "elsewhere").mkdir()
    (d / "elsewhere" / "scores.json").write_text(json.dumps({"average": {"METEOR": 7.5},
                                                              "per_tiou": {"0.3": {"METEOR": 7.5}}}))
    ok("view", d / "res.json", "-o", d / "plain.html")
    return {"dir": d, "plain": page_data(d / "plain.html")}


VIEW_CASES = {  # option -> (its arguments, a check of the page with it, against the page without it)
    "--store": (["--store", "{d}/s.zarr"],
                lambda text, data, plain: (data["videos"][0]["duration"], data["videos"][0]["src"]) == (
                    12.5, "media/source_a.mp4") and plain["videos"][0]["duration"] == 3.0
                and plain["videos"][0]["src"] is None),
    "--scores": (["--scores", "{d}/elsewhere/scores.json"],
                 lambda text, data, plain: data["metrics"]["rows"] == [["METEOR", 7.5, 7.5]]
                 and plain["metrics"] is None),
    "--title": (["--title", "Run <7>"],
                lambda text, data, plain: data["title"] == "Run <7>" and "<title>Run &lt;7&gt;</title>" in text
                and plain["title"] == "Captions: res.json"),
    "--annotations": (["--annotations", "{d}/ann.json"],
                      lambda text, data, plain: [r["s"] for r in data["videos"][0]["refs"]] == [
                          "a man runs fast", "he stops"] and data["videos"][0]["preds"][0]["tiou"] == 1.0
                      and not plain["videos"][0]["refs"]),
}


@pytest.mark.parametrize("option", list(VIEW_CASES))
def test_view_option_changes_the_page(view_inputs, option):
    d = view_inputs["dir"]
    args, check = VIEW_CASES[option]
    page = d / f"page{option}.html"
    ok("view", d / "res.json", "-o", page, *[a.format(d=d) for a in args])
    text, data = page_data(page)
    assert check(text, data, view_inputs["plain"][1]), json.dumps(data)[:1500]


# ----------------------------------------------------------------------------- the group: -v


def test_verbose_logs_debug_lines_with_their_logger(view_inputs):
    d = view_inputs["dir"]
    quiet = ok("view", d / "res.json", "-o", d / "q.html")
    loud = ok("-v", "view", d / "res.json", "-o", d / "v.html")
    debug_line = "[etspipe_view.build] wrote "  # a logger.debug line, shown with its logger's name under -v
    assert debug_line in loud.output and "wrote" in quiet.output and debug_line not in quiet.output


# ----------------------------------------------------------------------------- demo


def test_demo_generate_only_writes_the_data_set_and_nothing_else(tmp_path):
    data = tmp_path / "data"
    ok("demo", "--generate-only", data, "--videos", "6", "--out", tmp_path / "out")
    ids = sorted(p.stem for p in (data / "videos").glob("*.mp4"))
    assert len(ids) == 6
    splits = [json.loads((data / f"{split}.json").read_text()) for split in ("train", "val", "test")]
    annotated = sorted(v for split in splits for v in split)
    assert annotated == ids  # the three splits share the videos out, each once
    assert not (tmp_path / "out").exists()  # no feature store, training or results


class _StopAfterData(Exception):
    """Raised where the demo would start extracting: the test looks at what the data stage did."""


def test_demo_fresh_redoes_the_data_and_removes_earlier_outputs(tmp_path, monkeypatch):
    """Through the CLI up to the end of the data stage (the stages after it are replaced by a stop here, a
    whole demo takes minutes): a rerun reuses the generated data and keeps earlier outputs; --fresh removes
    the outputs of earlier runs and generates the data again."""
    import etspipe_demo.run as demo_run

    seen = []

    def stop(run, data, note):
        seen.append(data["reused"])
        raise _StopAfterData

    monkeypatch.setattr(demo_run, "_extract_stage", stop)
    out = tmp_path / "demo"
    args = ["demo", "--out", out, "--videos", "6"]
    assert isinstance(run_cli(*args).exception, _StopAfterData)
    earlier = [out / "features.zarr" / "zarr.json", out / "checkpoints" / "last.pt", out / "results" / "r.json",
               out / "attention_plots" / "a.png", out / "stages.json"]
    for path in earlier:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    assert isinstance(run_cli(*args).exception, _StopAfterData)
    assert all(p.exists() for p in earlier)
    assert isinstance(run_cli(*args, "--fresh").exception, _StopAfterData)
    assert seen == [False, True, False]  # generated, reused, generated again
    assert not any(p.exists() for p in earlier)
