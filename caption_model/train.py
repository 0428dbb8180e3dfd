"""Training of the ETS captioner on cached features: one readable loop, top to bottom.

    annotations -> held-out split by video -> vocabulary (training sentences only)
    -> segments matched to the store -> bucketed batches of rows
    -> teacher-forced token cross-entropy, Adam + L2 weight decay, Noam schedule,
       global gradient-norm clip
    -> every `valid_interval` epochs: validation loss + METEOR (greedy captions)
    -> last.pt always, best.pt when the validation METEOR improves

:func:`fit` reads as the steps of a run: where it starts from
(:func:`caption_model.runs.run_folder.starting_point`), the data (:mod:`caption_model.train_data`),
model and optimiser (:func:`_build`), then per epoch :func:`_train_epoch` and
:func:`_validate_and_save`.

Resuming is exact at *step* granularity: a checkpoint stores the position of
the next batch (epoch, batch_in_epoch), the optimiser, the schedule and the
Python/numpy/torch RNG states; the batch order of an epoch is a pure function of
(seed, epoch), rows are read deterministically and the DataLoader draws its
worker seeds from its own generator, so the global torch RNG is used by
dropout alone. Hence a run killed after any checkpoint and resumed reaches the
same weights as one that never stopped (CPU, same seed). `last.pt` is written at
the end of every epoch, when ``train.save_interval`` > 0 every that many steps,
and on Ctrl-C: the first interrupt lets the current step finish and saves
(a second one stops at once).

A new run refuses a folder that holds another run's checkpoint (``--overwrite``
replaces it, ``--resume`` continues it). A resumed run keeps its folder and its
checkpoint's settings; only the runtime keys of `RUNTIME_KEYS` (epochs, device,
intervals, workers) come from the given config, so ``--resume DIR --epochs 60``
extends a run.

Files in the run folder: last.pt, best.pt, config.yaml (the resolved config:
``etspipe train --config DIR/config.yaml`` reproduces the run), vocab.txt,
metrics.csv, skipped_videos.txt, annotations_report.json (and TensorBoard
events when the `tensorboard` package is installed).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from caption_model.architectures import build_captioner, no_decay_names
from caption_model.dataset import Batch, BatchParts, BucketBatchSampler
from caption_model.decode import greedy
from caption_model.formats.annotations import summary_line
from caption_model.formats.text import PAD, Vocab
from caption_model.runs import distributed
from caption_model.runs.checkpoint import BEST, FORMAT, LAST, VERSION, save_checkpoint
from caption_model.runs.precision import autocast, check_precision
from caption_model.runs.rng_state import rng_state, seed_all, set_rng_state
from caption_model.runs.run_folder import Start, plain, starting_point
from caption_model.runs.schedule import NoamSchedule
from caption_model.runs.stop_request import StopRequest
from caption_model.runs.train_log import IntervalStats, MeteorScorer, MetricsLog
from caption_model.train_data import RunData, loaders, prepare_data
from etspipe.devices import device_kind
from etspipe.heap import keep_freed_memory
from etspipe.progress import progress_bar

logger = logging.getLogger(__name__)

@dataclass
class TrainResult:
    """What a run produced; `model` is the trained (unwrapped) network of this process."""

    best_path: Path
    last_path: Path
    model: nn.Module
    vocab: Vocab
    history: list[dict] = field(default_factory=list)
    timing: dict = field(default_factory=dict)  # setup_s, train_s, data_s, steps, segments, tokens, rows, real_rows


def train(cfg: dict, store_path: str, train_paths: list[str], resume: str | None = None,
          weights: str | None = None, progress: bool = True, overwrite: bool = False) -> Path:
    """Train (or resume / fine-tune) and return the path of the best checkpoint."""
    return fit(cfg, store_path, train_paths, resume=resume, weights=weights, progress=progress,
               overwrite=overwrite).best_path


# ---------------------------------------------------------------- helpers


class _Objective(nn.Module):
    """Wraps the captioner's loss as a forward so that DistributedDataParallel syncs its gradients."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, feat_mask: torch.Tensor, tokens: torch.Tensor):
        return self.model.loss(feats, feat_mask, tokens)


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, vocab: Vocab, references: list[str], device: torch.device,
             meteor: MeteorScorer, max_len: int, progress: bool = False, precision: str = "auto") -> dict:
    """Token cross-entropy of the held-out segments and METEOR of their greedy captions."""
    model.eval()
    nll_sum, n_tokens = torch.zeros((), dtype=torch.float64, device=device), 0
    hyps: dict[int, str] = {}
    for batch in progress_bar(loader, desc="validate", leave=False, enabled=progress):
        for part in parts_of(batch.to(device)):
            with autocast(device, precision):
                _, nll, n = model.loss(part.feats, part.feat_mask, part.tokens)
                decoded = greedy(model, part.feats, part.feat_mask, max_len)
            nll_sum += nll.double() * n
            n_tokens += n
            for idx, d in zip(part.index.tolist(), decoded, strict=True):
                hyps[idx] = vocab.decode(d.tokens)
    refs = {i: [references[i]] for i in hyps}
    out = {"val_loss": float(nll_sum) / max(n_tokens, 1)}
    score = meteor.score(refs, hyps)
    if score is not None:
        out["val_meteor"] = score
    model.train()
    return out


