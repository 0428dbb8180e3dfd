"""The extraction runner: videos in, one committed store entry per video out.

Decoding runs ahead in a pool of threads (decord and PyAV release the GIL while
they decode and scale), each thread streaming one video's clips into a bounded
queue; the main thread takes clips from any video into full batches, runs C3D
and scatters the rows back to their videos. A video is written (one atomic
commit) as soon as its last row is in, so a kill loses at most the videos in
flight, and a rerun redoes only those. The bounded queue is what keeps memory
flat: only the clips in flight exist, whatever the video's length.

Bad inputs are typed failures (`video_reader.VideoReadError.reason`) recorded
in the store; the run goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from etspipe.errors import UserError
from etspipe.progress import progress_bar
from extract_features.c3d import C3D, C3DInput, build_c3d
from extract_features.clips import ClipStream, frame_positions
from extract_features.inputs import file_fingerprint
from extract_features.options import ExtractOptions
from extract_features.pca import IncrementalPCA
from extract_features.video_reader import DECODE_ERROR, HAVE_DECORD, VideoReadError, open_video
from extract_features.weights import UNTRAINED, load_c3d_weights, warn_untrained

log = logging.getLogger(__name__)

if HAVE_DECORD:
    from decord import DECORDError as _DecordError
else:  # pragma: no cover
    class _DecordError(Exception):
        pass

# What a decoder thread may raise on a broken file (everything else is a bug and propagates).
_DECODE_FAILURES = (av.error.FFmpegError, _DecordError, OSError, EOFError)


@dataclass
class Extractor:
    """A network ready to run: model on its device, input transform, weights id."""

    model: C3D
    transform: C3DInput
    device: torch.device
    opts: ExtractOptions
    weights_id: str  # sha256 of the weights file, or "untrained"

    @property
    def dim(self) -> int:
        return self.model.out_dim

    def forward(self, clips: np.ndarray) -> np.ndarray:
        """(B, T, H, W, 3) uint8 clips to (B, dim) float32 features."""
        x = torch.from_numpy(clips)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = self.transform(x)
        amp = self.opts.autocast_dtype(self.device)
        with torch.inference_mode():
            if amp is not None:
                x = x.to(memory_format=torch.channels_last_3d)
                with torch.autocast("cuda", dtype=amp):
                    out = self.model(x)
            else:
                out = self.model(x)
        return out.float().cpu().numpy()


def make_extractor(opts: ExtractOptions, weights: str | None = None,
                   device: torch.device | str | None = None, warn: bool = True) -> Extractor:
    """Build C3D for `opts`, load `weights` (or warn loudly that it is untrained)."""
    device = torch.device(device) if device is not None else opts.torch_device()
    model = build_c3d(opts.layer, opts.width_mult)
    if weights:
        weights_id = load_c3d_weights(model, weights)
    else:
        if warn:
            warn_untrained()
        weights_id = UNTRAINED
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
        torch.backends.cudnn.benchmark = True
    transform = C3DInput(opts.channel_order, opts.mean, opts.scale)
    return Extractor(model, transform, device, opts, weights_id)


def video_meta_for(path: str | Path, reader_info, stream: ClipStream, opts: ExtractOptions) -> dict:
    """Per-video metadata: source, rates, counts and the time rule of its rows."""
    native_fps = float(reader_info.fps)
    fps = float(opts.fps) if opts.fps else native_fps
    decoded = reader_info.n_frames if stream.native_end is None else stream.native_end
    return {
        "source": str(path),
        "source_fingerprint": file_fingerprint(path),  # names are not identities (like_store)
        "fps": fps,
        "native_fps": native_fps,
        "n_frames": decoded,
        "duration": decoded / native_fps if native_fps else 0.0,
        "clip_len": opts.clip_len,
        "stride": opts.stride,
        "n_rows": stream.n_clips,
        "padded": bool(stream.padded),
        "width": reader_info.width,
        "height": reader_info.height,
        "rotation": reader_info.rotation,
        "reader": getattr(stream.reader, "backend", reader_info.backend),
    }


# ----------------------------------------------------------------------------- the pipeline

@dataclass
class _Job:
    index: int
    video_id: str
    path: Path


# Messages from a decoder thread to the main thread, one small type per kind.
@dataclass
class _Start:
    """The video opened; it will give `n_clips` clips."""

    index: int
    n_clips: int


@dataclass
class _Clip:
    index: int
    clip_index: int
    clip: np.ndarray


@dataclass
class _End:
    """Every clip was sent; `meta` holds the final counts (a stream may end early)."""

    index: int
    meta: dict


@dataclass
class _Fail:
    index: int
    reason: str
    detail: str


class _VideoRows:
    """Rows of one video as they come back from the network."""

    def __init__(self, n_clips: int, dim: int) -> None:
        self.rows = np.zeros((max(n_clips, 0), dim), dtype=np.float32)
        self.filled = 0
        self.meta: dict | None = None  # set when the decoder has sent the last clip

    def done(self) -> bool:
        return self.meta is not None and self.filled >= self.meta["n_rows"]


def one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _decode_job(job: _Job, opts: ExtractOptions, out: queue.Queue, stop: threading.Event) -> None:
    """Decoder thread: stream one video's clips into `out`, then an end (or fail) message.

    Whatever goes wrong while one file is decoded -- a typed read error, a
    decoder library error, or an unforeseen exception -- is that video's
    failure; the other videos go on.
    """
    reader = None
    try:
        reader = open_video(job.path, tuple(opts.frame_size), opts.video_backend, threads=1)
        info = reader.info
        positions = frame_positions(info.n_frames, info.fps, opts.fps)
        stream = ClipStream(reader, positions, opts.clip_len, opts.stride, opts.crop, chunk_clips=8)
        out.put(_Start(job.index, stream.n_clips))
        for clip_index, clip in stream:
            if stop.is_set():
                return
            out.put(_Clip(job.index, clip_index, clip))
        if stream.n_clips == 0:
            raise VideoReadError("no_frames", "no frame decodes")
        out.put(_End(job.index, video_meta_for(job.path, info, stream, opts)))
    except VideoReadError as exc:
        out.put(_Fail(job.index, exc.reason, exc.detail))
    except _DECODE_FAILURES as exc:
        out.put(_Fail(job.index, DECODE_ERROR, one_line(exc)))
    except Exception as exc:  # a decoder crash: this video's failure, with its traceback in the debug log
        log.debug("decoding %s crashed", job.path, exc_info=True)
        out.put(_Fail(job.index, "other", f"the decoder crashed: {one_line(exc)}"))
    finally:
        if reader is not None:
            reader.close()


class _Pipeline:
    """The main thread's side of `run_pipeline`: batches clips, runs the network, finishes videos."""

    def __init__(self, jobs: list[_Job], extractor: Extractor, on_done: Callable[[str, np.ndarray, dict], None],
                 on_failed: Callable[[str, str, str], None], batch_size: int, progress: bool) -> None:
        self.jobs, self.extractor = jobs, extractor
        self.on_done, self.on_failed = on_done, on_failed
        self.batch_size = batch_size
        self.states: dict[int, _VideoRows] = {}
        self.finished = 0
        self.counts = {"done": 0, "failed": 0, "clips": 0}
        self.t0 = time.perf_counter()
        self.batch_clips: list[np.ndarray] = []
        self.batch_keys: list[tuple[int, int]] = []
        self.bar = progress_bar(total=len(jobs), unit="video", enabled=progress, dynamic_ncols=True,
                                desc="extract")

    def decoding(self) -> int:
        """Videos whose decoder has not sent its end or failure yet."""
        return len(self.jobs) - self.finished - sum(1 for s in self.states.values() if s.meta is not None)

    def loop(self, clips_q: queue.Queue) -> None:
        while self.finished < len(self.jobs):
            if self.decoding() == 0:
                if not self.batch_clips:
                    # every remaining video is decoded and waiting on rows: rows went missing
                    raise RuntimeError("extraction stalled with videos waiting for rows")
                self.run_batch()
                continue
            self.handle(clips_q.get())

    def handle(self, msg: _Start | _Clip | _End | _Fail) -> None:
        if isinstance(msg, _Clip):
            self.batch_clips.append(msg.clip)
            self.batch_keys.append((msg.index, msg.clip_index))
            if len(self.batch_clips) >= self.batch_size:
                self.run_batch()
        elif isinstance(msg, _Start):
            self.states[msg.index] = _VideoRows(msg.n_clips, self.extractor.dim)
        elif isinstance(msg, _End):
            self.states[msg.index].meta = msg.meta
            if self.states[msg.index].done():
                self.finish_video(msg.index)
        else:
            self.states.pop(msg.index, None)
            self.fail_video(msg.index, msg.reason, msg.detail)

    def run_batch(self) -> None:
        feats = self.extractor.forward(np.stack(self.batch_clips))
        for (idx, clip_index), row in zip(self.batch_keys, feats, strict=True):
            st = self.states.get(idx)
            if st is not None:  # None: the video failed after some of its clips were batched
                st.rows[clip_index] = row
                st.filled += 1
        self.counts["clips"] += len(self.batch_clips)
        self.batch_clips.clear()
        self.batch_keys.clear()
        elapsed = time.perf_counter() - self.t0
        self.bar.set_postfix(clips_s=f"{self.counts['clips'] / max(elapsed, 1e-9):.1f}", refresh=False)
        for idx in [i for i, s in self.states.items() if s.done()]:
            self.finish_video(idx)

    def finish_video(self, idx: int) -> None:
        """Hand the rows over; a write that fails (overflow, disk error) is this video's failure."""
        st = self.states.pop(idx)
        job = self.jobs[idx]
        try:
            self.on_done(job.video_id, st.rows[: st.meta["n_rows"]], st.meta)
        except (UserError, OSError, ValueError, RuntimeError) as exc:
            log.debug("writing %s failed", job.video_id, exc_info=True)
            self.fail_video(idx, "other", f"cannot write its rows: {one_line(exc)}")
            return
        self.counts["done"] += 1
        self.finished += 1
        self.bar.update(1)

    def fail_video(self, idx: int, reason: str, detail: str) -> None:
        self.on_failed(self.jobs[idx].video_id, reason, detail)
        self.counts["failed"] += 1
        self.finished += 1
        self.bar.update(1)


