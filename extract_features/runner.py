"""The extraction runner: videos in, one committed store entry per video out.

Decoding runs ahead in a pool of threads (decord and PyAV release the GIL while
they decode and scale), each thread streaming one video's clips into a bounded
queue; the main thread takes clips from any video into full batches, runs the
network (C3D, or ResNet-152 on one-frame "clips" for ActivityNet's frame recipe)
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
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
from torch import nn

from etspipe.errors import UserError
from etspipe.progress import progress_bar
from extract_features.c3d import C3DInput, build_c3d
from extract_features.clips import ClipStream, frame_positions
from extract_features.fps_filter import fps_filter_positions
from extract_features.inputs import file_fingerprint
from extract_features.mean_cube import crop_cube, load_mean_cube
from extract_features.options import ExtractOptions
from extract_features.pca import IncrementalPCA
from extract_features.resnet152 import ResNetInput, build_resnet152
from extract_features.video_reader import DECODE_ERROR, HAVE_DECORD, VideoReadError, open_video
from extract_features.weights import UNTRAINED, load_c3d_weights, load_resnet_weights, warn_untrained

log = logging.getLogger(__name__)

if HAVE_DECORD:
    from decord import DECORDError as _DecordError
else:  # pragma: no cover
    class _DecordError(Exception):
        pass

# What a decoder thread may raise on a broken file (everything else is a bug and propagates).
_DECODE_FAILURES = (av.error.FFmpegError, _DecordError, OSError, EOFError)


# CPU layout of the network's input and weights. channels-last 3-D ran 1.15-1.2x faster than
# NCDHW for the full-size fp32 C3D on the 2-core AVX2 machine (docs/PERFORMANCE.md, Extraction);
# channels-last 2-D ran the full-size ResNet-152 on 240x320 frames 1.2-1.4x faster (docs/RESNET152.md).
CPU_CHANNELS_LAST = True


@dataclass
class _Batch:
    """One batch on its way through the network: what `Extractor.finish` needs to hand its rows back."""

    n: int
    out: torch.Tensor  # (>= n, dim) float32: host rows, or a pinned buffer the device copy lands in
    ready: torch.cuda.Event | None = None  # recorded after the copy back; None when `out` is final


@dataclass
class Extractor:
    """A network ready to run: model on its device, input transform, weights id.

    On CUDA a batch goes through `start` (stack into a reusable pinned buffer, copy
    up, forward, copy the rows back into another pinned buffer, all queued without
    waiting) and `finish` (wait for that batch's copy back). The runner keeps one
    batch in flight (`lookahead`), so the GPU computes batch i while the host
    collects batch i+1 and scatters batch i-1. Batches are padded to one size
    (`pad_to`) so cudnn.benchmark tunes once per process, not once per last batch
    of every video (predict and dask run one pipeline per video).
    """

    model: nn.Module  # C3D or ResNet152: (B, ...) input to (B, out_dim) rows
    transform: C3DInput | ResNetInput
    device: torch.device
    opts: ExtractOptions
    weights_id: str  # sha256 of the weights file, or "untrained"
    lookahead: int = 0  # batches the runner keeps in flight before collecting rows (1 on CUDA)
    pad_batches: bool = False  # run every batch at the runner's batch size (CUDA)
    _slots: list = field(default_factory=list, init=False, repr=False)
    _turn: int = field(default=0, init=False, repr=False)

    @property
    def dim(self) -> int:
        return self.model.out_dim

    def forward(self, clips: np.ndarray) -> np.ndarray:
        """(B, T, H, W, 3) uint8 clips to (B, dim) float32 features."""
        return self.finish(self.start(clips))

    def start(self, clips: np.ndarray | list[np.ndarray], pad_to: int | None = None) -> _Batch:
        """Queue one batch (an array or a list of clips); `finish` returns its rows.

        At most `lookahead + 1` batches may be started and not yet finished: the
        buffers go round, and a further start would overwrite the oldest one's rows.
        """
        n = len(clips)
        size = max(n, pad_to or 0) if self.pad_batches else n
        if self.device.type != "cuda" and size == n and isinstance(clips, np.ndarray):
            x = torch.from_numpy(clips)  # the network reads the caller's array: no buffer needed
        else:
            slot = self._slot(size, clips[0].shape)
            if slot["copied"] is not None:
                slot["copied"].synchronize()  # the last copy up from this buffer is over: it may be rewritten
            host = slot["host"][:size]
            np.stack(clips, out=host.numpy()[:n])  # rows n..size-1 keep old clips: padding, discarded
            x = host.to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                slot["copied"] = torch.cuda.Event()
                slot["copied"].record()
        x = self.transform(x)
        amp = self.opts.autocast_dtype(self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=amp, enabled=amp is not None):
            out = self.model(x)
        if self.device.type != "cuda":
            return _Batch(n, out.float())
        rows = slot["rows"][:size]  # CUDA always took a slot above
        rows.copy_(out.float(), non_blocking=True)  # converted on the GPU, then one copy back
        ready = torch.cuda.Event()
        ready.record()
        return _Batch(n, rows, ready)

    def finish(self, batch: _Batch) -> np.ndarray:
        """The (n, dim) float32 rows of a started batch (waits for its copy back)."""
        if batch.ready is not None:
            batch.ready.synchronize()
        return batch.out[: batch.n].numpy().copy()

    def _slot(self, size: int, clip_shape: tuple) -> dict:
        """The next of `lookahead + 1` reusable host buffers (pinned on CUDA), grown to `size`."""
        n_slots = self.lookahead + 1
        if len(self._slots) != n_slots:
            self._slots = [{"host": None, "rows": None, "copied": None} for _ in range(n_slots)]
        slot = self._slots[self._turn % n_slots]
        self._turn += 1
        pin = self.device.type == "cuda"
        if slot["host"] is None or slot["host"].shape[0] < size or slot["host"].shape[1:] != clip_shape:
            if slot["copied"] is not None:
                slot["copied"].synchronize()
            slot["host"] = torch.empty((size, *clip_shape), dtype=torch.uint8, pin_memory=pin)
            slot["rows"] = torch.empty((size, self.dim), dtype=torch.float32, pin_memory=pin) if pin else None
            slot["copied"] = None
        return slot


def make_extractor(opts: ExtractOptions, weights: str | None = None,
                   device: torch.device | str | None = None, warn: bool = True) -> Extractor:
    """Build `opts.network` (C3D or ResNet-152), load `weights` (or warn loudly that it is untrained)."""
    device = torch.device(device) if device is not None else opts.torch_device()
    resnet = opts.network == "resnet152"
    model = build_resnet152(opts.width_mult) if resnet else build_c3d(opts.layer, opts.width_mult)
    if weights:
        weights_id = load_resnet_weights(model, weights) if resnet else load_c3d_weights(model, weights)
    else:
        if warn:
            warn_untrained(opts.network)
        weights_id = UNTRAINED
    return prepare_extractor(model, opts, device, weights_id)


def prepare_extractor(model: nn.Module, opts: ExtractOptions, device: torch.device, weights_id: str) -> Extractor:
    """Put `model` on `device` in the layout its inputs will have (channels-last on CUDA and, measured, CPU)."""
    cuda = device.type == "cuda"
    channels_last = cuda or CPU_CHANNELS_LAST
    model = model.to(device).eval()
    resnet = opts.network == "resnet152"
    if channels_last:
        model = model.to(memory_format=torch.channels_last if resnet else torch.channels_last_3d)
    if cuda:
        torch.backends.cudnn.benchmark = True
    if resnet:
        transform = ResNetInput(channels_last=channels_last)
    else:
        cube = None
        if opts.mean_cube:
            cube = crop_cube(load_mean_cube(opts.mean_cube, opts.clip_len, opts.frame_size), opts.crop)
        transform = C3DInput(opts.channel_order, opts.mean, opts.scale, channels_last=channels_last, mean_cube=cube)
    return Extractor(model, transform, device, opts, weights_id, lookahead=int(cuda), pad_batches=cuda)


def frame_plan(n_frames: int, native_fps: float, opts: ExtractOptions) -> np.ndarray:
    """Native frame index of each position of the sequence the clips are cut from.

    ResNet-152's frames are those ffmpeg's ``fps`` filter keeps (`fps_filter`, the
    recipe's rule); C3D's are every frame, or at a target rate the frame at or
    before each target time (`clips.frame_positions`).
    """
    if opts.network == "resnet152":
        return fps_filter_positions(n_frames, native_fps, opts.fps)
    return frame_positions(n_frames, native_fps, opts.fps)


# Clips decoded per read: C3D's 8 clips are 72 frames; ResNet-152's one-frame clips come 16 at a time
_CHUNK_CLIPS = {"c3d": 8, "resnet152": 16}


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
        positions = frame_plan(info.n_frames, info.fps, opts)
        stream = ClipStream(reader, positions, opts.clip_len, opts.stride, opts.crop,
                            chunk_clips=_CHUNK_CLIPS[opts.network], frame_size=tuple(opts.frame_size))
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
        self.in_flight: deque = deque()  # (started batch, its keys), oldest first
        self.bar = progress_bar(total=len(jobs), unit="video", enabled=progress, dynamic_ncols=True,
                                desc="extract")

    def decoding(self) -> int:
        """Videos whose decoder has not sent its end or failure yet."""
        return len(self.jobs) - self.finished - sum(1 for s in self.states.values() if s.meta is not None)

    def loop(self, clips_q: queue.Queue) -> None:
        while self.finished < len(self.jobs):
            if self.decoding() == 0:
                if self.batch_clips:
                    self.run_batch()
                elif self.in_flight:
                    self.collect()
                else:
                    # every remaining video is decoded and waiting on rows: rows went missing
                    raise RuntimeError("extraction stalled with videos waiting for rows")
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
        """Send the collected clips to the network; scatter the rows of every batch that is back.

        With `lookahead` 0 (CPU) the rows come back at once. With 1 (CUDA) this
        batch is only queued, and the previous one's rows are taken, so the GPU
        works while the host collects the next batch.
        """
        ex = self.extractor
        if ex.lookahead == 0:
            self.scatter(ex.forward(np.stack(self.batch_clips)), self.batch_keys)
        else:
            self.in_flight.append((ex.start(self.batch_clips, pad_to=self.batch_size), list(self.batch_keys)))
            while len(self.in_flight) > ex.lookahead:
                self.collect()
        self.batch_clips.clear()
        self.batch_keys.clear()

    def collect(self) -> None:
        """Wait for the oldest batch in flight and scatter its rows."""
        batch, keys = self.in_flight.popleft()
        self.scatter(self.extractor.finish(batch), keys)

    def scatter(self, feats: np.ndarray, keys: list[tuple[int, int]]) -> None:
        for (idx, clip_index), row in zip(keys, feats, strict=True):
            st = self.states.get(idx)
            if st is not None:  # None: the video failed after some of its clips were batched
                st.rows[clip_index] = row
                st.filled += 1
        self.counts["clips"] += len(keys)
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

def extract_one(path: str | Path, cfg: dict | ExtractOptions, model: Extractor | nn.Module | None = None,
                device: torch.device | str | None = None,
                pca: IncrementalPCA | str | None = None) -> tuple[np.ndarray, dict]:
    """Features of one video without a store (`predict` on a raw video): (rows, video_meta).

    `model` is an Extractor (reused across calls), a bare network of `cfg`'s kind
    (a C3D's layer/width are used as they are, with the config's input transform),
    or None (untrained from the config). A video that cannot be read is a UserError naming it.
    """
    opts = cfg if isinstance(cfg, ExtractOptions) else ExtractOptions.from_config(cfg)
    if isinstance(model, Extractor):
        extractor = model
    elif isinstance(model, nn.Module):
        dev = torch.device(device) if device is not None else next(model.parameters()).device
        extractor = prepare_extractor(model, opts, dev, "unknown")
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


def record_failure(store, video_id: str, reason: str, detail: str, source: str) -> None:
    """Record one video's failure; a store that cannot even take that stops the run with one line."""
    try:
        store.mark_failed(video_id, reason, detail, source=source)
    except OSError as exc:
        raise UserError(f"cannot write to the feature store {store.path} ({exc.strerror or exc}); "
                        f"stopped at video {video_id}") from None
