"""The boundary-matching proposer's grid and targets: positions, (start, length) cells, their tIoU.

A video's rows become at most ``proposals.bm_positions`` *positions*: a video
with that many rows or fewer keeps its rows as they are (positions = rows, so
proposal edges are row edges and `alignment.select_rows` maps them back
exactly); a longer one is averaged onto equal time spans (each position is the
time-weighted mean of the rows it overlaps), so every video costs at most a
fixed amount and the cell grid stays bounded however long the video is.

A *cell* is a candidate event: a start edge ``s`` (0..T-1) and a length from a
fixed set of lengths in positions, log-spaced (`length_grid`): tIoU between two
aligned segments is the ratio of their lengths, so log spacing gives every
duration the same worst-case loss from the grid, and the short lengths (1, 2,
3, ... positions) are all present, which is where short events sit. Cells that
run past the video's last position are invalid.

Targets, all from metadata and annotations (no feature read): each cell's best
tIoU with a reference (the confidence map), the offsets onto that reference, the
classification map's weighted positives, and per position whether an event
starts or ends near it (within 1.5 positions, BMN's boundary region of three
positions). Training samples are whole videos, or (``proposals.bm_crop`` of the
time) a random 50-100 % window of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import torch

from caption_model.proposals.data import StoreVideos, VideoTimes

BOUNDARY_REACH = 1.5  # positions either side of a reference boundary that count as "starts/ends here"


def length_grid(max_positions: int, n_lengths: int) -> np.ndarray:
    """Distinct integer lengths (positions), log-spaced from 1 to `max_positions`, sorted."""
    raw = np.exp(np.linspace(0.0, np.log(max(int(max_positions), 1)), max(int(n_lengths), 1)))
    return np.unique(np.maximum(np.rint(raw), 1).astype(np.int64))


def position_edges(edges: np.ndarray, max_positions: int) -> np.ndarray:
    """Time edges (seconds) of a video's positions: its row edges, or `max_positions` equal spans of them."""
    edges = np.asarray(edges, dtype=np.float64)
    if len(edges) - 1 <= int(max_positions):
        return edges
    return np.linspace(edges[0], edges[-1], int(max_positions) + 1)


def positions(rows: np.ndarray, edges: np.ndarray, max_positions: int) -> tuple[np.ndarray, np.ndarray]:
    """(position features (T, D) float32, position edges (T+1,) seconds) of one video's rows.

    A pooled position is the time-weighted mean of the rows it overlaps (row i holds
    from ``edges[i]`` to ``edges[i + 1]``): the integral of that step function, read
    from its prefix sums at the position edges, over the position's length. O(rows x D),
    where a (positions x rows) weight matrix was 4 ms of a 430-row video's 18 ms load.
    """
    pos_edges = position_edges(edges, max_positions)
    feats = np.asarray(rows, dtype=np.float32)
    edges = np.asarray(edges, dtype=np.float64)
    if len(pos_edges) == len(edges) and np.array_equal(pos_edges, edges):
        return np.array(feats, dtype=np.float32), pos_edges  # a copy: store reads may be read-only
    width = np.diff(edges).astype(np.float32)
    prefix = np.zeros((len(feats) + 1, feats.shape[1]), dtype=np.float32)
    np.cumsum(feats * width[:, None], axis=0, out=prefix[1:])
    row = np.clip(np.searchsorted(edges, pos_edges, side="right") - 1, 0, len(feats) - 1)
    integral = prefix[row] + (pos_edges - edges[row]).astype(np.float32)[:, None] * feats[row]
    span = np.diff(pos_edges).astype(np.float32)[:, None]
    return np.diff(integral, axis=0) / np.where(span > 0, span, np.float32(1.0)), pos_edges


