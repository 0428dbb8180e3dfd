"""A real LocalCluster of worker processes, one worker killed mid-run: the corpus still finishes."""

from __future__ import annotations

import textwrap

import videos

from extract_features import extract_corpus

W = 0.0625
CFG = {"extract": {"width_mult": W, "batch_size": 4, "decode_workers": 1}, "store": {"dtype": "float32"}}

# A dask worker preload: the first task of v_kill ends its worker process (as a segfault or the OOM
# killer would); dask retries it on a fresh worker, or, once it gives up, the client records it as
# that video's failure (KilledWorker) and the run goes on.
KILLER = textwrap.dedent("""
    import os
    import extract_features.distributed as distributed

    task = getattr(distributed.extract_video_task, "real_task", distributed.extract_video_task)

    def killing_task(video_id, *args, **kwargs):
        mark = os.path.join(%r, "killed")
        if video_id == "v_kill" and not os.path.exists(mark):
            open(mark, "w").close()
            os._exit(1)
        return task(video_id, *args, **kwargs)

    killing_task.real_task = task
    distributed.extract_video_task = killing_task
""")


def test_a_killed_worker_fails_or_retries_only_its_video(tmp_path):
    import dask

    for vid, n in (("v_a", 24), ("v_kill", 24), ("v_b", 16)):
        videos.write_video(tmp_path / f"{vid}.mp4", n_frames=n)
    videos.write_audio_only(tmp_path / "v_audio.mp4")
    preload = tmp_path / "killer.py"
    preload.write_text(KILLER % str(tmp_path))
    with dask.config.set({"distributed.worker.preload": [str(preload)]}):
        summary = extract_corpus([str(tmp_path)], str(tmp_path / "s.zarr"), CFG, workers=2, progress=False)
    assert (tmp_path / "killed").exists()  # a worker really died inside the task
    failures = summary["failures"]
    assert summary["done"] + summary["failed"] == 4
    assert failures["v_audio"]["reason"] == "no_video_stream"
    assert {"v_a", "v_b"}.isdisjoint(failures)  # the other videos are not taken down with it
    assert "v_kill" not in failures or "KilledWorker" in failures["v_kill"]["detail"]
