"""A real LocalCluster of worker processes, one worker killed mid-run: the corpus still finishes."""

from __future__ import annotations

import textwrap

import videos

from etspipe.config import load_config
from extract_features import extract_corpus

# store.durable stays on: this is a fault test
CFG = load_config(None, ["extract.width_mult=0.0625", "extract.batch_size=4", "extract.decode_workers=1"])

# A dask worker preload: every run of a_kill's task ends its worker process (as a segfault or the
# OOM killer would) and leaves a line in `attempts`.
KILLER = textwrap.dedent("""
    import os
    import extract_features.distributed as distributed

    task = getattr(distributed.extract_video_task, "real_task", distributed.extract_video_task)

    def killing_task(video_id, *args, **kwargs):
        if video_id == "a_kill":
            with open(os.path.join(%r, "attempts"), "a") as f:
                f.write("killed\\n")
            os._exit(1)
        return task(video_id, *args, **kwargs)

    killing_task.real_task = task
    distributed.extract_video_task = killing_task
""")


def test_a_killed_worker_takes_down_only_its_own_video(tmp_path):
    """dask blames a worker's death on every task queued on it (with allowed-failures 0 at once):
    those videos are retried alone and extracted; the video that kills its worker again is failed."""
    import dask

    for vid in ("a_kill", "v_a", "v_b", "v_c"):  # a_kill first: it dies with a video queued behind it
        videos.write_video(tmp_path / f"{vid}.mp4", n_frames=16)
    preload = tmp_path / "killer.py"
    preload.write_text(KILLER % str(tmp_path))
    config = {"distributed.worker.preload": [str(preload)], "distributed.scheduler.allowed-failures": 0}
    with dask.config.set(config):
        summary = extract_corpus([str(tmp_path)], str(tmp_path / "s.zarr"), CFG, workers=2, progress=False)
    assert (tmp_path / "attempts").read_text().count("killed") == 2  # the first run and one retry alone
    assert summary["done"] == 3
    assert set(summary["failures"]) == {"a_kill"}
    assert "KilledWorker" in summary["failures"]["a_kill"]["detail"]