def run_pipeline(
    jobs: Iterable[tuple[str, Path]],
    extractor: Extractor,
    on_done: Callable[[str, np.ndarray, dict], None],
    on_failed: Callable[[str, str, str], None],
    progress: bool = True,
    batch_size: int | None = None,
    decode_workers: int | None = None,
) -> dict:
    """Extract every (video_id, path) job; calls `on_done` / `on_failed` as each video finishes.

    An exception in `on_done` (the write) is turned into that video's failure;
    one raised by `on_failed` (the store cannot even record a failure) stops the run.
    Returns counters {"done", "failed", "clips", "seconds"}.
    """
    opts = extractor.opts
    jobs = [_Job(i, vid, Path(p)) for i, (vid, p) in enumerate(jobs)]
    batch_size = batch_size or opts.resolved_batch_size(extractor.device)
    n_workers = max(1, min(decode_workers or opts.resolved_decode_workers(), len(jobs) or 1))
    clips_q: queue.Queue = queue.Queue(maxsize=max(2 * batch_size, 16))
    stop = threading.Event()
    pipeline = _Pipeline(jobs, extractor, on_done, on_failed, batch_size, progress)
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="decode") as pool:
        for job in jobs:
            pool.submit(_decode_job, job, opts, clips_q, stop)
        try:
            pipeline.loop(clips_q)
        finally:
            _stop_decoders(clips_q, pool, stop)
            pipeline.bar.close()
    return pipeline.counts | {"seconds": time.perf_counter() - pipeline.t0}


