"""Training of the proposal model, into the captioner's run folder, read top to bottom.

    annotations -> held-out videos: the captioner's (data.val_fraction, data.split_seed), topped up to
       proposals.min_val_videos (at most a quarter of the corpus) by the same seeded ranking
    -> row edges from the store's metadata -> anchors (k-means of segment lengths in rows)
       and per-anchor positive shares (SST's loss weights; the store check for both models)
    -> batches of videos, by proposals.model:
       bmn: whole videos (or, bm_crop of the time, a random 50-100 % window) pooled to at most
            bm_positions positions -> cell tIoU / offsets / positives -> `bm_model.bm_loss`
       sst: a window of long ones -> weighted BCE + boundary offsets
       -> Adam, gradient-norm clip
    -> every `valid_interval` epochs: proposals of the held-out videos, AR@AN
    -> proposals_last.pt every epoch, proposals_best.pt when the validation AUC improves

Resuming continues at the next epoch: an epoch's batches and windows are a
pure function of (seed, epoch), and the checkpoint holds the optimiser and the
torch RNG (dropout). A resumed run takes only the runtime keys (epochs,
device, valid_interval) from the given config. Several processes: run under
torchrun; each rank trains on its own share of the batches and DDP averages
the gradients (caption_model.runs.distributed, as the captioner).

Files in the run folder: proposals_last.pt, proposals_best.pt, proposals_metrics.csv.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from caption_model.proposals.bm_data import BMDataset, bm_collate
from caption_model.proposals.bm_model import BMNet, bm_lengths, bm_loss
from caption_model.proposals.calibrate import calibrate_threshold
from caption_model.proposals.data import (
    ProposalDataset,
    VideoTimes,
    anchors_fit,
    collate,
    positive_share,
    training_window,
)
from caption_model.proposals.infer import (
    BEST,
    FORMAT,
    LAST,
    VERSION,
    Proposer,
    build_proposal_net,
    check_store,
    load_proposal_checkpoint,
    proposal_kind,
    propose_corpus,
)
from caption_model.proposals.model import ProposalNet, boundary_loss, kmeans_anchors, weighted_bce
from caption_model.runs import distributed
from caption_model.runs.checkpoint import load_weights, save_checkpoint
from caption_model.runs.train_log import NonFiniteLoss
from caption_model.scoring.proposal_metrics import ar_an, recall_at
from etspipe.devices import device_kind
from etspipe.errors import UserError
from etspipe.progress import progress_bar

logger = logging.getLogger(__name__)

RUNTIME_KEYS = ("epochs", "device", "valid_interval")
CSV_NAME = "proposals_metrics.csv"


@dataclass
class Prepared:
    """What a run trains on, planned from annotations and store metadata (no feature read)."""

    train: list[VideoTimes]
    val: list[VideoTimes]
    anchors: np.ndarray
    pos_share: np.ndarray
    feat_dim: int
    store_meta: dict
    val_ids: list[str]  # annotation ids of the held-out videos (kept by a resumed run)


@dataclass
class ProposalRun:
    best_path: Path
    last_path: Path
    net: nn.Module  # ProposalNet (SST) or BMNet
    anchors: np.ndarray
    history: list[dict] = field(default_factory=list)
    timing: dict = field(default_factory=dict)  # setup_s, train_s, epochs


def _plain(obj: object) -> object:
    return json.loads(json.dumps(obj, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)))


def _videos(store, segments) -> list[VideoTimes]:
    """Group segments by store video; one video whose metadata is unreadable is skipped, not fatal."""
    from caption_model.formats.annotations import match_store
    from caption_model.proposals.data import video_times

    kept, skipped = match_store(segments, store.complete_ids(), store.failed())
    if skipped:
        logger.warning("%d annotated videos are not usable in store %s (first: %s, %s)", len(skipped),
                       store.path, *next(iter(skipped.items())))
    by_video: dict[str, list] = {}
    for seg, sid in kept:
        by_video.setdefault(sid, []).append(seg)
    out = []
    for sid, segs in sorted(by_video.items()):
        try:
            out.append(video_times(store, sid, segs))
        except (UserError, KeyError, ValueError) as exc:
            logger.warning("video %s skipped for proposals: %s", sid, exc)
    return out


def prepare(cfg: dict, store_path: str, train_paths: list[str], ckpt: dict | None = None) -> Prepared:
    """Annotations + store -> training and held-out videos, anchors and loss weights."""
    from caption_model.formats.annotations import load_annotations, split_by_video
    from features_store import open_store

    segments, _ = load_annotations(train_paths)
    pcfg = cfg["proposals"]
    with open_store(store_path, "r") as store:
        store_meta = {**_plain(dict(store.meta)), "store_path": str(store_path)}
        if ckpt is not None:
            check_store(ckpt, store_meta, store_path)
        if ckpt is not None:
            val_ids = set(ckpt["val_videos"])
            train_segs = [s for s in segments if s.video_id not in val_ids]
            val_segs = [s for s in segments if s.video_id in val_ids]
        else:
            train_segs, val_segs = split_by_video(segments, float(cfg["data"]["val_fraction"]),
                                                  int(cfg["data"]["split_seed"]), int(pcfg["min_val_videos"]))
            _say_if_below_floor(len({s.video_id for s in val_segs}), float(cfg["data"]["val_fraction"]),
                                int(pcfg["min_val_videos"]), len({s.video_id for s in segments}))
        train, val = _videos(store, train_segs), _videos(store, val_segs)
        feat_dim = int(store.dim)
    if not train:
        raise UserError(f"none of the training videos of {', '.join(map(str, train_paths))} is complete "
                        f"in store {store_path}")
    if ckpt is not None:
        anchors, share = np.asarray(ckpt["anchors"]), np.asarray(ckpt["pos_share"])
    else:
        anchors = kmeans_anchors(anchors_fit(train, store_path), int(pcfg["anchors"]))
        share = positive_share(train, anchors, float(pcfg["pos_tiou"]))
    logger.info("proposals: %d training / %d held-out videos, %d anchors of %s rows, training windows of %d rows",
                len(train), len(val), len(anchors), ", ".join(map(str, anchors.tolist())),
                training_window(int(pcfg["window_rows"]), anchors))
    return Prepared(train, val, anchors, share, feat_dim, store_meta, sorted({s.video_id for s in val_segs}))


def _say_if_below_floor(n_val: int, val_fraction: float, floor: int, n_videos: int) -> None:
    """One warning when the corpus is too small to hold out ``proposals.min_val_videos`` videos."""
    if val_fraction > 0 and n_val < floor:
        logger.warning("proposals: %d annotated videos are too few to hold out proposals.min_val_videos=%d "
                       "(at most a quarter of them is held out): the epoch and the events threshold are chosen "
                       "on %d videos and may be noisy", n_videos, floor, n_val)


def epoch_batches(videos: list[VideoTimes], batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world: int = 1) -> list[list[int]]:
    """This rank's batches of an epoch: shuffled by (seed, epoch), similar lengths together, equal count per rank."""
    order = np.random.default_rng([seed, epoch]).permutation(len(videos))
    group = batch_size * 16  # sort by length within groups: less padding, still shuffled
    order = np.concatenate([sorted(order[i:i + group], key=lambda j: videos[j].n_rows)
                            for i in range(0, len(order), group)]) if len(order) else order
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    batches = [batches[i] for i in np.random.default_rng([seed, epoch, 1]).permutation(len(batches))]
    per_rank = max(len(batches) // world, 1)
    return (batches[rank::world] + batches)[:per_rank] if world > 1 else batches


class _BMObjective(nn.Module):
    """The boundary-matching proposer's loss as a forward (DistributedDataParallel, as `_Objective`)."""

    def __init__(self, net: BMNet, offset_weight: float):
        super().__init__()
        self.net = net
        self.offset_weight = offset_weight

    def forward(self, batch) -> torch.Tensor:
        bound, cells = self.net(batch.feats, batch.n_pos)
        valid = self.net.valid_cells(batch.n_pos, batch.feats.shape[1])
        return bm_loss(bound, cells, batch, valid, self.offset_weight)


def _training_parts(pcfg: dict, prep: Prepared, store_path: str, seed: int, net: nn.Module
                    ) -> tuple[nn.Module, object, object]:
    """(objective, dataset, collate function) of the configured proposal model."""
    if proposal_kind(pcfg) == "bmn":
        dataset = BMDataset(store_path, prep.train, bm_lengths(pcfg), int(pcfg["bm_positions"]), seed,
                            float(pcfg["bm_crop"]), float(pcfg["bm_cls_tiou"]))
        offset_weight = float(pcfg["regress_weight"]) if pcfg["regress_boundaries"] else 0.0
        return _BMObjective(net, offset_weight), dataset, bm_collate
    dataset = ProposalDataset(store_path, prep.train, prep.anchors, float(pcfg["pos_tiou"]),
                              int(pcfg["window_rows"]), seed)
    return _Objective(net, prep.pos_share, float(pcfg["regress_weight"])), dataset, collate


class _Objective(nn.Module):
    """The loss as a forward, so that DistributedDataParallel synchronises the gradients."""

    def __init__(self, net: ProposalNet, pos_share: np.ndarray, regress_weight: float):
        super().__init__()
        self.net = net
        self.regress_weight = regress_weight
        self.register_buffer("pos_share", torch.as_tensor(pos_share, dtype=torch.float32))

    def forward(self, batch) -> torch.Tensor:
        logits, offsets = self.net(batch.feats, batch.lengths)
        weight = batch.mask[..., None] * batch.usable
        loss = weighted_bce(logits, batch.labels, weight, self.pos_share)
        if offsets is not None:
            loss = loss + self.regress_weight * boundary_loss(offsets, batch.offsets, weight * batch.labels)
        return loss


def _train_epoch(objective: nn.Module, net: nn.Module, optimizer, loader: DataLoader, device: torch.device,
                 clip: float, desc: str, progress: bool) -> float:
    """One pass over this rank's batches; returns the mean loss."""
    net.train()
    total, n = 0.0, 0
    for batch in progress_bar(loader, desc=desc, enabled=progress, leave=False):
        loss = objective(batch.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        if not np.isfinite(float(loss.detach())):
            raise NonFiniteLoss.at(f"the proposal loss is {float(loss.detach())} at batch {n + 1} of {desc}",
                                   "proposals.lr")
        total, n = total + float(loss.detach()), n + 1
    return total / max(n, 1)


def validate(net: nn.Module, anchors: np.ndarray, store_path: str, videos: list[VideoTimes], pcfg: dict,
             device: torch.device, pos_share: np.ndarray) -> dict:
    """AR@AN of the held-out videos' proposals: AUC (model selection), AR@10, recall@0.5 with 10."""
    from features_store import open_store

    proposer = Proposer(net.eval(), anchors, {"config": {"proposals": pcfg}}, device,
                        np.asarray(pos_share, dtype=np.float64))
    with open_store(store_path, "r") as store:
        props, _ = propose_corpus(proposer, store, [v.store_id for v in videos], pcfg)
    gt = {v.store_id: v.gt.tolist() for v in videos}
    curve = ar_an(gt, props)
    net.train()
    calibration = calibrate_threshold(props, gt, int(pcfg["max_events"]))
    return {"val_auc": curve.auc, "val_ar10": curve.ar_at(10), "val_r05_10": recall_at(gt, props, 10, 0.5),
            "val_events_f1": calibration["f1"], "calibration": calibration}


def events_line(calibration: dict | None) -> str:
    """`; events: threshold 0.62 -> 3.4 per video (references 3.6), F1 0.55 at tIoU 0.5` (empty without one)."""
    if not calibration or calibration.get("threshold") is None:
        return ""
    c = calibration
    return (f"; events: threshold {c['threshold']:.3g} -> {c['events_per_video']:.1f} per video (references "
            f"{c['refs_per_video']:.1f}), F1 {c['f1']:.2f} at tIoU 0.5")


def _log_row(save_dir: Path, row: dict) -> None:
    path = save_dir / CSV_NAME
    new = not path.exists()
    cols = ("time", "epoch", "loss", "val_auc", "val_ar10", "val_r05_10", "val_events_f1")
    with path.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        if new:
            writer.writeheader()
        writer.writerow({"time": f"{time.time():.3f}", **{k: (f"{v:.6g}" if isinstance(v, float) else v)
                                                        for k, v in row.items() if k in cols}})


def _start(cfg: dict, save_dir: str | Path | None, resume: str | None) -> tuple[dict, Path, dict | None]:
    """(config, run folder, checkpoint to continue or None)."""
    if not resume:
        return cfg, Path(save_dir or cfg["train"]["save_dir"]), None
    ckpt = load_proposal_checkpoint(resume, prefer=(LAST, BEST))
    saved = copy.deepcopy(ckpt["config"])
    for key in RUNTIME_KEYS:
        saved["proposals"][key] = cfg["proposals"][key]
    logger.info("resuming %s after epoch %d", ckpt["path"], ckpt["epoch"])
    return saved, Path(ckpt["path"]).parent, ckpt


def train_proposals(cfg: dict, store_path: str, train_paths: list[str], save_dir: str | Path | None = None,
                    resume: str | None = None, progress: bool = True) -> ProposalRun:
    """Train (or resume) the proposal model; see the module docstring."""
    cfg, run_dir, ckpt = _start(copy.deepcopy(cfg), save_dir, resume)
    want = str(cfg["proposals"]["device"])
    dist_info = distributed.setup(device_kind(want, "proposals.device"))
    try:
        return _fit(cfg, store_path, train_paths, run_dir, ckpt, progress, dist_info)
    finally:
        distributed.teardown(dist_info)


def _fit(cfg: dict, store_path: str, train_paths: list[str], run_dir: Path, ckpt: dict | None, progress: bool,
         dist_info: distributed.DistInfo) -> ProposalRun:
    t0 = time.perf_counter()
    pcfg = cfg["proposals"]
    device = distributed.resolve_device(str(pcfg["device"]), dist_info)
    prep = prepare(cfg, store_path, train_paths, ckpt)
    seed, main = int(pcfg["seed"]), dist_info.is_main
    torch.manual_seed(seed)
    net = build_proposal_net(pcfg, prep.feat_dim, len(prep.anchors)).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=float(pcfg["lr"]), weight_decay=float(pcfg["weight_decay"]))
    epoch, best = 0, {"value": None, "epoch": None}
    if ckpt is not None:
        load_weights(net, ckpt["model"], ckpt.get("path", "the resumed run"), "proposal-model")
        optimizer.load_state_dict(ckpt["optimizer"])
        epoch, best = int(ckpt["epoch"]), dict(ckpt["best"])
        torch.set_rng_state(ckpt["rng"])
    if dist_info.rank:
        torch.manual_seed(seed * 1000003 + dist_info.rank * 7919 + epoch)  # dropout differs per rank
    objective, dataset, collate_fn = _training_parts(pcfg, prep, store_path, seed, net)
    objective = objective.to(device)
    if dist_info.enabled:
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=[dist_info.local_rank]
                                                        if device.type == "cuda" else None)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if ckpt is None:
            (run_dir / BEST).unlink(missing_ok=True)  # never let a new run report an old run's best
    history, timing = [], {"setup_s": time.perf_counter() - t0, "train_s": 0.0, "epochs": 0}
    state = {"cfg": cfg, "prep": prep, "net": net, "optimizer": optimizer, "run_dir": run_dir}
    while epoch < int(pcfg["epochs"]):
        dataset.set_epoch(epoch)
        batches = epoch_batches(prep.train, int(pcfg["batch_size"]), seed, epoch, dist_info.rank,
                                dist_info.world_size)
        loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn,
                            num_workers=int(cfg["data"]["num_workers"]))
        t_epoch = time.perf_counter()
        loss = _train_epoch(objective, net, optimizer, loader, device, float(pcfg["clip_norm"]),
                            f"proposals epoch {epoch + 1}/{pcfg['epochs']}", progress and main)
        timing["train_s"] += time.perf_counter() - t_epoch
        timing["epochs"] += 1
        epoch += 1
        row = {"epoch": epoch, "loss": loss, **_maybe_validate(state, epoch, main, device)}
        history.append(row)
        if main:
            best = _save(state, epoch, best, row)
        distributed.barrier(dist_info)
    best_path = run_dir / BEST if (run_dir / BEST).exists() else run_dir / LAST
    return ProposalRun(best_path, run_dir / LAST, net, prep.anchors, history, timing)


