"""The demo's report: what a newcomer reads at the end, every number taken from this run's files."""

from __future__ import annotations

from pathlib import Path

from etspipe_demo.grammar import caption_correct
from etspipe_demo.scoring import prediction_for


def write_filelist(path: Path, videos_dir: Path, test_ann: dict, n_videos: int) -> list[str]:
    """Predict on raw video files (as a user would), one line per ground-truth segment."""
    chosen = sorted(test_ann)[:n_videos]
    lines = ["# demo: test videos and their ground-truth segments (VIDEO START END)"]
    for vid in chosen:
        for start, end in test_ann[vid]["timestamps"]:
            lines.append(f"{videos_dir / (vid + '.mp4')} {start:.2f} {end:.2f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return chosen


def examples(results: dict, meta: dict, n: int) -> list[tuple[str, str, str, bool]]:
    """`n` test videos, one segment each, alternating order-dependent and single-event segments.

    Both kinds are shown because they fail differently: the order-dependent ones
    need the model to use time, the single ones mostly test the features.
    """
    out = []
    for k, vid in enumerate(sorted(meta)[:n]):
        segs = sorted(meta[vid]["segments"], key=lambda s: s["order_dependent"] != (k % 2 == 0))
        seg = segs[0]
        pred = prediction_for(results.get(vid, []), *seg["timestamp"]) or ""
        out.append((vid, seg["sentence"], pred, caption_correct(pred, seg["events"])))
    return out


def _score_lines(evaluation: dict, correct: dict) -> list[str]:
    avg = evaluation["scores"]["average"]

    def num(key: str) -> str:
        return "n/a" if avg.get(key) is None else f"{avg[key]:.2f}"

    lines = [f"test split: {evaluation['n_segments']} ground-truth segments captioned; official ActivityNet "
             "Captions protocol (mean over tIoU 0.3/0.5/0.7/0.9, x100)",
             f"  {'METEOR':>8} {'CIDEr':>8} {'BLEU-1':>8} {'BLEU-4':>8} {'ROUGE-L':>8}",
             f"  {num('METEOR'):>8} {num('CIDEr'):>8} {num('Bleu_1'):>8} {num('Bleu_4'):>8} {num('ROUGE_L'):>8}",
             "correct captions:"]
    for key, label in (("all", "all segments"), ("order_dependent", "order-dependent (two events)"),
                       ("single", "single-event")):
        c = correct[key]
        lines.append(f"  {label:<30} {c['correct']:>4}/{c['n']:<4} = {100 * c['fraction']:.1f}%")
    lines.append("  correct = the caption parses under the demo grammar and names exactly the reference's\n"
                 "  (colour, shape, action) events in the same order (etspipe_demo.grammar.caption_correct)")
    return lines


def format_report(evaluation: dict, correct: dict, shown: list, plots: list[str], plot_dir: Path,
                  prediction: dict, timings: dict[str, float], extract_note: str) -> str:
    """The report as text: scores, correct captions, examples, where the files are, stage times."""
    lines = _score_lines(evaluation, correct)
    lines.append(f"features: {extract_note}")
    lines.append("\nexamples (test split):")
    for vid, ref, pred, ok in shown:
        lines.append(f"  {vid}  [{'correct' if ok else 'wrong'}]\n    reference: {ref}\n    predicted: {pred}")
    lines.append(f"\nattention plots: {len(plots)} PNG in {plot_dir}")
    lines.extend(f"  {p}" for p in plots[:3])
    lines.append(f"evaluation results: {evaluation['results_path']}\n"
                 f"scores: {evaluation['scores_path']}\npredictions: {prediction.get('results_path')}")
    lines.append("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
                 + f"; total {sum(timings.values()):.1f} s")
    return "\n".join(lines)
