"""How right the demo's captions are: the fraction a parser finds exactly correct, per kind of segment.

The official protocol's METEOR/CIDEr reward shared words; on the demo's tiny
grammar two captions that differ only in event order share every word. These
counts (`etspipe_demo.grammar.caption_correct`) say directly whether a model
got the objects, the events and their order right.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from etspipe_demo.grammar import caption_correct

# Seconds within which a prediction's timestamp counts as the reference segment's
# (the demo predicts on the ground-truth segments; result files round times).
TOLERANCE = 0.02


def prediction_for(preds: list[dict], start: float, end: float, tolerance: float = TOLERANCE) -> str | None:
    """The caption predicted for segment [start, end] in one video's results, or None if there is none."""
    return next((p["sentence"] for p in preds
                 if abs(p["timestamp"][0] - start) <= tolerance and abs(p["timestamp"][1] - end) <= tolerance),
                None)


def score_captions(results: Mapping[str, list[dict]], meta: Mapping[str, dict],
                   tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Fraction of reference segments whose predicted caption is correct (`caption_correct`).

    `results` is ActivityNet's result mapping (video id -> [{"timestamp", "sentence"}]);
    a reference segment is matched to the prediction with the same timestamp
    (`prediction_for`). A segment without a matching prediction counts as wrong.
    Returned per subset (`all`, `order_dependent`, `single`): `n`, `correct`, `fraction`.
    """
    tally = {k: [0, 0] for k in ("all", "order_dependent", "single")}
    for vid, m in meta.items():
        preds = results.get(vid, [])
        for s in m["segments"]:
            match = prediction_for(preds, *s["timestamp"], tolerance=tolerance)
            ok = match is not None and caption_correct(match, s["events"])
            for key in ("all", "order_dependent" if s["order_dependent"] else "single"):
                tally[key][0] += 1
                tally[key][1] += int(ok)
    return {k: {"n": n, "correct": c, "fraction": (c / n if n else 0.0)} for k, (n, c) in tally.items()}


def split_annotations_by_order(meta: Mapping[str, dict]) -> tuple[dict, dict]:
    """Two ActivityNet-format reference dicts: the order-dependent segments and the rest.

    A benchmark scores each with the official protocol to compare models on the
    captions whose meaning depends on event order.
    """
    subsets: tuple[dict, dict] = ({}, {})
    for vid, m in meta.items():
        for s in m["segments"]:
            entry = subsets[0 if s["order_dependent"] else 1].setdefault(
                vid, {"duration": m["duration"], "timestamps": [], "sentences": []})
            entry["timestamps"].append(list(s["timestamp"]))
            entry["sentences"].append(s["sentence"])
    return subsets