def _maybe_validate(state: dict, epoch: int, main: bool, device: torch.device) -> dict:
    pcfg, prep = state["cfg"]["proposals"], state["prep"]
    interval = int(pcfg["valid_interval"])
    if not (main and prep.val and interval > 0 and epoch % interval == 0):
        return {}
    return validate(state["net"], prep.anchors, prep.store_meta["store_path"], prep.val, pcfg, device,
                    prep.pos_share)


def _save(state: dict, epoch: int, best: dict, row: dict) -> dict:
    """proposals_last.pt always; proposals_best.pt when the held-out AUC improves (or with no held-out set)."""
    prep, run_dir = state["prep"], state["run_dir"]
    value = row.get("val_auc")
    improved = value is not None and (best["value"] is None or value > best["value"])
    if improved:
        best = {"value": value, "epoch": epoch}
    logger.info("proposals epoch %d: loss %.4f%s", epoch, row["loss"],
                f", held-out AUC {value:.2f} AR@10 {row['val_ar10']:.3f}" + (" (best so far)" if improved else "")
                + events_line(row.get("calibration")) if value is not None else "")
    ckpt = {"format": FORMAT, "version": VERSION, "model": state["net"].state_dict(),
            "optimizer": state["optimizer"].state_dict(), "rng": torch.get_rng_state(), "epoch": epoch,
            "anchors": prep.anchors.tolist(), "pos_share": prep.pos_share.tolist(), "feat_dim": prep.feat_dim,
            "config": _plain(state["cfg"]), "store_meta": prep.store_meta, "best": dict(best),
            "val_videos": prep.val_ids, "metrics": _plain({k: v for k, v in row.items() if k != "calibration"}),
            "calibration": _plain(row.get("calibration"))}
    save_checkpoint(ckpt, run_dir / LAST)
    if improved or not prep.val:
        save_checkpoint(ckpt, run_dir / BEST)
    _log_row(run_dir, row)
    return best
