"""The HTML viewer's Python side: inputs, cues, the attention sidecar, escaping, `etspipe view`.

What the page does in a browser is tested in test_view_browser.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from caption_model.formats.attention_sidecar import AttentionSidecar, sidecar_path_for
from caption_model.formats.subtitles import to_vtt
from etspipe.errors import UserError
from etspipe_view import build_page as _build_page
from etspipe_view import build_views, find_video
from etspipe_view.inputs import Caption
from etspipe_view.matching import tiou, tiou_table, video_scores
from etspipe_view.page import embed_json

EVIL = 'a man </script><script>window.pwned = 1</script> says "hi" & <b>waves</b>'


def result_doc(results: dict) -> dict:
    return {"version": "VERSION 1.0", "results": results, "external_data": {"used": True, "details": "test"}}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def build_page(results, out, **options):
    """The viewer with the project's cue writer, as `etspipe_flows.page.write_page` calls it."""
    return _build_page(results, out, cues=to_vtt, **options)


def page_data(html_text: str) -> dict:
    """The JSON the page's script reads (parsed the way JSON.parse would)."""
    m = re.search(r'<script type="application/json" id="etspipe-data">(.*?)</script>', html_text, re.S)
    assert m, "data block missing"
    return json.loads(m.group(1))


@pytest.fixture
def results_file(tmp_path: Path) -> Path:
    return write_json(tmp_path / "run.json", result_doc({
        "v_a": [{"timestamp": [0.5, 2.0], "sentence": EVIL}, {"timestamp": [1.5, 3.8], "sentence": "it moves"}],
        "v_b": [{"timestamp": [0, 5], "sentence": "nothing"}, {"timestamp": "bad", "sentence": "dropped"}],
    }))


def test_embedded_json_cannot_close_its_script_and_round_trips():
    data = {"s": EVIL + " <!-- \u2028"}
    text = embed_json(data)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == data


def test_page_escapes_every_string_and_keeps_them_as_data(results_file: Path, tmp_path: Path):
    out = tmp_path / "page.html"
    build_page(results_file, out, title='</title><script>alert(1)</script>')
    text = out.read_text(encoding="utf-8")
    assert "window.pwned" in text  # it is there, as data...
    assert "<script>window.pwned" not in text and "<script>alert" not in text  # ...never as markup
    assert text.count("<script") == 2  # the data block and the page's own script
    data = page_data(text)
    assert data["videos"][0]["preds"][0]["s"] == EVIL
    entries = json.loads(results_file.read_text())["results"]["v_a"]
    assert data["videos"][0]["vtt"] == to_vtt(entries)  # the caption track holds the subtitle writer's cues
    assert "&lt;/script&gt;" in data["videos"][0]["vtt"]


def test_sidecar_round_trip_attaches_attention_to_its_caption(results_file: Path, tmp_path: Path):
    sidecar = AttentionSidecar()
    words = ["it", "moves", "<e>"]
    attn = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    sidecar.add("v_a", 1, words, attn, [1.7, 2.6, 3.5], [1.5, 3.8], "it moves", duration=4.0)
    sidecar.add("v_a", 0, ["stale"], np.ones((1, 2)) / 2, [0.6, 1.8], [0.5, 2.0], "another sentence")
    path = sidecar.write(sidecar_path_for(results_file))
    assert path == tmp_path / "run_attention.json" and len(sidecar) == 2
    views = {v.video_id: v for v in build_views(results_file, attention_path=path)}
    assert list(views["v_a"].attention) == [1]  # the stale entry (other sentence) is left out
    att = views["v_a"].attention[1]
    assert att.words == words and att.row_times == [1.7, 2.6, 3.5]
    np.testing.assert_allclose(att.weights, attn, atol=1e-4)
    assert views["v_a"].duration == 4.0

    out = tmp_path / "page.html"
    summary = build_page(results_file, out)  # the sidecar beside the results is found by its name
    assert summary["with_attention"] == 1
    q = page_data(out.read_text(encoding="utf-8"))["videos"][0]["preds"][1]["att"]
    import base64

    cells = np.frombuffer(base64.b64decode(q["q"]), np.uint8).reshape(3, 3)
    assert cells.argmax(axis=1).tolist() == attn.argmax(axis=1).tolist() and cells.max() == 255


def test_sidecar_refuses_attention_that_does_not_fit_the_words():
    with pytest.raises(ValueError, match="does not fit"):
        AttentionSidecar().add("v", 0, ["a", "b"], np.ones((3, 4)), range(4), [0, 1], "a b")


def test_references_give_best_match_and_per_video_scores(results_file: Path, tmp_path: Path):
    ann = write_json(tmp_path / "val.json", {"v_a": {"duration": 4.0, "timestamps": [[0.4, 2.1], [3.0, 4.0]],
                                                     "sentences": ["a man <b>waves</b>", "it stops"]}})
    out = tmp_path / "page.html"
    build_page(results_file, out, annotation_paths=[ann])
    data = page_data(out.read_text(encoding="utf-8"))
    v_a, v_b = data["videos"]
    assert data["has_refs"] and v_a["duration"] == 4.0 and v_b["duration"] == 5.0  # v_b: its last end
    assert v_a["preds"][0]["ref"] == 0 and v_a["preds"][0]["tiou"] == pytest.approx(1.5 / 1.7, abs=1e-3)
    assert v_a["scores"]["recall@0.5"] == 0.5 and v_a["scores"]["precision@0.5"] == 0.5
    assert v_b["refs"] == [] and v_b["scores"] == {}
    assert [p["s"] for p in v_b["preds"]] == ["nothing"]  # the malformed entry is skipped, not fatal


