"""Viewer benchmark: the page of a val_1-sized result set, opened in headless Chromium.

From the timestamps of an annotation file (`--annotations val_1.json`: 4,917
videos, 17,505 segments) a result file with synthetic sentences (8-16 words of
a small vocabulary) is written; the page is built with the same file as
references (the `evaluate` case) and, in a second variant, with an attention
sidecar for every caption as well (one row per 0.32 s of segment, at most 256,
as C3D rows at 25 fps / stride 8 subsampled to `data.max_rows`). Per variant it
prints one JSON line: build time, page size, and in the browser the first
contentful paint, when the page's script finished its first drawing
(`etspipe-ready`), the JS heap, a search over all videos and drawing a video
far down the page.

    python benchmarks/bench_view.py --annotations ../shared/data/activitynet_captions/val_1.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import machine  # benchmarks/machine.py (the script folder is on sys.path)

from caption_model.formats.attention_sidecar import AttentionSidecar
from caption_model.formats.subtitles import to_vtt
from etspipe_view import build_page
from etspipe_view.browser import browser_missing, chromium

VOCAB = ("a man woman person is are the of in on with and to playing plays holds ball water field camera "
         "then continues shows front talking while another group people standing running jumps uses").split()
ROW_S, MAX_ROWS = 8 / 25, 256


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def synthetic_results(annotations: Path, seed: int = 0) -> dict:
    rng = random.Random(seed)
    ann = json.loads(annotations.read_text(encoding="utf-8"))
    results = {}
    for vid, entry in ann.items():
        results[vid] = [{"timestamp": [float(a), float(b)],
                         "sentence": " ".join(rng.choice(VOCAB) for _ in range(rng.randint(8, 16))) + "."}
                        for a, b in entry["timestamps"]]
    return {"version": "VERSION 1.0", "results": results, "external_data": {"used": True, "details": "bench"}}


def synthetic_sidecar(doc: dict, path: Path, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    sidecar = AttentionSidecar()
    for vid, entries in doc["results"].items():
        for k, e in enumerate(entries):
            start, end = sorted(e["timestamp"])
            n_rows = int(min(MAX_ROWS, max(1, (end - start) / ROW_S)))
            words = e["sentence"].split() + ["<e>"]
            logits = rng.normal(size=(len(words), n_rows)) * 2
            attn = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            times = np.linspace(start, end, n_rows + 2)[1:-1]
            sidecar.add(vid, k, words, attn, times, e["timestamp"], e["sentence"])
    sidecar.write(path)
    return len(sidecar)


def measure_in_browser(page: Path, far_index: int) -> dict:
    with chromium() as browser:
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        t0 = time.perf_counter()
        pg.goto(page.as_uri(), wait_until="load", timeout=300_000)
        pg.wait_for_function("performance.getEntriesByName('etspipe-ready').length > 0", timeout=300_000)
        pg.wait_for_function("performance.getEntriesByName('etspipe-first-video').length > 0", timeout=60_000)
        load_wall = time.perf_counter() - t0
        timing = pg.evaluate("""() => ({
            fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,
            ready: performance.getEntriesByName('etspipe-ready')[0].startTime,
            first_video: performance.getEntriesByName('etspipe-first-video')[0].startTime,
            dcl: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
            heap: performance.memory ? performance.memory.usedJSHeapSize : null,
            drawn: document.querySelectorAll('section.video:not(.pending)').length})""")
        search_ms = pg.evaluate("""() => { const t = performance.now(); window.etspipeView.search('ball');
            const n = document.querySelectorAll('#index-table tbody tr').length; window.etspipeView.search('');
            return [performance.now() - t, n]; }""")
        draw_ms = pg.evaluate(f"""() => {{ const t = performance.now(); window.etspipeView.render({far_index});
            return performance.now() - t; }}""")
        pg.screenshot(path=str(page.with_suffix(".png")))
        return {"first_contentful_paint_ms": round(timing["fcp"] or -1, 1), "ready_ms": round(timing["ready"], 1),
                "first_video_drawn_ms": round(timing["first_video"], 1),
                "dom_content_loaded_ms": round(timing["dcl"], 1), "load_wall_s": round(load_wall, 2),
                "js_heap_mb": round(timing["heap"] / 1e6, 1) if timing["heap"] else None,
                "videos_drawn_at_open": timing["drawn"], "search_ms": round(search_ms[0], 1),
                "draw_one_video_ms": round(draw_ms, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--annotations", required=True, type=Path, help="val_1.json (timestamps and references)")
    ap.add_argument("--out", type=Path, default=None, help="keep the pages here (default: a temporary folder)")
    ap.add_argument("--no-attention", action="store_true", help="skip the variant with attention for all captions")
    ap.add_argument("--reuse", action="store_true", help="reuse a sidecar already in --out (it takes minutes)")
    args = ap.parse_args()
    missing = browser_missing()
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_view_"))
    work.mkdir(parents=True, exist_ok=True)
    doc = synthetic_results(args.annotations)
    results = work / "val_1_results.json"
    results.write_text(json.dumps(doc), encoding="utf-8")
    n_caps = sum(len(v) for v in doc["results"].values())
    variants = [("results+references", None)]
    if not args.no_attention:
        t = time.perf_counter()
        side = work / "val_1_attention.json"
        n_att = n_caps if args.reuse and side.is_file() else synthetic_sidecar(doc, side)
        emit(bench="view", step="sidecar", captions=n_att, sidecar_mb=round(side.stat().st_size / 1e6, 1),
             write_s=round(time.perf_counter() - t, 1))
        variants.append(("results+references+attention", side))
    for name, side in variants:
        page = work / f"{name.replace('+', '_')}.html"
        t = time.perf_counter()
        summary = build_page(results, page, annotation_paths=[args.annotations], attention_path=side, cues=to_vtt)
        build_s = time.perf_counter() - t
        line = {"bench": "view", "variant": name, "videos": summary["videos"], "captions": n_caps,
                "with_attention": summary["with_attention"], "page_mb": round(summary["bytes"] / 1e6, 2),
                "build_s": round(build_s, 2), "load_avg": os.getloadavg()[0], **machine()}
        if missing:
            line["browser"] = f"not measured: {missing}"
        else:
            line.update(measure_in_browser(page, far_index=summary["videos"] // 2))
        emit(**line)


if __name__ == "__main__":
    main()
