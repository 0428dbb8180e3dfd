"""Training data of the proposal model: per video, its rows and the (row, anchor) labels.

Everything but the rows comes from the store's metadata (row times, duration)
and the annotations, so anchors and loss weights are planned without reading a
feature. Rows are read per video inside the DataLoader (each worker opens its
own store handle). A video longer than the training window trains on one
window per epoch, at an offset that is a pure function of (seed, epoch, video),
so a resumed run sees the same data. At test time the whole video runs and
every anchor is scored at every row, so training must see every anchor length
at every position too: the window holds at least twice the longest anchor
(`training_window`), and an anchor is trained only where it lies wholly inside
the window (one clipped at the video's first row is a real segment, but only
a window starting at row 0 holds it); the others are masked, as their labels
depend on rows the pass never saw.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from caption_model.formats.annotations import Segment
from caption_model.proposals.model import anchor_bounds, anchor_labels, anchor_targets, row_edges
from etspipe.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoTimes:
    """One store video: its id, row edges in seconds and ground-truth segments (n, 2)."""

    store_id: str
    edges: np.ndarray
    gt: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.edges) - 1


def video_times(store, store_id: str, segments: Sequence[Segment] = ()) -> VideoTimes:
    """Row edges of a store video (from its metadata only) and the given segments as an array."""
    meta = store.video_meta(store_id)
    edges = row_edges(store.row_times(store_id), float(meta["duration"]))
    gt = np.array([[s.start, s.end] for s in segments], dtype=np.float64).reshape(-1, 2)
    return VideoTimes(store_id, edges, gt)


def segment_rows(edges: np.ndarray, start: float, end: float) -> int:
    """How many rows a segment spans (row centres inside it, at least one): its length for the anchors."""
    centres = (edges[:-1] + edges[1:]) / 2.0
    inside = int(((centres >= start) & (centres <= end)).sum())
    return max(inside, 1)


def anchors_fit(videos: Sequence[VideoTimes], store_path: str) -> np.ndarray:
    """Lengths in rows of all training segments; refuses a store whose rows are too coarse for events.

    When most segments fall inside a single row, every anchor is one row long
    and a proposal cannot say where an event starts or ends: the store needs
    finer rows (a smaller stride), not a proposal model.
    """
    lengths = np.array([segment_rows(v.edges, s, e) for v in videos for s, e in v.gt], dtype=np.float64)
    if not lengths.size:
        raise UserError("no training segment to learn proposal anchors from")
    if np.median(lengths) < 2:
        spacing = np.median(np.concatenate([np.diff(v.edges) for v in videos]))
        seconds = np.median(np.concatenate([v.gt[:, 1] - v.gt[:, 0] for v in videos if len(v.gt)]))
        raise UserError(f"store {store_path}: rows are {spacing:.3g} s apart but the training segments last "
                        f"{seconds:.3g} s (median), under 2 rows: the rows cannot carry proposal anchors "
                        "(extract with a smaller stride)")
    return lengths


def positive_share(videos: Sequence[VideoTimes], anchors: np.ndarray, pos_tiou: float) -> np.ndarray:
    """Per anchor, the share of (row, video) places that are positive: SST's loss weights (K,)."""
    pos = np.zeros(len(anchors))
    total = 0
    for v in videos:
        pos += anchor_labels(v.edges, anchors, v.gt, pos_tiou).sum(axis=0)
        total += v.n_rows
    return np.clip(pos / max(total, 1), 1e-3, 1 - 1e-3)


def training_window(window_rows: int, anchors: np.ndarray) -> int:
    """Rows per training window: ``proposals.window_rows``, raised to twice the longest anchor.

    A window shorter than an anchor never holds it whole, so that anchor would
    learn only its clipped form at a video's start and be scored everywhere
    else untrained (long events were found late and badly for that reason).
    """
    return max(int(window_rows), 2 * int(np.max(anchors)) if len(anchors) else 1)


