"""Captions for (store id, start, end) segments: what `evaluate` and `predict` share.

Every segment is captioned, whatever its times: rows come from
`features_store.alignment.rows_for_segment`, the one alignment rule of the
project (rows whose centre lies inside the segment clipped to the stored
video, else the nearest row). A segment that needed a fallback (past the
stored end, zero-length, reversed, ...) is counted by case, and the caller
prints one line per case instead of stopping.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from etspipe.errors import UserError

logger = logging.getLogger(__name__)

CHUNK_SEGMENTS = 1024  # segments whose rows are in memory at once


def resolve_weights(cfg: dict, weights: str | Path | None, echo: Callable[[str], None] | None = print) -> Path:
    """The checkpoint to use: `weights`, else the best one under `train.save_dir` (said aloud)."""
    from caption_model.runs.checkpoint import find_best

    if weights:
        path = Path(weights)
        if not path.exists():
            raise UserError(f"checkpoint not found: {path}")
        return find_best(path) if path.is_dir() else path
    save_dir = Path(cfg["train"]["save_dir"])
    if not save_dir.is_dir():
        raise UserError(f"no --weights given and no checkpoint folder {save_dir} (train a model first, "
                        f"or pass --weights CKPT)")
    best = find_best(save_dir)
    if echo:
        echo(f"using checkpoint {best} (best under {save_dir})")
    else:
        logger.info("using checkpoint %s", best)
    return best


def row_indices(n_rows: int, max_rows: int) -> np.ndarray:
    """Which of a segment's rows the model sees: the training rule (`dataset.subsample_rows`)."""
    from caption_model.dataset import subsample_rows

    return subsample_rows(np.arange(n_rows)[:, None], max_rows)[:, 0]


class SegmentRows:
    """Rows of segments read video by video (one store read per video), with fallback cases counted.

    A video whose rows cannot be read (a damaged chunk, say) gives None for its
    segments and its reason in `unreadable`, so one video never stops a run.
    """

    def __init__(self, store, max_rows: int):
        self.store, self.max_rows = store, int(max_rows)
        self.cases: Counter[str] = Counter()
        self.unreadable: dict[str, str] = {}
        self._vid: str | None = None
        self._rows = self._times = None
        self._duration = 0.0

    def _load(self, sid: str) -> bool:
        if sid != self._vid:
            self._vid = sid
            try:
                self._rows = self.store.rows(sid)
                self._times = self.store.row_times(sid)
                self._duration = float(self.store.video_meta(sid)["duration"])
            except (UserError, OSError, ValueError, KeyError) as exc:
                self.unreadable[sid] = f"{type(exc).__name__}: {exc}"
                logger.warning("video %s: cannot read its features (%s)", sid, exc)
        return sid not in self.unreadable

    def __call__(self, sid: str, start: float, end: float) -> tuple[np.ndarray, np.ndarray] | None:
        from features_store.alignment import rows_for_segment

        if not self._load(sid):
            return None
        sel, case = rows_for_segment(self._times, start, end, self._duration)
        if case:
            self.cases[case] += 1
        idx = np.arange(sel.start, sel.stop)[row_indices(sel.stop - sel.start, self.max_rows)]
        return np.asarray(self._rows[idx], dtype=np.float32), np.asarray(self._times[idx], dtype=np.float64)


def fallback_lines(cases: Counter) -> list[str]:
    """One line per fallback case, e.g. '37 segments starting past the stored end used the last row'."""
    from features_store.alignment import FALLBACK_CASES

    return [f"{cases[c]} {text}" for c, text in FALLBACK_CASES.items() if cases.get(c)]


def caption_segments(model, vocab, store, segments: Sequence[tuple[str, float, float]], cfg: dict,
                     device: torch.device, *, batch_size: int, progress: bool = True,
                     return_attn: bool = False, reader: SegmentRows | None = None) -> list[dict[str, Any] | None]:
    """Caption (store id, start, end) segments in chunks; one dict per segment, in order.

    `cfg` needs the `decode` section and ``data.max_rows`` (the checkpoint's).
    Each dict holds `sentence`, `tokens`, `words`, `score`, and with
    `return_attn` the attention (words+1, rows) and the rows' times; None for a
    segment of an unreadable video. Pass `reader` to see its fallback cases and
    unreadable videos afterwards.
    """
    from caption_model import compiled_attention
    from caption_model.decode import decode_segments

    dcfg = cfg["decode"]
    reader = reader or SegmentRows(store, cfg["data"]["max_rows"])
    compiled_attention.enable(model, str(dcfg.get("compile", "auto")), len(segments))
    out: list[dict[str, Any] | None] = []
    for c in range(0, len(segments), CHUNK_SEGMENTS):
        got = [reader(sid, start, end) for sid, start, end in segments[c : c + CHUNK_SEGMENTS]]
        ok = [g for g in got if g is not None]
        decoded = iter(decode_segments(
            model, [r for r, _ in ok], beam_size=int(dcfg["beam_size"]), max_len=int(dcfg["max_len"]),
            length_norm=float(dcfg["length_norm"]), batch_size=batch_size, device=device,
            return_attn=return_attn, progress=progress, allow_unk=bool(dcfg.get("allow_unk", False))) if ok else [])
        for g in got:
            out.append(None if g is None else _caption(next(decoded), g[1], vocab, return_attn))
        if len(segments) > CHUNK_SEGMENTS:  # progress of a long run, not a second summary of a short one
            logger.info("captioned %d / %d segments", min(c + CHUNK_SEGMENTS, len(segments)), len(segments))
    return out


def _caption(d, times: np.ndarray, vocab, return_attn: bool) -> dict[str, Any]:
    item = {"sentence": vocab.decode(d.tokens), "tokens": d.tokens, "words": [vocab.itos[i] for i in d.tokens],
            "score": d.score}
    if return_attn:
        item["attn"], item["times"] = d.attn, times
    return item


def external_details(store_meta: dict | None) -> str:
    """The result file's `external_data.details`: which features the captions come from."""
    meta = store_meta or {}
    parts = [str(meta.get("extractor") or "C3D"), str(meta.get("layer") or ""), "features"]
    if meta.get("pca"):
        parts.insert(2, "PCA")
    return " ".join(p for p in parts if p)
