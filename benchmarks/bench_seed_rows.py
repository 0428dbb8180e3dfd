"""The row rule of 5 fps frame stores against the seed's reader on every timestamp of an annotation file.

For each segment of e.g. ActivityNet's val_1.json, in a store of T frame rows (row i at i/5 s, the
layout of ``resnet152_features_activitynet_5fps_320x240.pkl``; T = ``ceil(duration * 5)``, then
``floor(duration * 5)`` so that segments running past the rows are met too), compares the rows
`features_store.alignment.rows_for_segment` gives with the seed's ``feats[int(s*5):int(e*5+0.5)]``,
and counts the segments where the centre rule used before (plain times) differed. Prints one JSON
line per layout.

    .venv/bin/python benchmarks/bench_seed_rows.py ../shared/data/activitynet_captions/val_1.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotations", help="ActivityNet Captions style JSON ({id: {duration, timestamps}})")
    args = parser.parse_args()

    from features_store.alignment import row_times, rows_for_segment

    rule = {"kind": "clip", "fps": 5.0, "clip_len": 1.0, "stride": 1.0}
    data = json.loads(Path(args.annotations).read_text(encoding="utf-8"))
    for layout, rows_of in (("ceil", math.ceil), ("floor", math.floor)):
        counts = dict.fromkeys(("segments", "in_range", "equal_seed", "differ_seed", "old_rule_differed",
                                "seed_slice_empty", "overrun", "overrun_equal_seed_slice", "zero_length",
                                "reversed"), 0)
        examples: list[list[float]] = []
        for ann in data.values():
            n = max(1, rows_of(float(ann["duration"]) * 5))
            times = row_times(rule, n)
            plain, stored = np.asarray(times), n / 5.0
            for start, end in ann["timestamps"]:
                counts["segments"] += 1
                seed = range(n)[int(start * 5):int(end * 5 + 0.5)]  # Python's slice of the seed's (T, 2048) rows
                sel, case = rows_for_segment(times, start, end, stored)
                if case in ("zero_length", "reversed"):
                    counts[case] += 1
                    continue
                if case is not None:
                    counts["overrun"] += 1
                    counts["overrun_equal_seed_slice"] += (sel.start, sel.stop) == (seed.start, seed.stop)
                    continue
                counts["in_range"] += 1
                if not len(seed):
                    counts["seed_slice_empty"] += 1
                    continue
                same = (sel.start, sel.stop) == (seed.start, seed.stop)
                counts["equal_seed" if same else "differ_seed"] += 1
                old, _ = rows_for_segment(plain, start, end, stored)
                if (old.start, old.stop) != (seed.start, seed.stop):
                    counts["old_rule_differed"] += 1
                    if len(examples) < 3:
                        examples.append([start, end, old.start, old.stop, seed.start, seed.stop])
        print(json.dumps({"bench": "seed_frame_rows", "file": Path(args.annotations).name,
                          "rows": f"{layout}(5 * duration)", **counts,
                          "old_rule_examples [s, e, old_first, old_stop, seed_first, seed_stop]": examples}))

if __name__ == "__main__":
    main()