def usable_anchors(anchor_start: np.ndarray, window_first_row: int) -> np.ndarray:
    """Which (row, anchor) places of a window are trained: the anchor starts inside the window.

    `anchor_start` is the window's rows of `anchor_bounds`' starts (video rows,
    clipped at 0). An anchor clipped at the video's row 0 is a real segment, and
    is inside only a window that starts at row 0, which this rule gives as is.
    """
    return anchor_start >= int(window_first_row)


def window_start(seed: int, epoch: int, index: int, n_rows: int, window: int) -> int:
    """Offset of this epoch's training window in a long video (0 when the video fits)."""
    if n_rows <= window:
        return 0
    digest = hashlib.sha1(f"{seed}:{epoch}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (n_rows - window + 1)


class StoreVideos(Dataset):
    """Training videos of a store, one sample each, drawn as a pure function of (seed, epoch, index).

    The store opens on first use, in whichever process (a DataLoader worker) reads it.
    """

    def __init__(self, store_path: str, videos: Sequence[VideoTimes], seed: int):
        self.store_path = store_path
        self.videos = list(videos)
        self.seed = int(seed)
        self.epoch = 0
        self._store = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.videos)

    def rows(self, store_id: str) -> np.ndarray:
        if self._store is None:
            from features_store import open_store

            self._store = open_store(self.store_path, "r")
        return self._store.rows(store_id)


class ProposalDataset(StoreVideos):
    """(rows, labels, mask of usable anchors, boundary offsets) of one video's training window."""

    def __init__(self, store_path: str, videos: Sequence[VideoTimes], anchors: np.ndarray, pos_tiou: float,
                 window_rows: int, seed: int):
        super().__init__(store_path, videos, seed)
        self.anchors = np.asarray(anchors)
        self.pos_tiou = float(pos_tiou)
        self.window = training_window(window_rows, self.anchors)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        v = self.videos[index]
        a = window_start(self.seed, self.epoch, index, v.n_rows, self.window)
        b = min(a + self.window, v.n_rows)
        rows = self.rows(v.store_id)[a:b]
        labels, offsets = anchor_targets(v.edges, self.anchors, v.gt, self.pos_tiou)
        start, _ = anchor_bounds(v.n_rows, self.anchors)
        usable = usable_anchors(start[a:b], a)
        return rows, labels[a:b], usable.astype(np.float32), offsets[a:b]


@dataclass
class ProposalBatch:
    feats: torch.Tensor    # (B, T, D)
    lengths: torch.Tensor  # (B,)
    labels: torch.Tensor   # (B, T, K)
    mask: torch.Tensor     # (B, T) real rows
    usable: torch.Tensor   # (B, T, K) anchors whose start lies in the window
    offsets: torch.Tensor  # (B, T, K, 2) boundary targets of the positives

    def to(self, device: torch.device) -> ProposalBatch:
        return ProposalBatch(*(t.to(device) for t in (self.feats, self.lengths, self.labels, self.mask, self.usable,
                                                       self.offsets)))


def collate(samples: Sequence[tuple[np.ndarray, ...]]) -> ProposalBatch:
    """Pad the videos of a batch to the longest one."""
    n = max(len(s[0]) for s in samples)
    dim, k = samples[0][0].shape[1], samples[0][1].shape[1]
    feats = torch.zeros(len(samples), n, dim)
    labels, usable = torch.zeros(len(samples), n, k), torch.zeros(len(samples), n, k)
    offsets = torch.zeros(len(samples), n, k, 2)
    mask = torch.zeros(len(samples), n)
    for i, (rows, lab, use, off) in enumerate(samples):
        t = len(rows)
        feats[i, :t] = torch.tensor(np.asarray(rows, dtype=np.float32))  # a copy: store reads may be read-only
        labels[i, :t], usable[i, :t], offsets[i, :t] = torch.from_numpy(lab), torch.from_numpy(use), \
            torch.from_numpy(off)
        mask[i, :t] = 1.0
    return ProposalBatch(feats, torch.tensor([len(s[0]) for s in samples]), labels, mask, usable, offsets)
