"""One self-contained HTML file: the page's data as JSON inside it, drawn by its own inline script.

Every string from results and annotations travels as JSON data and is put on
the page by the script with `textContent` (never as markup), so a sentence
such as `<script>` shows as text. The JSON itself is embedded with `<`, `>`
and `&` written as `\\u003c`... so nothing in it can close its script element.
Attention is quantised to 8 bits per cell (base64): the page only draws it as
colours, and the file of a large result set stays small enough to open.
"""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import numpy as np

from etspipe import __version__
from etspipe_view.inputs import Attention, VideoView

PAGE_FORMAT = 1


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(float(x), digits)


def quantise(att: Attention) -> dict[str, Any]:
    """Attention as words, row times, and uint8 cells (row-major, scaled to the caption's maximum)."""
    w = np.asarray(att.weights, dtype=np.float64).reshape(len(att.words), len(att.row_times))
    top = float(w.max()) if w.size else 0.0
    q = np.zeros(w.shape, np.uint8) if top <= 0 else np.rint(np.clip(w / top, 0, 1) * 255).astype(np.uint8)
    return {"w": att.words, "rt": [round(t, 3) for t in att.row_times], "max": round(top, 4),
            "q": base64.b64encode(q.tobytes()).decode("ascii")}


def video_payload(view: VideoView, src: str | None, missing: str | None, vtt: str) -> dict[str, Any]:
    """The page's record of one video (short keys: a val_1 page holds ~5,000 of them)."""
    matches = view.matches
    preds = []
    for k, cap in enumerate(view.predictions):
        item: dict[str, Any] = {"t": [_round(cap.start), _round(cap.end)], "s": cap.sentence}
        if matches and matches[k][0] >= 0:
            item["ref"], item["tiou"] = matches[k][0], round(matches[k][1], 3)
        if cap.index in view.attention:
            item["att"] = quantise(view.attention[cap.index])
        preds.append(item)
    return {
        "id": view.video_id,
        "duration": _round(view.duration),
        "src": src,
        "missing": missing,
        "vtt": vtt,
        "preds": preds,
        "refs": [{"t": [_round(r.start), _round(r.end)], "s": r.sentence} for r in view.references],
        "scores": {k: _round(v, 4) for k, v in view.scores.items()},
    }


def metrics_table(scores: dict[str, Any] | None) -> dict[str, Any] | None:
    """The official metrics of an evaluate scores file as columns (tIoUs, average) and rows."""
    if not scores:
        return None
    tious = list(scores["per_tiou"])
    names = list(scores["average"])
    rows = [[m] + [_round(scores["per_tiou"][t].get(m), 4) for t in tious] + [_round(scores["average"][m], 4)]
            for m in names]
    return {"columns": ["metric"] + [f"tIoU {t}" for t in tious] + ["average"], "rows": rows,
            "note": "; ".join(str(w) for w in scores.get("warnings", []))}


def embed_json(data: Any) -> str:
    """JSON safe inside `<script type="application/json">` (no `<`, `>`, `&`, U+2028/9 left raw)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _static(name: str) -> str:
    return resources.files("etspipe_view").joinpath("static", name).read_text(encoding="utf-8")


def render_html(videos: list[dict[str, Any]], title: str, source: str, metrics: dict[str, Any] | None,
                has_refs: bool) -> str:
    """The whole page: template + inline CSS + inline script + embedded data."""
    data = {
        "format": PAGE_FORMAT,
        "title": title,
        "source": source,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "metrics": metrics,
        "has_refs": has_refs,
        "videos": videos,
    }
    parts = {"TITLE": html.escape(title), "CSS": _static("view.css"), "JS": _static("view.js"),
             "DATA": embed_json(data)}
    # one pass, so text put in (a title, a sentence) is never scanned for markers again
    return re.sub(r"@@(TITLE|CSS|JS|DATA)@@", lambda m: parts[m.group(1)], _static("page.html"))
