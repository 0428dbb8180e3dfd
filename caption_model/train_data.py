"""What a training run reads: annotations matched to the store, the held-out split, the vocabulary, the loaders."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from caption_model.dataset import BucketBatchSampler, Item, SegmentDataset, collate_parts, open_store
from caption_model.formats.annotations import Segment, load_annotations, match_store, split_by_video
from caption_model.formats.text import Vocab, tokenize
from caption_model.runs import distributed
from caption_model.runs.checkpoint import check_feat_dim
from caption_model.runs.run_folder import Start, claim_folder, plain, write_run_files
from caption_model.runs.stop_request import ignore_sigint
from etspipe.errors import UserError
from features_store.projection import PCA_AUX

logger = logging.getLogger(__name__)


@dataclass
class RunData:
    """The segments, vocabulary and store facts a run trains on."""

    vocab: Vocab
    feat_dim: int
    store_meta: dict
    train_items: list[Item]
    val_items: list[Item]
    val_refs: list[str]  # tokenised reference of each validation item
    val_videos: list[str]
    projection: dict | None = None  # the store's PCA projection, carried in the checkpoint (checkpoint_arrays)


def checkpoint_arrays(arrays: dict | None) -> dict | None:
    """A store's projection arrays as a checkpoint holds them (tensors and strings: loads with weights_only).

    A model trained on rows that went through a projection needs that projection to caption a raw video
    in a new working store (`caption_model.predict.create_cache_store` puts it back there).
    """
    if arrays is None:
        return None
    out = {}
    for name, value in arrays.items():
        value = np.asarray(value)
        out[name] = value.item() if value.dtype.kind in "US" else torch.from_numpy(value.copy(order="C"))
    return out


def prepare_data(start: Start, store_path: str, train_paths: list[str], main: bool, overwrite: bool) -> RunData:
    """Annotations, store, split, vocabulary; all checked before anything is written (a mistake leaves no files)."""
    dcfg = start.cfg["data"]
    segments, report = load_annotations(train_paths)
    store = open_store(store_path, "r")
    try:
        feat_dim, store_meta = int(store.dim), plain(dict(store.meta))
        kept, skipped = match_store(segments, store.complete_ids(), store.failed())
        projection = checkpoint_arrays(store.read_aux(PCA_AUX))
    finally:
        store.close()
    for source in (start.ckpt, start.init):
        if source is not None:
            check_feat_dim(source, feat_dim, store_path)
    if main:
        claim_folder(start.save_dir, start.resumed, overwrite)
        write_run_files(start, report, skipped)
    if skipped:
        logger.warning("%d of %d annotated videos are not usable in store %s (list: %s)", len(skipped),
                       report["videos"], store_path, start.save_dir / "skipped_videos.txt")
    if not kept:
        raise UserError(f"none of the videos of {', '.join(map(str, train_paths))} is complete in store {store_path}")
    usable = [s for s, _ in kept]
    if start.ckpt is not None:
        val_ids = set(start.ckpt["val_videos"])
        train_segs = [s for s in usable if s.video_id not in val_ids]
        val_segs = [s for s in usable if s.video_id in val_ids]
    else:
        train_segs, val_segs = split_by_video(usable, float(dcfg["val_fraction"]), int(dcfg["split_seed"]))
    if not train_segs:
        raise UserError("no training segment left after holding out the validation videos")
    source = start.ckpt or start.init
    if source is not None:
        vocab = Vocab.from_dict(source["vocab"])
    else:
        vocab = Vocab.build((tokenize(s.sentence) for s in train_segs), int(dcfg["min_word_count"]))
    if main:
        vocab.save_txt(start.save_dir / "vocab.txt")
    logger.info("%d training / %d validation segments (%d / %d videos), vocabulary %d words, %d-d features",
                len(train_segs), len(val_segs), len({s.video_id for s in train_segs}),
                len({s.video_id for s in val_segs}), len(vocab), feat_dim)
    store_id = {(s.video_id, s.start, s.end, s.sentence): sid for s, sid in kept}
    max_words = int(dcfg["max_caption_words"])

    def items_of(segs: list[Segment]) -> list[Item]:
        return [Item(store_id[(s.video_id, s.start, s.end, s.sentence)], s.start, s.end,
                     tuple(vocab.encode(tokenize(s.sentence), max_words))) for s in segs]

    return RunData(vocab, feat_dim, store_meta, items_of(train_segs), items_of(val_segs),
                   [" ".join(tokenize(s.sentence)) for s in val_segs], sorted({s.video_id for s in val_segs}),
                   projection)


def loaders(cfg: dict, data: RunData, store_path: str, device: torch.device,
             dist_info: distributed.DistInfo) -> tuple[DataLoader, DataLoader | None]:
    """Bucketed batches; the training order is a pure function of (seed, epoch), validation is sorted by length."""
    dcfg, tcfg = cfg["data"], cfg["train"]
    seed, workers, batch_size = int(tcfg["seed"]), int(dcfg["num_workers"]), int(tcfg["batch_size"])
    sampler = BucketBatchSampler([i.end - i.start for i in data.train_items], batch_size, seed=seed,
                                 rank=dist_info.rank, world_size=dist_info.world_size)
    collate = functools.partial(collate_parts, max_rows=int(tcfg["max_batch_rows"]))  # long batches come in parts
    loader_kw = dict(collate_fn=collate, num_workers=workers, pin_memory=device.type == "cuda",
                     persistent_workers=workers > 0, worker_init_fn=ignore_sigint if workers else None)
    train_loader = DataLoader(SegmentDataset(store_path, data.train_items, int(dcfg["max_rows"])),
                              batch_sampler=sampler, generator=torch.Generator().manual_seed(seed), **loader_kw)
    if not (data.val_items and dist_info.is_main):
        return train_loader, None
    val_sampler = BucketBatchSampler([i.end - i.start for i in data.val_items], batch_size, shuffle=False)
    val_loader = DataLoader(SegmentDataset(store_path, data.val_items, int(dcfg["max_rows"])),
                            batch_sampler=val_sampler, generator=torch.Generator().manual_seed(seed), **loader_kw)
    return train_loader, val_loader