# ---------------------------------------------------------------- the run


def fit(cfg: dict, store_path: str, train_paths: list[str], resume: str | None = None,
        weights: str | None = None, progress: bool = True, overwrite: bool = False) -> TrainResult:
    """The whole training run; :func:`train` is its one-value form. See the module docstring."""
    cfg = copy.deepcopy(cfg)
    keep_freed_memory()  # ~20 % of a CPU step was page faults of re-allocated tensors (etspipe/heap.py)
    kind = device_kind(str(cfg["train"]["device"]), "train.device")
    dist_info = distributed.setup(kind)
    try:
        return _fit(cfg, store_path, train_paths, resume, weights, overwrite, progress, dist_info)
    except KeyboardInterrupt as exc:
        if exc.args:  # the loop saved a checkpoint and says how to continue
            raise
        raise KeyboardInterrupt("stopped before a checkpoint was saved; rerun the same command") from None
    finally:
        distributed.teardown(dist_info)


def _fit(cfg: dict, store_path: str, train_paths: list[str], resume: str | None, weights: str | None,
         overwrite: bool, progress: bool, dist_info: distributed.DistInfo) -> TrainResult:
    t_start = time.perf_counter()
    main = dist_info.is_main
    device = distributed.resolve_device(str(cfg["train"]["device"]), dist_info)
    start = starting_point(cfg, resume, weights)
    check_precision(str(start.cfg["train"]["precision"]))
    data = prepare_data(start, store_path, train_paths, main, overwrite)
    train_loader, val_loader = loaders(start.cfg, data, store_path, device, dist_info)
    run = _build(start, data, device, dist_info)
    tcfg = start.cfg["train"]
    meteor = MeteorScorer(enabled=bool(main and val_loader is not None and int(tcfg["valid_interval"]) > 0
                                       and tcfg["val_meteor"]))
    metrics_log = MetricsLog(start.save_dir, enabled=main)
    history: list[dict] = []
    timing = {"setup_s": time.perf_counter() - t_start, "train_s": 0.0, "steps": 0, "segments": 0, "tokens": 0,
              "rows": 0, "real_rows": 0, "token_rows": 0, "data_s": 0.0}
    with contextlib.ExitStack() as cleanup, StopRequest() as stop:
        if progress and main:
            cleanup.enter_context(logging_redirect_tqdm())  # log lines print above the progress bar
        cleanup.callback(metrics_log.close)
        cleanup.callback(meteor.close)
        while run.epoch < int(tcfg["epochs"]):
            t_epoch = time.perf_counter()
            finished = _train_epoch(run, train_loader, device, tcfg, stop, metrics_log, history, timing, progress)
            timing["train_s"] += time.perf_counter() - t_epoch
            if not finished:
                break
            _validate_and_save(run, val_loader, device, meteor, metrics_log, history, progress)
    best_path = start.save_dir / BEST if (start.save_dir / BEST).exists() else run.last_path
    if main:
        logger.info("training done: %d steps; best %s", run.step, best_path)
    return TrainResult(best_path, run.last_path, run.model, data.vocab, history, timing)


# ---- model, optimiser, schedule


@dataclass
class Run:
    """Everything a training step changes, and what a checkpoint of it holds."""

    cfg: dict
    save_dir: Path
    data: RunData
    model: nn.Module
    objective: nn.Module  # the model's loss, wrapped for DDP when distributed
    optimizer: torch.optim.Optimizer
    schedule: NoamSchedule
    dist_info: distributed.DistInfo
    epoch: int = 0  # position of the next batch
    batch_in_epoch: int = 0
    step: int = 0
    best: dict = field(default_factory=lambda: {"metric": None, "value": None, "epoch": None})

    @property
    def last_path(self) -> Path:
        return self.save_dir / LAST

    def checkpoint_state(self, metrics: dict | None = None) -> dict:
        data = self.data
        return {"format": FORMAT, "version": VERSION, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "rng": rng_state(), "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
                "vocab": data.vocab.to_dict(), "feat_dim": data.feat_dim, "config": plain(self.cfg),
                "store_meta": data.store_meta, "val_videos": data.val_videos, "best": dict(self.best),
                "metrics": metrics or {}, "world_size": self.dist_info.world_size, "projection": data.projection}

    def save_last(self) -> None:
        if self.dist_info.is_main:
            save_checkpoint(self.checkpoint_state(), self.last_path)


