"""A boundary-matching proposer (after BMN, Lin et al., ICCV 2019): every (start, length) cell scored at once.

Why beside SST: SST scores K anchors that *end* at each row, from one recurrent
state, so a short event inside a long one competes with the long one for the
same state and loses its top-10 place to it; and a recurrence over whole videos
trains one step per row. Here each candidate segment has its own description,
built from what lies inside it and around it, so nested events are separate
cells by construction, and everything is convolutions and prefix sums, trained
in parallel over time.

The network, per video (positions and cells: `bm_data`):

* base: LayerNorm, dropout on the input rows (``bm_input_dropout``: a few hundred
  videos of 500-d rows are easy to memorise), projection, three temporal
  convolutions (kernel 3, dilations 1, 2, 4: 15 positions of context; a third one
  added 2 points of top-10 recall under 10 s on the proxy) -> a feature per position;
* boundaries: per position, the logits that an event starts at its left edge
  and that one ends at its right edge (BMN's temporal evaluation module);
* cells: five region means of the base features, each through its own linear
  map: inside the cell, its first and last quarter, and the half-length before
  and after it (context: an event is what differs from its surroundings). A
  mean over any span is two lookups in a prefix sum, so all T x K cells cost
  O(T K P) -- BMN samples 32 points per cell through a 3-D convolution instead,
  ~100x the arithmetic, which a CPU cannot train at the speed asked. Plus a
  learned embedding of the cell's length, then a small MLP -> four outputs per
  cell: a classification logit (tIoU >= ``bm_cls_tiou``, or the closest cell of a
  reference), a regression of the best tIoU itself (BMN's two confidence maps),
  and the start / end offsets (in cell lengths) that move the cell onto its event.

A cell's score is ``p_start * p_end * p_class * p_tIoU`` (BMN's fusion): all
four must agree; its segment is the cell moved by its offsets. Losses:
class-balanced cross-entropy for boundaries and the classification map (every
reference's positives weighing the same), a squared error on the tIoU map with
high / mid / low tIoU cells weighted 1 : 1 : 2 (BMN samples them so; weights do
the same without randomness), and smooth L1 on the offsets of cells near an event.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from caption_model.proposals.bm_data import cell_segments, length_grid, positions
from caption_model.proposals.model import rank_segments

REG_WEIGHT = 10.0  # the tIoU regression's weight (BMN's)
TIOU_GROUPS = (0.7, 0.3)  # high / mid / low tIoU cells in the regression loss
OFFSET_TIOU = 0.5  # cells at least this close to a reference learn the offsets onto it


def bm_lengths(pcfg: dict) -> np.ndarray:
    """The cell lengths (positions) a config gives."""
    return length_grid(int(pcfg["bm_positions"]), int(pcfg["bm_lengths"]))


class BMNet(nn.Module):
    """Positions (B, T, D) -> boundary logits (B, T, 2) and cells (B, T, K, 4): class and tIoU logits,
    start and end offsets in cell lengths."""

    def __init__(self, cfg: dict, feat_dim: int):
        super().__init__()
        hidden, cell = int(cfg["hidden_dim"]), int(cfg["bm_cell_dim"])
        lengths = torch.as_tensor(bm_lengths(cfg), dtype=torch.long)
        self.register_buffer("lengths", lengths, persistent=False)
        self.norm = nn.LayerNorm(feat_dim)
        self.proj = nn.Linear(feat_dim, hidden)
        self.drop = nn.Dropout(float(cfg["dropout"]))
        self.input_drop = nn.Dropout(float(cfg.get("bm_input_dropout", 0.0)))
        self.base = nn.ModuleList([nn.Conv1d(hidden, hidden, 3, padding=1),
                                   nn.Conv1d(hidden, hidden, 3, padding=2, dilation=2),
                                   nn.Conv1d(hidden, hidden, 3, padding=4, dilation=4)])
        self.boundary = nn.Conv1d(hidden, 2, 3, padding=1)
        self.regions = nn.Linear(hidden, 5 * cell)
        self.length_embed = nn.Embedding(len(lengths), cell)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(cell, cell), nn.ReLU(), nn.Linear(cell, 4))
        self.cell_dim = cell
        self.spans = self.region_spans()  # fixed by the lengths: not rebuilt every forward

    def region_spans(self) -> list[tuple[tuple[int, int], ...]]:
        """Per cell length L, the five regions as (first, past-last) offsets from the cell's start edge.

        Inside ``[0, L)``, first quarter ``[0, q)``, last quarter ``[L - q, L)``
        (q = ceil(L / 4)), before ``[-c, 0)`` and after ``[L, L + c)`` (c = ceil(L / 2),
        at least 2). Only before/after can cross a video's edge; they are clipped there.
        """
        spans = []
        for length in self.lengths.tolist():
            q, c = (length + 3) // 4, max((length + 1) // 2, 2)
            spans.append(((0, length), (0, q), (length - q, length), (-c, 0), (length, length + c)))
        return spans

    def forward(self, feats: torch.Tensor, n_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _ = feats.shape
        n_pos = n_pos.to(feats.device)
        real = (torch.arange(t, device=feats.device)[None, :] < n_pos[:, None]).float()
        x = self.drop(torch.relu(self.proj(self.input_drop(self.norm(feats))))) * real[..., None]
        x = x.transpose(1, 2)
        for conv in self.base:  # re-masked after each: a batch's padding must not reach a video's last positions
            x = torch.relu(conv(x)) * real[:, None, :]
        bound = self.boundary(x).transpose(1, 2)
        z = self.regions(self.drop(x.transpose(1, 2))) * real[..., None]           # (B, T, 5P)
        cells = self.region_means(z.view(b, t, 5, self.cell_dim), n_pos)
        cells = cells + self.length_embed.weight[:, None, None, :]
        return bound, self.head(cells).permute(2, 1, 0, 3)

    def region_means(self, z: torch.Tensor, n_pos: torch.Tensor) -> torch.Tensor:
        """(B, T, 5, P) per-region features (zero past each video's end) -> (K, T, B, P): for every cell,
        the sum over its five regions of that region's features averaged over the region."""
        b, t = z.shape[:2]
        z = z.permute(1, 2, 0, 3).reshape(t, 5, b * self.cell_dim)
        spans = self.spans
        left = max(-lo for sp in spans for lo, _ in sp)
        right = max(hi for sp in spans for _, hi in sp)
        # prefix sums over positions, padded so that every region is a plain slice: zeros before the
        # video, the total after it (rows past a video's end are zero, so clipped regions sum what is inside)
        prefix = torch.cat([z.new_zeros(left + 1, 5, z.shape[-1]), z.cumsum(dim=0)], dim=0)
        prefix = torch.cat([prefix, prefix[-1:].expand(right, -1, -1)], dim=0).contiguous()
        start = torch.arange(t, device=z.device)[:, None]
        scales = []
        for sp in spans:
            per_region = []
            for r, (lo, hi) in enumerate(sp):
                if r >= 3:  # before / after: divided by the positions of the region inside the video
                    count = torch.minimum(start + hi, n_pos[None, :]) - torch.clamp(start + lo, min=0)
                    per_region.append(1.0 / count.clamp(min=1).to(z.dtype)[..., None])  # (T, B, 1)
                else:
                    per_region.append(1.0 / float(hi - lo))
            scales.append(per_region)
        sums = _RegionMeans.apply(prefix, [[(left + lo, left + hi) for lo, hi in sp] for sp in spans], scales, t, b)
        return sums.view(len(spans), t, b, self.cell_dim)

    def valid_cells(self, n_pos: torch.Tensor, t: int) -> torch.Tensor:
        """(B, T, K) cells that end inside their video."""
        end = torch.arange(t, device=self.lengths.device)[:, None] + self.lengths[None, :]
        return (end[None] <= n_pos.to(end.device)[:, None, None]).float()


class _RegionMeans(torch.autograd.Function):
    """Sum over regions of (prefix[hi + s] - prefix[lo + s]) * scale, for every length and start: (K, T, N).

    Autograd through ~K x 10 slices would give each slice its own gradient
    buffer of the prefix's full size (measured: 3/4 of a training step); this
    adds every slice's gradient into one buffer instead.
    """

    @staticmethod
    def forward(ctx, prefix: torch.Tensor, bounds: list, scales: list, t: int, b: int) -> torch.Tensor:
        out = prefix.new_zeros(len(bounds), t, prefix.shape[-1])
        for k, (spans, sc) in enumerate(zip(bounds, scales, strict=True)):
            view = out[k].view(t, b, -1)
            for r, ((lo, hi), scale) in enumerate(zip(spans, sc, strict=True)):
                view += (prefix[hi:hi + t, r] - prefix[lo:lo + t, r]).view(t, b, -1) * scale
        ctx.bounds, ctx.scales, ctx.shape, ctx.tb = bounds, scales, prefix.shape, (t, b)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        t, b = ctx.tb
        out = grad.new_zeros(ctx.shape)
        for k, (spans, sc) in enumerate(zip(ctx.bounds, ctx.scales, strict=True)):
            g = grad[k].reshape(t, b, -1)
            for r, ((lo, hi), scale) in enumerate(zip(spans, sc, strict=True)):
                part = (g * scale).view(t, -1)
                out[hi:hi + t, r] += part
                out[lo:lo + t, r] -= part
        return out, None, None, None, None


def balanced_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy where the positives and the negatives (inside `mask`) each weigh half.

    `target` > 0 marks a positive; its value is the positive's share of the positives' half
    (1 everywhere: all alike; `bm_data.positive_weights`: every reference alike).
    """
    pos = target * mask
    neg = (target <= 0).float() * mask
    w = pos * (0.5 / pos.sum().clamp(min=1e-6)) + neg * (0.5 / neg.sum().clamp(min=1.0))
    labels = (target > 0).float()
    return (nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none") * w).sum()


def tiou_regression(logits: torch.Tensor, tiou: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Squared error of sigmoid(logits) to the cells' tIoU; high, mid and low cells weigh 1 : 1 : 2 in total."""
    high, low = TIOU_GROUPS
    groups = [(tiou > high).float() * valid, ((tiou <= high) & (tiou > low)).float() * valid,
              (tiou <= low).float() * valid]
    w = sum(g * (share / g.sum().clamp(min=1.0)) for g, share in zip(groups, (1.0, 1.0, 2.0), strict=True))
    return (w * (torch.sigmoid(logits) - tiou) ** 2).sum() / 4.0


def bm_loss(bound: torch.Tensor, cells: torch.Tensor, batch, valid: torch.Tensor,
            offset_weight: float = 1.0) -> torch.Tensor:
    """Boundaries + classification + `REG_WEIGHT` x tIoU regression, for one batch (`bm_data.BMBatch`).

    The classification map's positives come with the batch (`bm_data.BMDataset`): cells at
    ``proposals.bm_cls_tiou`` or above, and each reference's closest cell.
    """
    t = bound.shape[1]
    real = (torch.arange(t, device=bound.device)[None, :] < batch.n_pos[:, None]).float()
    loss = balanced_bce(bound[..., 0], batch.starts, real) + balanced_bce(bound[..., 1], batch.ends, real)
    loss = loss + balanced_bce(cells[..., 0], batch.positive, valid)
    loss = loss + REG_WEIGHT * tiou_regression(cells[..., 1], batch.tiou, valid)
    near = (batch.tiou >= OFFSET_TIOU).float() * valid  # cells that are roughly an event learn to move onto it
    moved = nn.functional.smooth_l1_loss(cells[..., 2:], batch.offsets, reduction="none", beta=0.1).sum(-1)
    return loss + offset_weight * (moved * near).sum() / near.sum().clamp(min=1.0)


@torch.no_grad()
def cell_scores(net: BMNet, feats: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Every cell's fused score ``p_start * p_end * p_class * p_tIoU`` (T, K), 0 for invalid cells,
    and its predicted offsets (T, K, 2) in cell lengths."""
    x = torch.from_numpy(feats)[None].to(device)
    n = torch.tensor([len(feats)])
    bound, cells = net(x, n)
    p_bound = torch.sigmoid(bound[0].double()).cpu().numpy()
    cells = cells[0].double().cpu()
    p_cell = torch.sigmoid(cells[..., :2]).numpy()
    t, lengths = len(feats), net.lengths.cpu().numpy()
    end = np.minimum(np.arange(t)[:, None] + lengths[None, :], t) - 1
    score = p_bound[:, 0][:, None] * p_bound[end, 1] * p_cell[..., 0] * p_cell[..., 1]
    return score * net.valid_cells(n, t)[0].cpu().numpy(), cells[..., 2:].numpy()


def moved_segments(segs: np.ndarray, offsets: np.ndarray, duration: float) -> np.ndarray:
    """Cells (N, 2) moved by their offsets (N, 2), kept inside [0, duration] and at least a hundredth
    of their own length long (an offset pair that crosses keeps the cell as it was)."""
    width = segs[:, 1] - segs[:, 0]
    moved = np.clip(segs + np.clip(offsets, -1.0, 1.0) * width[:, None], 0.0, duration)
    bad = moved[:, 1] - moved[:, 0] < 0.01 * width
    moved[bad] = segs[bad]
    return moved


def bm_candidates(net: BMNet, rows: np.ndarray, edges: np.ndarray, pcfg: dict, device: torch.device
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Every valid cell of one video as a scored segment: (segments (N, 2) seconds, scores (N,))."""
    feats, pos_edges = positions(rows, edges, int(pcfg["bm_positions"]))
    score, offsets = cell_scores(net, feats, device)
    segs, valid = cell_segments(pos_edges, net.lengths.cpu().numpy())
    segs = moved_segments(segs[valid], offsets[valid], float(pos_edges[-1])) if pcfg.get("regress_boundaries",
                                                                                         True) else segs[valid]
    return segs, score[valid]


def bm_propose(net: BMNet, rows: np.ndarray, edges: np.ndarray, pcfg: dict, device: torch.device) -> list[dict]:
    """Up to ``proposals.max_proposals`` proposals of one video, best first, after (Soft-)NMS."""
    segs, scores = bm_candidates(net, rows, edges, pcfg, device)
    return rank_segments(segs, scores, float(pcfg["nms_tiou"]), int(pcfg["max_proposals"]), pcfg.get("nms_sigma"))
