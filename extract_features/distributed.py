"""Many machines: one dask.distributed task per video, each worker writing its own entry.

The client plans (skip complete, retry failed), submits one task per video and
gathers results as they finish, with a progress bar. A worker keeps one
network per process (built on its first task) and writes the rows of its video
straight into the shared Zarr store with the store's atomic commit; a worker
that dies mid-video leaves an incomplete entry that the next run redoes. Only
the client records failures, so the failure list has a single writer.

`workers=N` starts a LocalCluster of N single-threaded worker processes (the
torch threads of the machine are shared out among them); `scheduler=ADDRESS`
uses an existing cluster whose workers can import etspipe and reach the store.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import torch

from etspipe.errors import UserError
from etspipe.progress import progress_bar
from extract_features.options import ExtractOptions
from extract_features.pca import IncrementalPCA
from extract_features.runner import Extractor, make_extractor, one_line, record_failure, run_pipeline

log = logging.getLogger(__name__)

LOST_WORKER_TIMEOUT = "300s"
_MODELS: dict[tuple, Extractor] = {}
_MODELS_LOCK = threading.Lock()


def _worker_extractor(opts: ExtractOptions, weights: str | None, torch_threads: int) -> Extractor:
    """One network per worker process, shared by its threads (inference only)."""
    key = (opts, weights)
    with _MODELS_LOCK:
        if key not in _MODELS:
            if torch_threads:
                torch.set_num_threads(torch_threads)
            _MODELS[key] = make_extractor(opts, weights)
        return _MODELS[key]


def extract_video_task(video_id: str, path: str, store_path: str, opts: ExtractOptions,
                       weights: str | None, pca: IncrementalPCA | None, torch_threads: int = 0) -> dict:
    """Run on a dask worker: extract one video and commit it to the store; returns its status."""
    from features_store import open_store

    extractor = _worker_extractor(opts, weights, torch_threads)
    result: dict = {"video_id": video_id, "status": "failed", "reason": "", "detail": ""}

    def on_done(vid: str, rows: np.ndarray, meta: dict) -> None:
        if pca is not None:
            rows, meta = pca.project(rows, meta)
        with open_store(store_path, "a", durable=opts.store_durable) as store:
            store.write_video(vid, rows, meta)
        result.update(status="done", n_rows=len(rows))

    def on_failed(vid: str, reason: str, detail: str) -> None:
        result.update(status="failed", reason=reason, detail=detail, source=path)

    run_pipeline([(video_id, Path(path))], extractor, on_done, on_failed, progress=False, decode_workers=1)
    return result


def _client(workers: int, scheduler: str | None):
    import dask
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise UserError(f"cannot reach the dask scheduler at {scheduler} ({exc})") from None
    # One task per worker at a time: dask counts a worker's death against every task queued on it,
    # so with deeper queues one video that kills its worker would take innocent videos down too.
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.WARNING)
    return Client(cluster), cluster


def run_distributed(todo: list[tuple[str, Path]], store, store_path: str, opts: ExtractOptions,
                    weights: str | None, pca: IncrementalPCA | None, workers: int, scheduler: str | None,
                    progress: bool = True) -> int:
    """Extract `todo` on a dask cluster; failures are recorded in `store` by this client. Returns done.

    A worker that dies takes down, in dask's eyes, every task queued on it
    (`KilledWorker` once dask's allowed failures are used up), not only the
    video that killed it. So each video dask gave up on that way is retried
    once as a task of its own, with nothing else in flight: if its worker
    dies again, the video itself is the cause and it is recorded as failed.
    """
    if not todo:
        return 0
    import dask

    # A LocalCluster closes a worker whose process is not back this long after it died; a restart
    # (python, torch, the preloads) can take longer than dask's 15 s on a busy machine, which would
    # leave the corpus with no workers at all.
    with dask.config.set({"distributed.deploy.lost-worker-timeout": LOST_WORKER_TIMEOUT}):
        return _run_on_cluster(todo, store, store_path, opts, weights, pca, workers, scheduler, progress)


def _run_on_cluster(todo, store, store_path: str, opts: ExtractOptions, weights: str | None,
                    pca: IncrementalPCA | None, workers: int, scheduler: str | None, progress: bool) -> int:
    from dask.distributed import as_completed

    client, cluster = _client(workers, scheduler)
    torch_threads = max(1, (os.cpu_count() or 1) // max(1, workers)) if cluster is not None else 0
    weights = str(Path(weights).resolve()) if weights else None
    done = 0
    try:
        shared_pca = client.scatter(pca, broadcast=True) if pca is not None else None  # sent once, not per task

        def submit(vid: str, path: Path, key: str):
            return client.submit(extract_video_task, vid, str(Path(path).resolve()), store_path, opts, weights,
                                 shared_pca, torch_threads, key=key, pure=False)

        futures = {submit(vid, p, f"extract-{vid}"): (vid, p) for vid, p in todo}
        killed: list[tuple[str, Path]] = []
        with progress_bar(total=len(futures), unit="video", desc="extract (dask)", enabled=progress) as bar:
            for future in as_completed(list(futures)):
                # let go of a finished task: a result still referenced is recomputed when its worker dies
                vid, path = futures.pop(future)
                res = _task_result(future, vid, path)
                del future
                if res is None:
                    log.warning("%s: its worker died (perhaps for another video); retrying it alone", vid)
                    killed.append((vid, path))
                    continue
                done += _record(store, res)
                bar.update(1)
            for vid, path in killed:  # one at a time: a death now is this video's own
                res = _task_result(submit(vid, path, f"extract-{vid}-retry"), vid, path, retried=True)
                done += _record(store, res)
                bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return done


def _record(store, res: dict) -> int:
    """Record a failed task's video in the store; 1 for a video done, 0 for a failure."""
    if res["status"] == "done":
        return 1
    log.warning("%s failed: %s %s", res["video_id"], res["reason"], res["detail"])
    record_failure(store, res["video_id"], res["reason"], res["detail"], res.get("source", ""))
    return 0


def _task_result(future, video_id: str, path: Path, retried: bool = False) -> dict | None:
    """The task's own result; an error the task raised is that video's failure. A dead worker
    (KilledWorker) gives None the first time (retry it), a failure once `retried`."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as exc:
        if not retried:
            return None
        detail = f"its dask worker died running it, also when retried alone: {one_line(exc)}"
    except Exception as exc:
        detail = f"the dask task failed: {one_line(exc)}"
    return {"video_id": video_id, "status": "failed", "reason": "other", "source": str(path), "detail": detail}