def _build(start: Start, data: RunData, device: torch.device, dist_info: distributed.DistInfo) -> Run:
    """Model, Adam and the Noam schedule, seeded (every rank builds the same initial weights), or restored."""
    tcfg, ckpt = start.cfg["train"], start.ckpt
    seed = int(tcfg["seed"])
    seed_all(seed)
    model = build_captioner(start.cfg["model"], data.feat_dim, len(data.vocab))
    if start.init is not None:
        model.load_state_dict(start.init["model"])
        logger.info("fine-tuning from %s", start.init["path"])
    model.to(device)
    # fused: Adam's update in one kernel over all parameters; 5 % of a CPU step at reference sizes (PERFORMANCE.md)
    optimizer = torch.optim.Adam(_param_groups(model, float(tcfg["weight_decay"])), lr=0.0, fused=True)
    schedule = NoamSchedule(optimizer, int(tcfg["d_model"]), int(tcfg["warmup_steps"]), float(tcfg["noam_factor"]))
    objective: nn.Module = _Objective(model)
    if dist_info.enabled:
        ids = [dist_info.local_rank] if device.type == "cuda" else None
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=ids)
    run = Run(start.cfg, start.save_dir, data, model, objective, optimizer, schedule, dist_info)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        run.epoch, run.batch_in_epoch, run.step = int(ckpt["epoch"]), int(ckpt["batch_in_epoch"]), int(ckpt["step"])
        run.best = dict(ckpt["best"] or run.best)
    if dist_info.rank:  # dropout differs per rank; rank 0 keeps the exact single-process stream
        torch.manual_seed(seed * 1000003 + dist_info.rank * 7919 + run.step)
    elif ckpt is not None:
        set_rng_state(ckpt["rng"])
    return run


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Adam's groups: coupled L2 decay (added to the gradient after clipping, as fluid's regularizer and
    torch's Adam both do) on every parameter but those the architecture trains without it."""
    skip = set(no_decay_names(model))
    decayed = [p for n, p in model.named_parameters() if n not in skip]
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    if skip:
        groups.append({"params": [p for n, p in model.named_parameters() if n in skip], "weight_decay": 0.0})
    return groups


# ---- one epoch


def _train_epoch(run: Run, loader: DataLoader, device: torch.device, tcfg: dict, stop: StopRequest,
                 metrics_log: MetricsLog, history: list[dict], timing: dict, progress: bool) -> bool:
    """Train from the run's position to the end of its epoch; False when the run stops early (saved first)."""
    main, precision, clip = run.dist_info.is_main, str(tcfg["precision"]), float(tcfg["clip_norm"])
    log_interval, save_interval = max(int(tcfg["log_interval"]), 1), int(tcfg["save_interval"])
    max_steps = int(tcfg["max_steps"])  # stop early (smoke runs, benchmarks); 0 = no limit
    sampler: BucketBatchSampler = loader.batch_sampler
    sampler.set_epoch(run.epoch, skip=run.batch_in_epoch)
    bar = progress_bar(total=len(sampler) + run.batch_in_epoch, initial=run.batch_in_epoch,
                       desc=f"epoch {run.epoch + 1}/{int(tcfg['epochs'])}", enabled=progress and main,
                       dynamic_ncols=True, leave=False)
    interval = IntervalStats()
    t_wait = time.perf_counter()
    for batch in loader:
        timing["data_s"] += time.perf_counter() - t_wait  # waiting for rows: what data loading costs the step
        parts = parts_of(batch)
        segments = sum(p.tokens.shape[0] for p in parts)
        rows = sum(p.feats.shape[0] * p.feats.shape[1] for p in parts)
        real_rows = sum(int(p.feat_mask.sum()) for p in parts)
        batch = batch.to(device)
        run.optimizer.zero_grad(set_to_none=True)
        nll, n_tokens = _forward_backward(run, batch, device, precision)
        nn.utils.clip_grad_norm_(run.model.parameters(), clip)
        lr = run.schedule.lr
        run.optimizer.step()
        run.schedule.step()
        run.step, run.batch_in_epoch = run.step + 1, run.batch_in_epoch + 1
        interval.add(nll, n_tokens, segments)
        for key, value in (("steps", 1), ("tokens", n_tokens), ("segments", segments), ("rows", rows),
                           ("real_rows", real_rows), ("token_rows", n_tokens * max(p.feats.shape[1] for p in parts))):
            timing[key] += value  # padded rows and words x rows: what a FLOP count needs (benchmarks)
        bar.update(1)
        if run.step % log_interval == 0:
            _log_interval(run, interval.summary(run.step, lr), bar, metrics_log, history)
            interval.reset()
        if save_interval and run.step % save_interval == 0:
            run.save_last()
        if distributed.any_rank(run.dist_info, stop.requested):
            run.save_last()
            bar.close()
            raise KeyboardInterrupt(f"checkpoint saved at step {run.step}: add --resume {run.save_dir} "
                                    "to continue training")
        if max_steps and run.step >= max_steps:
            run.save_last()
            logger.info("stopping at train.max_steps=%d", max_steps)
            bar.close()
            return False
        t_wait = time.perf_counter()
    bar.close()
    return True


