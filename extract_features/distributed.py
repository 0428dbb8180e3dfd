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
from extract_features.corpus import record_failure
from extract_features.options import ExtractOptions
from extract_features.pca import IncrementalPCA
from extract_features.runner import Extractor, make_extractor, one_line, run_pipeline

log = logging.getLogger(__name__)

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
        with open_store(store_path, "a") as store:
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
    """Extract `todo` on a dask cluster; failures are recorded in `store` by this client. Returns done."""
    if not todo:
        return 0
    from dask.distributed import as_completed

    client, cluster = _client(workers, scheduler)
    torch_threads = max(1, (os.cpu_count() or 1) // max(1, workers)) if cluster is not None else 0
    weights = str(Path(weights).resolve()) if weights else None
    done = 0
    try:
        shared_pca = client.scatter(pca, broadcast=True) if pca is not None else None  # sent once, not per task
        futures = {client.submit(extract_video_task, vid, str(Path(p).resolve()), store_path, opts, weights,
                                 shared_pca, torch_threads, key=f"extract-{vid}", pure=False): (vid, p)
                   for vid, p in todo}
        with progress_bar(total=len(futures), unit="video", desc="extract (dask)", enabled=progress) as bar:
            for future in as_completed(futures):
                res = _task_result(future, *futures[future])
                if res["status"] == "done":
                    done += 1
                else:
                    log.warning("%s failed: %s %s", res["video_id"], res["reason"], res["detail"])
                    record_failure(store, res["video_id"], res["reason"], res["detail"], res.get("source", ""))
                bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return done


def _task_result(future, video_id: str, path: Path) -> dict:
    """The task's own result; an error the task raised, or its worker dying (KilledWorker once dask
    gave up retrying it), is that video's failure."""
    try:
        return future.result()
    except Exception as exc:
        return {"video_id": video_id, "status": "failed", "reason": "other", "source": str(path),
                "detail": f"the dask task failed: {one_line(exc)}"}