def test_tiou_and_video_scores_edge_cases():
    a, b = Caption(0, 2, "x"), Caption(1, 3, "y")
    assert tiou(a, b) == pytest.approx(1 / 3) and tiou(a, Caption(5, 6, "z")) == 0.0
    assert tiou(Caption(1, 1, "p"), Caption(1, 1, "q")) == 1.0
    assert video_scores(tiou_table([], [a]), 1) == {"recall@0.5": 0.0, "precision@0.5": 0.0, "mean tIoU": 0.0}
    assert video_scores(tiou_table([a, b], [a]), 1) == {"recall@0.5": 1.0, "precision@0.5": 0.5,
                                                         "mean tIoU": pytest.approx((1 + 1 / 3) / 2)}


def test_scores_file_beside_results_gives_the_metrics_table(results_file: Path, tmp_path: Path):
    scores = {"average": {"METEOR": 5.5, "CIDEr": None}, "per_tiou": {"0.3": {"METEOR": 6.0, "CIDEr": None},
                                                                     "0.5": {"METEOR": 5.0, "CIDEr": None}},
              "warnings": ["Java not found"]}
    write_json(tmp_path / "run_scores.json", scores)
    out = tmp_path / "page.html"
    build_page(results_file, out)
    table = page_data(out.read_text(encoding="utf-8"))["metrics"]
    assert table["columns"] == ["metric", "tIoU 0.3", "tIoU 0.5", "average"]
    assert table["rows"] == [["METEOR", 6.0, 5.0, 5.5], ["CIDEr", None, None, None]]
    assert "Java" in table["note"]


def test_videos_are_linked_relative_to_the_page_or_get_a_placeholder(results_file: Path, tmp_path: Path):
    videos = tmp_path / "clips"
    videos.mkdir()
    (videos / "a.webm").write_bytes(b"x")  # ActivityNet's v_ prefix may be missing from file names
    assert find_video("v_a", [videos]) == videos / "a.webm"
    out = tmp_path / "site" / "page.html"
    build_page(results_file, out, video_dirs=[videos])
    v_a, v_b = page_data(out.read_text(encoding="utf-8"))["videos"]
    assert v_a["src"] == "../clips/a.webm" and v_a["missing"] is None
    assert v_b["src"] is None and "v_b" in v_b["missing"]


def test_video_file_names_become_percent_encoded_urls(tmp_path: Path):
    """`#`, `?`, `%` and spaces in a folder or file name would cut or garble the URL in `video.src`."""
    vid = "a#b ?%c"
    videos = tmp_path / "clips #1"
    videos.mkdir()
    (videos / f"{vid}.mp4").write_bytes(b"x")
    results = write_json(tmp_path / "run.json", result_doc({vid: [{"timestamp": [0, 1], "sentence": "x"}]}))
    out = tmp_path / "site" / "page.html"
    build_page(results, out, video_dirs=[videos])
    (video,) = page_data(out.read_text(encoding="utf-8"))["videos"]
    assert video["src"] == "../clips%20%231/a%23b%20%3F%25c.mp4"
    assert video["id"] == vid  # what the page shows stays readable


def test_video_on_another_drive_gets_an_absolute_file_url(results_file: Path, tmp_path: Path, monkeypatch):
    """On Windows `os.path.relpath` raises ValueError when the page and the video are on different drives."""
    import os

    videos = tmp_path / "clips"
    videos.mkdir()
    (videos / "a.webm").write_bytes(b"x")

    def other_drive(path, start=os.curdir):
        raise ValueError(f"path is on mount 'D:', start on mount 'C:' ({path}, {start})")

    monkeypatch.setattr(os.path, "relpath", other_drive)
    out = tmp_path / "site" / "page.html"
    build_page(results_file, out, video_dirs=[videos])
    v_a = page_data(out.read_text(encoding="utf-8"))["videos"][0]
    assert v_a["src"] == (videos / "a.webm").resolve().as_uri() and v_a["src"].startswith("file:///")


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ('{"results": []}', "not an ActivityNet result file"),
])
def test_bad_result_file_is_one_user_error_naming_it(tmp_path: Path, content: str, match: str):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(UserError, match=match) as info:
        build_page(bad, tmp_path / "p.html")
    assert "bad.json" in str(info.value)


def test_cli_writes_the_page_and_reports_user_errors_in_one_line(results_file: Path, tmp_path: Path):
    from pipeline import cli

    out = tmp_path / "out" / "report.html"
    run = CliRunner().invoke(cli, ["view", str(results_file), "-o", str(out)])
    assert run.exit_code == 0, run.output
    assert out.is_file() and "2 videos, 3 captions" in run.output
    for args, needle in (([str(tmp_path / "missing.json")], "missing.json"),
                         ([str(results_file), "--videos", str(tmp_path / "nope")], "nope"),
                         ([str(results_file), "--attention", str(results_file)], "not an attention sidecar")):
        run = CliRunner().invoke(cli, ["view", *args, "-o", str(out)])
        errors = [line for line in run.output.splitlines() if not line.startswith("warning: ")]
        assert run.exit_code == 1 and len(errors) == 1 and "Traceback" not in run.output, run.output
        assert errors[0].startswith("error: ") and needle in errors[0]


def test_viewer_imports_no_torch_and_no_stage():
    code = ("import sys, etspipe_view; bad = [m for m in ('torch', 'caption_model', 'features_store', "
            "'extract_features', 'click') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