def parts_of(batch: Batch | BatchParts) -> list[Batch]:
    """The padded parts of a batch: the loader's (`dataset.collate_parts`), or the batch itself."""
    return batch.parts if isinstance(batch, BatchParts) else [batch]


def _forward_backward(run: Run, batch: Batch | BatchParts, device: torch.device,
                      precision: str) -> tuple[torch.Tensor, int]:
    """The batch's gradient, part by part when the loader cut it into parts (train.max_batch_rows).

    Each part's mean token loss is weighted by its share of the batch's tokens, so the gradients add up
    to the whole batch's mean (etspipe's ETS with the doubly stochastic term on weights that term by
    tokens too). Returns the batch's mean token cross-entropy and its token count.
    """
    parts = parts_of(batch)
    total = sum(int((p.tokens[:, 1:] != PAD).sum()) for p in parts)
    nll_sum, n_sum = torch.zeros((), device=device), 0
    for i, part in enumerate(parts):
        sync = contextlib.nullcontext()
        if run.dist_info.enabled and i < len(parts) - 1:
            sync = run.objective.no_sync()  # DDP averages the gradients once, after the last part
        with sync:
            with autocast(device, precision):
                loss, nll, n = run.objective(part.feats, part.feat_mask, part.tokens)
            (loss * (n / max(total, 1)) if len(parts) > 1 else loss).backward()
        nll_sum, n_sum = nll_sum + nll.detach().float() * n, n_sum + n
    return nll_sum / max(n_sum, 1), n_sum


def _log_interval(run: Run, rec: dict, bar: tqdm, metrics_log: MetricsLog, history: list[dict]) -> None:
    bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}")
    if run.dist_info.is_main:
        logger.info("epoch %d step %d loss %.4f tokens/s %.0f lr %.3g", run.epoch + 1, run.step, rec["loss"],
                    rec["tokens_per_s"], rec["lr"])
        metrics_log.write("train", run.epoch + 1, run.step, **rec)
    history.append({"kind": "train", "epoch": run.epoch + 1, "step": run.step, **rec})


# ---- the end of an epoch


def _validate_and_save(run: Run, val_loader: DataLoader | None, device: torch.device, meteor: MeteorScorer,
                       metrics_log: MetricsLog, history: list[dict], progress: bool) -> None:
    """Move to the next epoch; validate when due; last.pt always, best.pt when the validation improved."""
    tcfg = run.cfg["train"]
    run.epoch, run.batch_in_epoch = run.epoch + 1, 0
    valid_interval = int(tcfg["valid_interval"])
    metrics: dict = {}
    if run.dist_info.is_main and val_loader is not None and valid_interval > 0 and run.epoch % valid_interval == 0:
        metrics = validate(run.model, val_loader, run.data.vocab, run.data.val_refs, device, meteor,
                           int(run.cfg["decode"]["max_len"]), progress, str(tcfg["precision"]))
        metric = "val_meteor" if "val_meteor" in metrics else "val_loss"
        value, best = metrics[metric], run.best
        better = best["value"] is None or best["metric"] != metric or (
            value > best["value"] if metric == "val_meteor" else value < best["value"])
        logger.info("epoch %d validation: loss %.4f%s%s", run.epoch, metrics["val_loss"],
                    f", METEOR {metrics['val_meteor']:.2f}" if "val_meteor" in metrics else "",
                    " (best so far)" if better else "")
        metrics_log.write("val", run.epoch, run.step, **metrics)
        history.append({"kind": "val", "epoch": run.epoch, "step": run.step, **metrics})
        if better:
            run.best = {"metric": metric, "value": value, "epoch": run.epoch}
    if run.dist_info.is_main:
        state = run.checkpoint_state(metrics)
        save_checkpoint(state, run.last_path)
        if run.best["epoch"] == run.epoch:
            save_checkpoint(state, run.save_dir / BEST)
    distributed.barrier(run.dist_info)


__all__ = ["train", "fit", "TrainResult", "validate", "summary_line"]