def cell_segments(pos_edges: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(segments (T, K, 2) seconds, valid (T, K)) of every cell; invalid cells hold zero-length segments."""
    n = len(pos_edges) - 1
    start = np.arange(n)[:, None]
    end = start + np.asarray(lengths)[None, :]
    valid = end <= n
    end = np.minimum(end, n)
    return np.stack([pos_edges[np.broadcast_to(start, end.shape)], pos_edges[end]], axis=-1), valid


class CellTargets(NamedTuple):
    tiou: np.ndarray     # (T, K) best tIoU of each cell with a reference; 0 for invalid cells
    offsets: np.ndarray  # (T, K, 2) that reference's start and end minus the cell's, in cell lengths
    closest: np.ndarray  # (T, K) bool: the cell is the closest one of some reference
    owner: np.ndarray    # (T, K) int: index of that best reference (0 where there is none)


def cell_targets(pos_edges: np.ndarray, lengths: np.ndarray, gt: np.ndarray) -> CellTargets:
    """Every cell's targets against the references `gt` (n, 2) seconds.

    Offsets are what moves a cell onto its event off the grid (the proposal keeps
    the cell's score, its edges move). The closest cells matter for short events: a
    6-position event whose edges fall between positions may have no cell at tIoU 0.9,
    and without its closest cell as a positive the classification map would learn it
    as background.
    """
    segs, valid = cell_segments(pos_edges, lengths)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    if not len(gt):
        return CellTargets(np.zeros(valid.shape, dtype=np.float32), np.zeros((*valid.shape, 2), dtype=np.float32),
                           np.zeros(valid.shape, dtype=bool), np.zeros(valid.shape, dtype=np.int64))
    s = np.maximum(segs[..., None, 0], gt[:, 0])
    e = np.minimum(segs[..., None, 1], gt[:, 1])
    inter = np.clip(e - s, 0.0, None)
    union = (segs[..., 1] - segs[..., 0])[..., None] + (gt[:, 1] - gt[:, 0]) - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0) * valid[..., None]
    owner = iou.argmax(axis=-1)
    width = np.maximum(segs[..., 1] - segs[..., 0], 1e-9)[..., None]
    offsets = (gt[owner] - segs) / width * valid[..., None]
    top = iou.max(axis=(0, 1))  # (G,) each reference's closest cell
    closest = ((iou >= top - 1e-9) & (top > 0)).any(axis=-1)
    return CellTargets(iou.max(axis=-1).astype(np.float32), offsets.astype(np.float32), closest, owner)


def positive_weights(tiou: np.ndarray, closest: np.ndarray, owner: np.ndarray, cls_tiou: float) -> np.ndarray:
    """The classification map's positives (T, K), each weighted 1 / (positives of the same reference).

    Why per reference: a long event has tens of cells at tIoU >= 0.9 (many starts and
    lengths fit it), a short one one or two; counted per cell the long events own the
    positives' half of the loss and short cells learn low probabilities (on the proxy the
    closest cell of an event under 10 s had a median class probability of 0.31 against
    0.84 for events over 68 s). Each reference now weighs the same, whatever its length.
    """
    positive = (tiou >= cls_tiou) | closest
    weights = np.zeros(tiou.shape, dtype=np.float32)
    if positive.any():
        counts = np.bincount(owner[positive])
        weights[positive] = 1.0 / counts[owner[positive]]
    return weights


def boundary_targets(pos_edges: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position: an event starts at its left edge / ends at its right edge, within `BOUNDARY_REACH` (T,) x2."""
    n = len(pos_edges) - 1
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    if not len(gt):
        return np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.float32)
    where = np.interp(np.clip(gt, pos_edges[0], pos_edges[-1]), pos_edges, np.arange(n + 1))  # fractional edges
    left, right = np.arange(n, dtype=np.float64), np.arange(1, n + 1, dtype=np.float64)
    starts = (np.abs(left[:, None] - where[None, :, 0]) < BOUNDARY_REACH).any(axis=1)
    ends = (np.abs(right[:, None] - where[None, :, 1]) < BOUNDARY_REACH).any(axis=1)
    return starts.astype(np.float32), ends.astype(np.float32)


