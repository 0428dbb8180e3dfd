"""How long the seed's released model takes to import and to load, at its real size.

Writes a full-size `ETS.pdparams` (2048/1024/512, V = 5,185 words: the dictionary the seed's rule gives
on ActivityNet's training captions) byte for byte as Python 2.7's fluid wrote it (tests/py2_pickle.py),
a dict.txt of that size, then times `etspipe import-weights paddle-ets` and `load_model` of the run.
Prints one JSON line (issue 26's target: loads in <= 10 s).

    .venv/bin/python benchmarks/bench_paddle_import.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    from machine import cpu_model
    from py2_pickle import dumps_py27
    from seed_net_golden import FULL, make_params

    from caption_model.architectures import load_model
    from caption_model.paddle_import import import_paddle_ets

    vocab = 5185
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        params = make_params({**FULL, "vocab": vocab}, seed=0)
        src = tmp / "ETS.pdparams"
        src.write_bytes(dumps_py27(params))
        words = ["<s>", "<e>", "<unk>"] + [f"word{i}" for i in range(vocab - 3)]
        (tmp / "dict.txt").write_text("".join(f"{w} 3\n" for w in words), encoding="utf-8")
        t0 = time.perf_counter()
        import_paddle_ets(src, tmp / "run", dict_path=tmp / "dict.txt")
        t_import = time.perf_counter() - t0
        t0 = time.perf_counter()
        model, loaded_vocab, _ = load_model(tmp / "run")
        t_load = time.perf_counter() - t0
        print(json.dumps({"benchmark": "paddle_import", "machine": cpu_model(), "params_mb": round(
            src.stat().st_size / 2**20, 1), "parameters": sum(p.numel() for p in model.parameters()),
            "vocab": len(loaded_vocab) - 1, "import_s": round(t_import, 2), "load_s": round(t_load, 2)}))


if __name__ == "__main__":
    main()