def _stop_decoders(q: queue.Queue, pool: ThreadPoolExecutor, stop: threading.Event) -> None:
    """Tell decoders to stop and keep emptying the queue until every decoder thread has returned."""
    stop.set()
    while True:  # unblock decoders waiting on a full queue so the pool can shut down
        try:
            q.get_nowait()
        except queue.Empty:
            break
    pool.shutdown(wait=False, cancel_futures=True)
    threads = list(getattr(pool, "_threads", ()))
    while any(t.is_alive() for t in threads):
        try:
            q.get(timeout=0.05)
        except queue.Empty:
            pass


# ----------------------------------------------------------------------------- one video

def extract_one(path: str | Path, cfg: dict | ExtractOptions, model: Extractor | C3D | None = None,
                device: torch.device | str | None = None,
                pca: IncrementalPCA | str | None = None) -> tuple[np.ndarray, dict]:
    """Features of one video without a store (`predict` on a raw video): (rows, video_meta).

    `model` is an Extractor (reused across calls), a bare C3D (its layer/width are
    used as they are, with the config's input transform), or None (untrained from
    the config). A video that cannot be read is a UserError naming it.
    """
    opts = cfg if isinstance(cfg, ExtractOptions) else ExtractOptions.from_config(cfg)
    if isinstance(model, Extractor):
        extractor = model
    elif isinstance(model, C3D):
        dev = torch.device(device) if device is not None else next(model.parameters()).device
        extractor = Extractor(model.to(dev).eval(), C3DInput(opts.channel_order, opts.mean, opts.scale),
                              dev, opts, "unknown")
    else:
        extractor = make_extractor(opts, None, device)
    if isinstance(pca, str):
        pca = IncrementalPCA.load(pca)
    result: dict = {}

    def done(_vid: str, rows: np.ndarray, meta: dict) -> None:
        result["rows"], result["meta"] = rows, meta

    def failed(_vid: str, reason: str, detail: str) -> None:
        result["error"] = f"{path}: cannot extract features ({reason}{': ' + detail if detail else ''})"

    run_pipeline([(Path(path).stem, Path(path))], extractor, done, failed, progress=False, decode_workers=1)
    if "error" in result:
        raise UserError(result["error"])
    rows = result["rows"]
    if pca is not None:
        rows = pca.transform(rows)
    return rows, result["meta"]