def usable_videos(videos: Sequence[VideoTimes]) -> list[VideoTimes]:
    """Training videos with at least one reference (an empty map teaches nothing but 'no event')."""
    return [v for v in videos if len(v.gt)]


def crop_window(n_rows: int, rng: np.random.Generator, share: float) -> tuple[int, int]:
    """Rows [a, b) a training sample sees: the whole video, or with probability `share` a random
    window of 50-100 % of it (as SST's training windows: the same 300 videos give new maps every
    epoch; without it the proxy's held-out AUC fell after epoch 7 of 10 while the loss kept falling)."""
    if n_rows < 4 or rng.random() >= share:
        return 0, n_rows
    width = max(2, int(round(n_rows * rng.uniform(0.5, 1.0))))
    start = int(rng.integers(0, n_rows - width + 1))
    return start, start + width


def window_references(gt: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """References of a window [t0, t1]: clipped to it, kept when at least half of the reference is inside."""
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    clipped = np.stack([np.maximum(gt[:, 0], t0), np.minimum(gt[:, 1], t1)], axis=1)
    inside = clipped[:, 1] - clipped[:, 0]
    keep = inside >= 0.5 * np.maximum(gt[:, 1] - gt[:, 0], 1e-9)
    return clipped[keep & (inside > 0)]


class BMDataset(StoreVideos):
    """(positions (T, D), cell tIoU (T, K), offsets (T, K, 2), positive weights (T, K), starts (T,), ends (T,))
    of one video, or of a window of it: the training sample."""

    def __init__(self, store_path: str, videos: Sequence[VideoTimes], lengths: np.ndarray, max_positions: int,
                 seed: int = 0, crop: float = 0.0, cls_tiou: float = 0.9):
        super().__init__(store_path, videos, seed)
        self.lengths = np.asarray(lengths)
        self.max_positions = int(max_positions)
        self.crop = float(crop)
        self.cls_tiou = float(cls_tiou)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        v = self.videos[index]
        rows, edges, gt = self.rows(v.store_id), np.asarray(v.edges), v.gt
        if self.crop > 0:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            a, b = crop_window(min(len(rows), len(edges) - 1), rng, self.crop)
            if (a, b) != (0, len(edges) - 1):
                rows, edges = rows[a:b], edges[a:b + 1]
                gt = window_references(gt, float(edges[0]), float(edges[-1]))
        feats, pos_edges = positions(rows, edges, self.max_positions)
        starts, ends = boundary_targets(pos_edges, gt)
        cells = cell_targets(pos_edges, self.lengths, gt)
        weights = positive_weights(cells.tiou, cells.closest, cells.owner, self.cls_tiou)
        return feats, cells.tiou, cells.offsets, weights, starts, ends


@dataclass
class BMBatch:
    feats: torch.Tensor     # (B, T, D)
    n_pos: torch.Tensor     # (B,) real positions
    tiou: torch.Tensor      # (B, T, K)
    offsets: torch.Tensor   # (B, T, K, 2)
    positive: torch.Tensor  # (B, T, K) the classification map's positives, weighted (`positive_weights`)
    starts: torch.Tensor    # (B, T)
    ends: torch.Tensor      # (B, T)

    def to(self, device: torch.device) -> BMBatch:
        return BMBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


def bm_collate(samples: Sequence[tuple[np.ndarray, ...]]) -> BMBatch:
    """Pad the videos of a batch to the longest one (padding is masked by `n_pos`, its targets are 0)."""
    n = max(len(s[0]) for s in samples)
    out = []
    for j in range(len(samples[0])):
        first = samples[0][j]
        padded = torch.zeros(len(samples), n, *first.shape[1:])
        for i, sample in enumerate(samples):
            padded[i, :len(sample[j])] = torch.from_numpy(np.asarray(sample[j], dtype=np.float32))
        out.append(padded)
    feats, *targets = out
    return BMBatch(feats, torch.tensor([len(s[0]) for s in samples]), *targets)
