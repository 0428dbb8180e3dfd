"""Caption segments -> padded batches of feature rows and word indices.

* Rows are read lazily, per segment, with the store's own time-alignment rule
  (``store.get(video_id, start, end)``; a segment it refuses gets the rows of
  ``features_store.alignment.rows_for_segment``), inside the DataLoader workers; each
  worker process opens its own store handle (a handle is never shared across a
  fork).
* A segment with more than ``max_rows`` rows is subsampled uniformly (rows at
  ``linspace(0, n-1, max_rows)``), deterministic, so resuming replays the same data.
* :class:`BucketBatchSampler` groups segments of similar length (seconds, which
  is proportional to rows at a fixed frame rate, so no feature is read to
  plan an epoch); the order of an epoch is a pure function of (seed, epoch), and
  under DistributedDataParallel each rank takes its own share of the batches.
* Annotation ids are matched to store ids exactly first; a missing id is then
  tried with the ``v_`` prefix added or removed (ActivityNet files name videos
  ``v_<id>``, YouCook2 files and ``.npy`` imports often do not).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from caption_model.formats.text import PAD
from etspipe.errors import UserError

logger = logging.getLogger(__name__)


def open_store(path: str, mode: str = "r"):
    """The feature store (imported late so that the caption model can be imported without zarr)."""
    from features_store import open_store as _open

    return _open(path, mode)


@dataclass(frozen=True)
class Item:
    """One training example: where its rows are in the store and its word indices."""

    store_id: str
    start: float
    end: float
    tokens: tuple[int, ...]  # <s> w1 .. wn <e>


def subsample_rows(rows: np.ndarray, max_rows: int) -> np.ndarray:
    """At most `max_rows` rows, taken uniformly over the segment (first and last kept)."""
    n = rows.shape[0]
    if max_rows <= 0 or n <= max_rows:
        return rows
    idx = np.linspace(0, n - 1, max_rows).round().astype(np.int64)
    return rows[idx]


def fallback_rows(store, store_id: str, start: float, end: float) -> np.ndarray:
    """Rows of a segment that the store's strict read refuses, by the one alignment rule.

    The store rejects an empty segment (``start == end``, kept by the annotation
    rules and counted there) and one lying outside its copy of the video (whose
    duration may differ from the annotation's). Training then takes what evaluation
    and prediction take (`rows_for_segment`, docs/ARCHITECTURE.md "the alignment
    rule"): the row nearest to the segment's time. The store has no public read of
    a row slice, so such a (rare) segment reads its video's rows whole.
    """
    from features_store.alignment import rows_for_segment

    duration = float(store.video_meta(store_id)["duration"])
    sel, _case = rows_for_segment(store.row_times(store_id), start, end, duration)
    return store.rows(store_id)[sel]


class SegmentDataset(Dataset):
    """Items -> (rows float32 (n, D), tokens int64 (L,), index); rows read from the store on demand."""

    def __init__(self, store_path: str, items: Sequence[Item], max_rows: int):
        self.store_path, self.items, self.max_rows = str(store_path), list(items), int(max_rows)
        self._store = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _get_store(self):
        if self._store is None or self._pid != os.getpid():  # one handle per (worker) process
            self._store = open_store(self.store_path, "r")
            self._pid = os.getpid()
        return self._store

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_store"], state["_pid"] = None, None
        return state

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        item = self.items[index]
        store = self._get_store()
        try:
            rows, _times = store.get(item.store_id, item.start, item.end)
        except UserError:  # SegmentError: zero-length, or outside the store's copy of the video
            rows = fallback_rows(store, item.store_id, item.start, item.end)
        rows = subsample_rows(np.asarray(rows, dtype=np.float32), self.max_rows)
        return rows, np.asarray(item.tokens, dtype=np.int64), index


@dataclass
class Batch:
    """Padded tensors of one batch; `index` says which dataset items they are."""

    feats: torch.Tensor  # (B, T, D) float32
    feat_mask: torch.Tensor  # (B, T) bool
    tokens: torch.Tensor  # (B, L) int64, PAD-padded
    index: torch.Tensor  # (B,) int64

    def to(self, device: torch.device | str) -> Batch:
        nb = torch.device(device).type == "cuda"
        return Batch(self.feats.to(device, non_blocking=nb), self.feat_mask.to(device, non_blocking=nb),
                     self.tokens.to(device, non_blocking=nb), self.index)

    def pin_memory(self) -> Batch:
        return Batch(self.feats.pin_memory(), self.feat_mask.pin_memory(), self.tokens.pin_memory(), self.index)


def collate(samples: Sequence[tuple[np.ndarray, np.ndarray, int]]) -> Batch:
    """Pad rows and tokens; order by caption length, longest first (the decoder's batch then only shrinks)."""
    samples = sorted(samples, key=lambda s: -len(s[1]))
    B = len(samples)
    T = max(1, max(s[0].shape[0] for s in samples))
    L = max(len(s[1]) for s in samples)
    D = samples[0][0].shape[1]
    feats = np.zeros((B, T, D), dtype=np.float32)
    mask = np.zeros((B, T), dtype=bool)
    tokens = np.full((B, L), PAD, dtype=np.int64)
    for b, (rows, toks, _) in enumerate(samples):
        feats[b, : len(rows)] = rows
        mask[b, : len(rows)] = True
        tokens[b, : len(toks)] = toks
    index = torch.tensor([s[2] for s in samples], dtype=torch.long)
    return Batch(torch.from_numpy(feats), torch.from_numpy(mask), torch.from_numpy(tokens), index)


@dataclass
class BatchParts:
    """One optimiser step's segments as consecutive padded parts of at most ``max_rows`` padded rows each.

    Made by `collate_parts` when ``train.max_batch_rows`` is set, so that a batch of long segments is
    never padded into one tensor (256 segments of ~3,750 rows of 2048-d would be ~8 GB before any part
    runs).
    """

    parts: list[Batch]

    @property
    def index(self) -> torch.Tensor:
        return torch.cat([p.index for p in self.parts])

    def to(self, device: torch.device | str) -> BatchParts:
        return BatchParts([p.to(device) for p in self.parts])

    def pin_memory(self) -> BatchParts:
        return BatchParts([p.pin_memory() for p in self.parts])


def collate_parts(samples: Sequence[tuple[np.ndarray, np.ndarray, int]], max_rows: int) -> Batch | BatchParts:
    """`collate`, or with `max_rows` > 0 the samples longest first in parts of at most `max_rows` padded rows
    (segments x that part's longest), each part at least one segment."""
    if max_rows <= 0:
        return collate(samples)
    samples = sorted(samples, key=lambda s: -s[0].shape[0])
    parts, current, longest = [], [], 0
    for sample in samples:
        n = max(sample[0].shape[0], 1)
        if current and (len(current) + 1) * max(longest, n) > max_rows:
            parts.append(collate(current))
            current, longest = [], 0
        current.append(sample)
        longest = max(longest, n)
    parts.append(collate(current))
    return parts[0] if len(parts) == 1 else BatchParts(parts)


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of segments of similar length, in an order fixed by (seed, epoch).

    Each epoch: shuffle all items, cut them into pools of ``pool_batches`` batches,
    sort each pool by length, cut it into batches, shuffle the batches. With
    ``world_size > 1`` rank r takes batches r, r + world, ... and every rank gets
    the same number (the remainder is dropped), as DDP needs equal step counts.
    ``set_epoch(epoch, skip)`` starts an epoch after its first `skip` batches (resume).
    """

    def __init__(self, lengths: Sequence[float], batch_size: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, pool_batches: int = 50):
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.batch_size, self.seed, self.shuffle = int(batch_size), int(seed), shuffle
        self.rank, self.world_size, self.pool_batches = rank, world_size, pool_batches
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    def _all_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:  # validation: sorted by length, fixed
            order = np.argsort(self.lengths, kind="stable")
            return [order[i: i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n)
        pool = self.batch_size * self.pool_batches
        batches = []
        for p in range(0, n, pool):
            chunk = order[p: p + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i: i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        perm = rng.permutation(len(batches))
        return [batches[i] for i in perm]

    def epoch_batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch, before skipping."""
        batches = self._all_batches()
        if self.world_size > 1:
            per_rank = len(batches) // self.world_size
            batches = batches[self.rank::self.world_size][:per_rank]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches()[self.skip:]

    def __len__(self) -> int:
        return max(len(self.epoch_batches()) - self.skip, 0)
