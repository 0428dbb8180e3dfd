"""Training of the ETS captioner on cached features: one readable loop, top to bottom.

    annotations -> held-out split by video -> vocabulary (training sentences only)
    -> segments matched to the store -> bucketed batches read by DataLoader workers
    -> teacher-forced token cross-entropy, Adam + L2 weight decay, Noam schedule,
       global gradient-norm clip
    -> every `valid_interval` epochs: validation loss + METEOR (greedy captions)
    -> last.pt always, best.pt when the validation METEOR improves

Resuming is exact at *step* granularity: a checkpoint stores the position of
the next batch (epoch, batch_in_epoch), the optimiser, the schedule and the
Python/numpy/torch RNG states; the batch order of an epoch is a pure function of
(seed, epoch), rows are read deterministically and the DataLoader draws its
worker seeds from its own generator, so the global torch RNG is used by
dropout alone. Hence a run killed after any checkpoint and resumed reaches the
same weights as one that never stopped (CPU, same seed). `last.pt` is written at
the end of every epoch and, when ``train.save_interval`` > 0, every that many
steps.

A resumed run keeps its folder and its checkpoint's settings; only the runtime
keys of `RUNTIME_KEYS` (epochs, device, intervals, workers) come from the
given config, so ``--resume DIR --epochs 60`` extends a run.

Files in the run folder: last.pt, best.pt, vocab.txt, metrics.csv,
skipped_videos.txt, annotations_report.json (and TensorBoard events when the
`tensorboard` package is installed).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.contrib.logging import logging_redirect_tqdm

from caption_model import distributed
from caption_model.annotations import Segment, load_annotations, split_by_video, summary_line
from caption_model.checkpoint import (
    BEST,
    FORMAT,
    LAST,
    VERSION,
    check_feat_dim,
    find_last,
    load_checkpoint,
    save_checkpoint,
)
from caption_model.dataset import BucketBatchSampler, Item, SegmentDataset, collate, match_store, open_store
from caption_model.model import ETS
from caption_model.schedule import NoamSchedule
from caption_model.text import Vocab, tokenize
from etspipe.errors import UserError
from etspipe.progress import progress_bar

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("time", "kind", "epoch", "step", "loss", "lr", "tokens_per_s", "segments_per_s",
               "val_loss", "val_meteor")


@dataclass
class TrainResult:
    """What a run produced; `model` is the trained (unwrapped) network of this process."""

    best_path: Path
    last_path: Path
    model: ETS
    vocab: Vocab
    history: list[dict] = field(default_factory=list)
    timing: dict = field(default_factory=dict)  # setup_s, train_s (training steps only), steps, segments, tokens


def train(cfg: dict, store_path: str, train_paths: list[str], resume: str | None = None,
          weights: str | None = None, progress: bool = True) -> Path:
    """Train (or resume / fine-tune) and return the path of the best checkpoint."""
    return fit(cfg, store_path, train_paths, resume=resume, weights=weights, progress=progress).best_path


# ---------------------------------------------------------------- helpers


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _plain(obj: object) -> object:
    """JSON-like copy (the store metadata may hold numpy values), loadable with weights_only=True."""
    return json.loads(json.dumps(obj, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)))


class MetricsLog:
    """metrics.csv always (appended to on resume), TensorBoard events when the package is installed."""

    def __init__(self, save_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = save_dir / "metrics.csv"
        self.tb = None
        if not enabled:
            return
        new = not self.path.exists()
        self.fh = self.path.open("a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.fh, fieldnames=CSV_COLUMNS)
        if new:
            self.writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional extra `etspipe[tensorboard]`
            pass
        else:
            self.tb = SummaryWriter(str(save_dir / "tensorboard"))

    def write(self, kind: str, epoch: int, step: int, **values: float) -> None:
        if not self.enabled:
            return
        row = {"time": f"{time.time():.3f}", "kind": kind, "epoch": epoch, "step": step}
        row.update({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()})
        self.writer.writerow(row)
        self.fh.flush()
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.fh.close()
            if self.tb is not None:
                self.tb.close()


class MeteorScorer:
    """One Java METEOR 1.5 process (pycocoevalcap) for all validations of a run; None without Java."""

    def __init__(self, enabled: bool = True) -> None:
        self._meteor = None
        self.available = enabled and shutil.which("java") is not None
        if enabled and not self.available:
            logger.warning("java not found: validation reports loss only (no METEOR); best.pt follows the loss")

    def score(self, references: dict[int, list[str]], hypotheses: dict[int, str]) -> float | None:
        """Corpus METEOR in percent (as papers report it), or None when Java is missing."""
        if not self.available or not references:
            return None
        if self._meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor

            self._meteor = Meteor()
        res = {k: [hypotheses[k] or "<empty>"] for k in references}
        score, _ = self._meteor.compute_score(references, res)
        return 100.0 * float(score)

    def close(self) -> None:
        if self._meteor is not None:
            del self._meteor
            self._meteor = None


class _Objective(nn.Module):
    """Wraps ETS.loss as a forward so that DistributedDataParallel syncs its gradients."""

    def __init__(self, model: ETS):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, feat_mask: torch.Tensor, tokens: torch.Tensor):
        return self.model.loss(feats, feat_mask, tokens)


def _autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast of the matrix products: on CUDA by default (`auto`), on a CPU only when asked (`bf16`).

    CPUs with AVX512-BF16/AMX run the products about twice as fast in bf16, but
    fp32 stays the CPU default so that CPU runs are exact references.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"train.precision must be auto, fp32 or bf16, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def validate(model: ETS, loader: DataLoader, vocab: Vocab, references: list[str], device: torch.device,
             meteor: MeteorScorer, max_len: int, progress: bool = False, precision: str = "auto") -> dict:
    """Token cross-entropy of the held-out segments and METEOR of their greedy captions."""
    model.eval()
    nll_sum, n_tokens = 0.0, 0
    hyps: dict[int, str] = {}
    for batch in progress_bar(loader, desc="validate", leave=False, enabled=progress):
        batch = batch.to(device)
        with _autocast(device, precision):
            _, nll, n = model.loss(batch.feats, batch.feat_mask, batch.tokens)
            words, _ = model.greedy_decode(batch.feats, batch.feat_mask, max_len)
        nll_sum += float(nll) * n
        n_tokens += n
        for idx, ids in zip(batch.index.tolist(), words, strict=True):
            hyps[idx] = vocab.decode(ids)
    refs = {i: [references[i]] for i in hyps}
    out = {"val_loss": nll_sum / max(n_tokens, 1)}
    score = meteor.score(refs, hyps)
    if score is not None:
        out["val_meteor"] = score
    model.train()
    return out


# ---------------------------------------------------------------- the run


def fit(cfg: dict, store_path: str, train_paths: list[str], resume: str | None = None,
        weights: str | None = None, progress: bool = True) -> TrainResult:
    """The whole training run; :func:`train` is its one-value form. See the module docstring."""
    cfg = copy.deepcopy(cfg)
    tcfg = cfg["train"]
    want = str(tcfg.get("device", "auto"))
    kind = "cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu"
    dist_info = distributed.setup(kind)
    try:
        return _fit(cfg, store_path, train_paths, resume, weights, progress, dist_info)
    finally:
        distributed.teardown(dist_info)


# Keys a resumed run takes from the given config; all others come from the checkpoint (same run, same maths).
RUNTIME_KEYS = (("train", "epochs"), ("train", "device"), ("train", "log_interval"), ("train", "valid_interval"),
                ("train", "save_interval"), ("train", "max_steps"), ("train", "val_meteor"), ("data", "num_workers"))


def _resumed_config(saved: dict, given: dict) -> dict:
    """The checkpoint's config, with only the runtime keys (more epochs, another device, ...) from `given`.

    `given` is a full config (reference values filled in), so a key counts as given
    only where it differs from configs/ets.yaml: a plain `--resume` keeps the run's
    own epochs, intervals and device instead of falling back to the reference values.
    """
    from etspipe.config import reference_config

    ref = reference_config()
    cfg = copy.deepcopy(saved)

    def changed(section: str, key: str) -> bool:
        return key in given.get(section, {}) and given[section][key] != ref.get(section, {}).get(key)

    for section, key in RUNTIME_KEYS:
        if changed(section, key):
            cfg.setdefault(section, {})[key] = given[section][key]
    ignored = [f"{sec}.{k}" for sec in ("model", "data", "train") for k, v in given.get(sec, {}).items()
               if (sec, k) not in RUNTIME_KEYS and k != "save_dir" and changed(sec, k)
               and cfg.get(sec, {}).get(k, v) != v]
    if ignored:
        logger.info("resume continues the checkpoint's run; not applying changed setting(s): %s", ", ".join(ignored))
    return cfg


def _fit(cfg: dict, store_path: str, train_paths: list[str], resume: str | None, weights: str | None,
         progress: bool, dist_info: distributed.DistInfo) -> TrainResult:
    t_start = time.perf_counter()
    main = dist_info.is_main
    device = distributed.resolve_device(str(cfg["train"].get("device", "auto")), dist_info)

    # --- where we start from: a run to continue, weights to fine-tune, or nothing
    ckpt = init = None
    if resume and weights:
        raise UserError("give either --resume (continue a run) or --weights (fine-tune), not both")
    if resume:
        ckpt = load_checkpoint(find_last(resume))
        save_dir = Path(ckpt["path"]).parent  # a resumed run keeps writing into its own folder
        cfg = _resumed_config(ckpt["config"], cfg)
        logger.info("resuming %s at epoch %d, step %d", ckpt["path"], ckpt["epoch"] + 1, ckpt["step"])
    else:
        save_dir = Path(cfg["train"]["save_dir"])
        if weights:
            init = load_checkpoint(weights)
            cfg["model"] = init["config"]["model"]  # the weights fix the architecture
    tcfg, dcfg = cfg["train"], cfg["data"]

    # --- annotations, store, split, vocabulary (checked before anything is written: a mistake leaves no files)
    segments, report = load_annotations(train_paths)
    store = open_store(store_path, "r")
    try:
        feat_dim, store_meta = int(store.dim), _plain(dict(store.meta))
        kept, skipped = match_store(segments, store.complete_ids(), store.failed())
    finally:
        store.close()
    for source in (ckpt, init):
        if source is not None:
            check_feat_dim(source, feat_dim, store_path)
    if main:
        save_dir.mkdir(parents=True, exist_ok=True)
        if not resume and (save_dir / BEST).exists():
            # a new run must never report (or let evaluate pick) an earlier run's best model
            (save_dir / BEST).unlink()
        (save_dir / "annotations_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        lines = [f"{vid}\t{why}" for vid, why in sorted(skipped.items())]
        (save_dir / "skipped_videos.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    if skipped:
        logger.warning("%d of %d annotated videos are not usable in store %s (list: %s)", len(skipped),
                       report["videos"], store_path, save_dir / "skipped_videos.txt")
    if not kept:
        raise UserError(f"none of the videos of {', '.join(map(str, train_paths))} is complete in store {store_path}")
    store_id = {(s.video_id, s.start, s.end, s.sentence): sid for s, sid in kept}
    usable = [s for s, _ in kept]
    if ckpt is not None:
        val_ids = set(ckpt["val_videos"])
        train_segs = [s for s in usable if s.video_id not in val_ids]
        val_segs = [s for s in usable if s.video_id in val_ids]
    else:
        train_segs, val_segs = split_by_video(usable, float(dcfg["val_fraction"]), int(dcfg["split_seed"]))
    if not train_segs:
        raise UserError("no training segment left after holding out the validation videos")
    source = ckpt or init
    if source is not None:
        vocab = Vocab.from_dict(source["vocab"])
    else:
        vocab = Vocab.build((tokenize(s.sentence) for s in train_segs), int(dcfg["min_word_count"]))
    if main:
        vocab.save_txt(save_dir / "vocab.txt")
    logger.info("%d training / %d validation segments (%d / %d videos), vocabulary %d words, %d-d features",
                len(train_segs), len(val_segs), len({s.video_id for s in train_segs}),
                len({s.video_id for s in val_segs}), len(vocab), feat_dim)

    def items_of(segs: list[Segment]) -> list[Item]:
        max_words = int(dcfg["max_caption_words"])
        return [Item(store_id[(s.video_id, s.start, s.end, s.sentence)], s.start, s.end,
                     tuple(vocab.encode(tokenize(s.sentence), max_words))) for s in segs]

    train_items, val_items = items_of(train_segs), items_of(val_segs)
    val_refs = [" ".join(tokenize(s.sentence)) for s in val_segs]

    # --- data loading
    seed = int(tcfg["seed"])
    workers = int(dcfg.get("num_workers", 0))
    sampler = BucketBatchSampler([i.end - i.start for i in train_items], int(tcfg["batch_size"]), seed=seed,
                                 rank=dist_info.rank, world_size=dist_info.world_size)
    loader_kw = dict(collate_fn=collate, num_workers=workers, pin_memory=device.type == "cuda",
                     persistent_workers=workers > 0)
    train_loader = DataLoader(SegmentDataset(store_path, train_items, int(dcfg["max_rows"])), batch_sampler=sampler,
                              generator=torch.Generator().manual_seed(seed), **loader_kw)
    val_loader = None
    if val_items and main:
        val_sampler = BucketBatchSampler([i.end - i.start for i in val_items], int(tcfg["batch_size"]), shuffle=False)
        val_loader = DataLoader(SegmentDataset(store_path, val_items, int(dcfg["max_rows"])),
                                batch_sampler=val_sampler, generator=torch.Generator().manual_seed(seed), **loader_kw)

    # --- model, optimiser, schedule (seeded: every rank builds the same initial weights)
    _seed_all(seed)
    model = ETS(cfg["model"], feat_dim, len(vocab))
    if init is not None:
        model.load_state_dict(init["model"])
        logger.info("fine-tuning from %s", init["path"])
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0, weight_decay=float(tcfg["weight_decay"]))
    schedule = NoamSchedule(optimizer, int(tcfg["d_model"]), int(tcfg["warmup_steps"]), float(tcfg["noam_factor"]))
    epoch, batch_in_epoch, step = 0, 0, 0
    best = {"metric": None, "value": None, "epoch": None}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        epoch, batch_in_epoch, step = int(ckpt["epoch"]), int(ckpt["batch_in_epoch"]), int(ckpt["step"])
        best = dict(ckpt.get("best") or best)
        if main and not dist_info.enabled:
            _set_rng_state(ckpt["rng"])
    if dist_info.enabled:  # dropout differs per rank; rank 0 keeps the exact single-process stream
        if dist_info.rank:
            torch.manual_seed(seed * 1000003 + dist_info.rank * 7919 + step)
        elif ckpt is not None:
            _set_rng_state(ckpt["rng"])
    objective = _Objective(model)
    if dist_info.enabled:
        ids = [dist_info.local_rank] if device.type == "cuda" else None
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=ids)

    def checkpoint_state(metrics: dict | None = None) -> dict:
        return {"format": FORMAT, "version": VERSION, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "rng": _rng_state(),
                "epoch": epoch, "batch_in_epoch": batch_in_epoch, "step": step, "vocab": vocab.to_dict(),
                "feat_dim": feat_dim, "config": _plain(cfg), "store_meta": store_meta,
                "val_videos": sorted({s.video_id for s in val_segs}), "best": dict(best),
                "metrics": metrics or {}, "world_size": dist_info.world_size}

    # --- the loop
    epochs = int(tcfg["epochs"])
    log_interval = max(int(tcfg["log_interval"]), 1)
    valid_interval = int(tcfg["valid_interval"])
    save_interval = int(tcfg.get("save_interval", 0) or 0)
    max_steps = int(tcfg.get("max_steps", 0) or 0)  # stop early (smoke runs, benchmarks); 0 = no limit
    precision = str(tcfg.get("precision", "auto"))
    _autocast(device, precision)  # validates the value before any work
    clip = float(tcfg["clip_norm"])
    max_len = int(cfg.get("decode", {}).get("max_len", 80))
    meteor = MeteorScorer(enabled=bool(main and val_loader is not None and valid_interval > 0
                                       and tcfg.get("val_meteor", True)))
    metrics_log = MetricsLog(save_dir, enabled=main)
    history: list[dict] = []
    timing = {"setup_s": time.perf_counter() - t_start, "train_s": 0.0, "steps": 0, "segments": 0, "tokens": 0}
    last_path = save_dir / LAST
    model.train()
    cleanup = contextlib.ExitStack()
    if progress and main:
        cleanup.enter_context(logging_redirect_tqdm())  # log lines print above the progress bar
    try:
        while epoch < epochs:
            sampler.set_epoch(epoch, skip=batch_in_epoch)
            bar = progress_bar(total=len(sampler) + batch_in_epoch, initial=batch_in_epoch,
                               desc=f"epoch {epoch + 1}/{epochs}", enabled=progress and main, dynamic_ncols=True,
                               leave=False)
            t_log, tokens_since, segments_since, loss_since, steps_since = time.perf_counter(), 0, 0, 0.0, 0
            t_epoch = time.perf_counter()
            for batch in train_loader:
                batch = batch.to(device)
                with _autocast(device, precision):
                    loss, nll, n_tokens = objective(batch.feats, batch.feat_mask, batch.tokens)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), clip)
                lr = schedule.lr
                optimizer.step()
                schedule.step()
                step += 1
                batch_in_epoch += 1
                tokens_since += n_tokens
                segments_since += batch.tokens.shape[0]
                timing["steps"] += 1
                timing["tokens"] += n_tokens
                timing["segments"] += batch.tokens.shape[0]
                loss_since += float(nll)
                steps_since += 1
                if not math.isfinite(float(loss.detach())):
                    raise FloatingPointError(f"loss is {float(loss.detach())} at step {step}")
                bar.update(1)
                if step % log_interval == 0:
                    dt = max(time.perf_counter() - t_log, 1e-9)
                    rec = {"loss": loss_since / steps_since, "lr": lr, "tokens_per_s": tokens_since / dt,
                           "segments_per_s": segments_since / dt}
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}")
                    if main:
                        logger.info("epoch %d step %d loss %.4f tokens/s %.0f lr %.3g", epoch + 1, step,
                                    rec["loss"], rec["tokens_per_s"], lr)
                        metrics_log.write("train", epoch + 1, step, **rec)
                    history.append({"kind": "train", "epoch": epoch + 1, "step": step, **rec})
                    t_log, tokens_since, segments_since, loss_since, steps_since = time.perf_counter(), 0, 0, 0.0, 0
                if save_interval and step % save_interval == 0 and main:
                    save_checkpoint(checkpoint_state(), last_path)
                if max_steps and step >= max_steps:
                    break
            bar.close()
            timing["train_s"] += time.perf_counter() - t_epoch
            if max_steps and step >= max_steps:
                if main:
                    save_checkpoint(checkpoint_state(), last_path)
                logger.info("stopping at train.max_steps=%d", max_steps)
                break
            epoch, batch_in_epoch = epoch + 1, 0
            metrics: dict = {}
            if main and val_loader is not None and valid_interval > 0 and epoch % valid_interval == 0:
                metrics = validate(model, val_loader, vocab, val_refs, device, meteor, max_len, progress, precision)
                metric = "val_meteor" if "val_meteor" in metrics else "val_loss"
                value = metrics[metric]
                better = best["value"] is None or best["metric"] != metric or (
                    value > best["value"] if metric == "val_meteor" else value < best["value"])
                logger.info("epoch %d validation: loss %.4f%s%s", epoch, metrics["val_loss"],
                            f", METEOR {metrics['val_meteor']:.2f}" if "val_meteor" in metrics else "",
                            " (best so far)" if better else "")
                metrics_log.write("val", epoch, step, **metrics)
                history.append({"kind": "val", "epoch": epoch, "step": step, **metrics})
                if better:
                    best = {"metric": metric, "value": value, "epoch": epoch}
            if main:
                state = checkpoint_state(metrics)
                save_checkpoint(state, last_path)
                if best["epoch"] == epoch:
                    save_checkpoint(state, save_dir / BEST)
            distributed.barrier(dist_info)
    finally:
        cleanup.close()
        metrics_log.close()
        meteor.close()
    best_path = save_dir / BEST if (save_dir / BEST).exists() else last_path
    if main:
        logger.info("training done: %d steps; best %s", step, best_path)
    return TrainResult(best_path, last_path, model, vocab, history, timing)


__all__ = ["train", "fit", "TrainResult", "validate", "summary_line"]
