"""Pictures of where the model looked: temporal attention per generated word.

One PNG per caption: the words down the vertical axis (first word at the
top), the segment's time in seconds along the horizontal axis, the attention
weight as colour. Each feature row is drawn over the time span it stands for
(edges half way between neighbouring row times), so uneven or subsampled rows
still sit at their true times. Matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _edges(times: np.ndarray, start: float | None, end: float | None) -> np.ndarray:
    """Cell edges around row centre times (extended to the segment's bounds when given)."""
    t = np.asarray(times, dtype=np.float64)
    if len(t) == 1:
        half = max((end - start) / 2 if start is not None and end is not None and end > start else 0.5, 1e-3)
        return np.array([t[0] - half, t[0] + half])
    mid = (t[1:] + t[:-1]) / 2
    first = t[0] - (mid[0] - t[0])
    last = t[-1] + (t[-1] - mid[-1])
    return np.concatenate([[first], mid, [last]])


def safe_name(text: str, limit: int = 80) -> str:
    """A file-name-safe version of `text`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:limit] or "caption"


def plot_attention(words: Sequence[str], attn: np.ndarray, times: Sequence[float], path: str | Path,
                   title: str = "", start: float | None = None, end: float | None = None) -> Path:
    """Save a heat map of `attn` (n_words, n_rows) with row `times` (s) to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    attn = np.asarray(attn, dtype=np.float64)
    words = list(words)
    if attn.ndim != 2 or attn.shape[0] != len(words) or attn.shape[1] != len(times):
        raise ValueError(f"attention {attn.shape} does not fit {len(words)} words x {len(times)} rows")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig_h = 1.2 + 0.28 * max(len(words), 1)
    fig, ax = plt.subplots(figsize=(8, fig_h))
    try:
        x = _edges(np.asarray(times), start, end)
        y = np.arange(len(words) + 1) - 0.5
        mesh = ax.pcolormesh(x, y, attn, cmap="viridis", vmin=0.0, shading="flat")
        ax.set_yticks(np.arange(len(words)))
        ax.set_yticklabels(words)
        ax.invert_yaxis()
        ax.set_xlabel("time in video (s)")
        ax.set_ylabel("generated word")
        if title:
            # a long caption would run off the figure: wrap it, and cut a runaway one
            short = title if len(title) <= 300 else title[:297] + "..."
            ax.set_title("\n".join(textwrap.wrap(short, 90)), fontsize=9)
        fig.colorbar(mesh, ax=ax, label="attention weight")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
