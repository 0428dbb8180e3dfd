"""The Python API (`from etspipe import Captioner, open_store, score`): README's lines and the module's
examples run here on a small run, over the CLI's own paths."""

from __future__ import annotations

import doctest
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import videos
from stage2_store import STORE_META, make_checkpoint

import etspipe
from etspipe.config import load_config
from etspipe_flows import api

ROOT = Path(__file__).resolve().parent.parent
RAW_META = {"width_mult": 0.0625, "fps": None}  # the recipe of the run's rows: a 1/16-width untrained C3D


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """A run folder whose store recipe is the tiny C3D, a raw video, a result file and its references."""
    from extract_features import extract_one

    tmp = tmp_path_factory.mktemp("api")
    video = videos.write_video(tmp / "v_clip.mp4", n_frames=72, fps=24)
    cfg = load_config()
    rows, _ = extract_one(video, {**cfg, "extract": {**cfg["extract"], "width_mult": 0.0625, "batch_size": 4}})
    make_checkpoint(tmp / "run" / "best.pt", feat_dim=rows.shape[1],
                    store_meta={**STORE_META, **RAW_META, "dim": rows.shape[1]})
    references = {"v_clip": {"duration": 3.0, "timestamps": [[0.0, 1.5], [1.0, 3.0]],
                             "sentences": ["a man runs", "a dog jumps in the park"]}}
    results = {"version": "VERSION 1.0", "external_data": {"used": True, "details": "test"},
               "results": {"v_clip": [{"timestamp": [0.0, 1.5], "sentence": "a man runs"},
                                      {"timestamp": [1.0, 3.0], "sentence": "a dog runs"}]}}
    (tmp / "refs.json").write_text(json.dumps(references))
    (tmp / "results.json").write_text(json.dumps(results))
    return {"tmp": tmp, "run": tmp / "run", "video": video, "results": tmp / "results.json",
            "references": tmp / "refs.json"}


def _readme_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_lines_caption_a_raw_video_and_score_results(run, monkeypatch, capsys) -> None:
    """README's five lines, with its file names pointed at this run's files, run as a user would paste them."""
    code = _readme_block()
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 6
    for name, path in (("data/checkpoints", run["run"]), ("my_video.mp4", run["video"]),
                       ("data/evaluate_results/val_1.json", run["results"]), ("val_1.json", run["references"])):
        assert f'"{name}"' in code, name
        code = code.replace(f'"{name}"', repr(str(path)))
    monkeypatch.chdir(run["tmp"])  # the working store goes to data/predict_results/ here
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("(0.0, 2.5) ") and lines[1].startswith("(1.0, 4.0) ")
    assert 0.0 < float(lines[2]) <= 100.0  # METEOR of "a dog runs" against "a dog jumps in the park"
    assert (run["tmp"] / "data" / "predict_results" / "features.zarr").is_dir()  # extracted by the run's recipe


def test_the_module_examples_run(run) -> None:
    """The docstring of etspipe_flows.api is run as a doctest on this run (so its examples cannot rot)."""
    globs = {"RUN": str(run["run"]), "VIDEO": str(run["video"]), "RESULTS": str(run["results"]),
             "REFERENCES": str(run["references"])}
    store = run["tmp"] / "doctest_store.zarr"
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(api, "etspipe_flows.api", globs=globs):
        test.globs["Captioner"] = _in_store(api.Captioner, store)
        runner.run(test)
    assert runner.failures == 0 and runner.tries >= 5


def _in_store(cls, store: Path):
    class Bound(cls):
        @classmethod
        def load(klass, path, device="auto", **kw):
            return cls.load(path, device, store=store, **kw)

    return Bound


def test_store_ids_whole_video_and_errors(run, tmp_path) -> None:
    captioner = etspipe.Captioner.load(run["run"], store=tmp_path / "s.zarr")
    first = captioner.caption(run["video"])
    assert len(first) == 1 and first[0].video == "v_clip" and first[0].segment[0] == 0.0
    assert first[0].attention.shape[1] == len(first[0].times)
    assert first[0].attention.shape[0] - len(first[0].words) in (0, 1)  # + the <e> step when it ended
    again = captioner.caption("v_clip", segments=[(0.2, 1.1)], beam_size=1)  # now a store id
    assert again[0].segment == (0.2, 1.1)
    with etspipe.open_store(tmp_path / "s.zarr") as store:
        assert store.complete_ids() == ["v_clip"]
    with pytest.raises(etspipe.UserError, match="unknown video id"):
        captioner.caption("v_missing")
    with pytest.raises(etspipe.UserError, match="checkpoint not found"):
        etspipe.Captioner.load(tmp_path / "nothing")
    with pytest.raises(etspipe.UserError, match="no proposal model"):
        captioner.dense("v_clip")


def test_score_takes_dicts_as_files() -> None:
    refs = {"v": {"duration": 5.0, "timestamps": [[0, 2]], "sentences": ["a man runs fast"]}}
    res = {"v": [{"timestamp": [0, 2], "sentence": "a man runs fast"}]}
    scores = etspipe.score(res, [refs])
    assert scores["Bleu_1"] == pytest.approx(100.0)  # the same sentence at the same times, at every tIoU
    assert {"METEOR", "CIDEr", "ROUGE_L", "Bleu_4"} <= set(scores)


def test_importing_etspipe_loads_no_stage() -> None:
    code = ("import sys, etspipe; "
            "print(sorted(m for m in ('torch', 'caption_model', 'extract_features') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
