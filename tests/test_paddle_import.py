"""`etspipe import-weights paddle-ets`: the seed's released weights as an etspipe run; each bad file one line."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from py2_pickle import dumps_py27
from seed_net_golden import SMALL, make_params

from caption_model.architectures import load_model
from caption_model.formats.paddle_tensor import read_tensor_file, write_tensor_file
from caption_model.paddle_ets import PADDLE_NAMES, PaddleETS
from pipeline import cli

WORDS = ["<s>", "<e>", "<unk>"] + [f"w{i}" for i in range(SMALL["vocab"] - 3)]


def _dict_txt(path: Path, words: list[str] = WORDS) -> Path:
    lines = [f"{w} -1" if w.startswith("<") else f"{w} {100 - i}" for i, w in enumerate(words)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(args: list[str]):
    return CliRunner().invoke(cli, ["import-weights", "paddle-ets", *args])


def _one_error_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture()
def params() -> dict[str, np.ndarray]:
    return make_params(SMALL, seed=3)


def test_a_python2_pdparams_imports_into_a_run_that_loads_with_the_same_numbers(tmp_path: Path, params) -> None:
    """Catches names mapped to the wrong parameters, a transposed [in, out] weight, and word ids off by the
    <pad> that etspipe's vocabulary adds: the model's log-probabilities over dict.txt's words are the
    ones of the weights read directly."""
    src = tmp_path / "ETS.pdparams"
    src.write_bytes(dumps_py27(params))
    out = tmp_path / "run"
    result = _run([str(src), "--dict", str(_dict_txt(tmp_path / "dict.txt")), "--out", str(out)])
    assert result.exit_code == 0, result.output
    model, vocab, ckpt = load_model(out)
    assert isinstance(model, PaddleETS) and ckpt["config"]["model"]["arch"] == "paddle_ets"
    assert ckpt["config"]["decode"]["beam_size"] == 3 and ckpt["config"]["decode"]["max_len"] == 80
    assert ckpt["config"]["data"]["max_rows"] == 0  # every row of a segment
    for name, attr in PADDLE_NAMES.items():
        assert np.array_equal(getattr(model, attr).detach().numpy(), params[name]), name
    assert vocab.itos[1:] == WORDS  # etspipe id = dict.txt line + 1
    # one decoding step from <s>: Paddle's softmax over its words, <pad> impossible
    feats = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 5, SMALL["feat"])).astype(np.float32))
    mask = torch.ones(1, 5, dtype=torch.bool)
    memory = model.encode(feats, mask)
    log_p, _, _ = model.step(torch.tensor([vocab.stoi["<s>"]]), model.init_state(memory), memory)
    assert log_p[0, 0] == float("-inf") and torch.isclose(log_p[0, 1:].exp().sum(), torch.tensor(1.0))
    report = json.loads((out / "import.json").read_text())
    assert report["vocabulary"] == SMALL["vocab"] and len(report["params_sha256"]) == 64


def test_python3_pickle_and_save_params_folder_give_the_same_run(tmp_path: Path, params) -> None:
    """paddle.save's Python 3 pickle (protocol 4, with its name map) and fluid's one-file-per-parameter
    folder import to the same weights as the Python 2 pickle."""
    py3 = tmp_path / "p3.pdparams"
    py3.write_bytes(pickle.dumps({**params, "StructuredToParameterName@@": {"x": "fc_0.w_0"}}, protocol=4))
    folder = tmp_path / "save_params"
    folder.mkdir()
    for name, value in params.items():
        write_tensor_file(folder / name, value)
    dict_txt = str(_dict_txt(tmp_path / "dict.txt"))
    for i, src in enumerate((py3, folder)):
        assert _run([str(src), "--dict", dict_txt, "--out", str(tmp_path / f"r{i}")]).exit_code == 0
    a, _, _ = load_model(tmp_path / "r0")
    b, _, _ = load_model(tmp_path / "r1")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_files_written_by_paddle_itself_read_back() -> None:
    """fluid's save layout and paddle.save's pickle, as Paddle 3.3.1 wrote them (benchmarks/paddle_parity.py),
    read to the values they were written from (make_params(SMALL, 11))."""
    fixtures = Path(__file__).parent / "fixtures"
    expected = make_params(SMALL, seed=11)
    folder = fixtures / "paddle_save_params_small"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["fc_0.b_0", "fc_4.w_0", "gru_0.b_0"]
    for name in names:
        assert np.array_equal(read_tensor_file(folder / name), expected[name]), name
    from caption_model.paddle_import import read_pdparams

    pickled = read_pdparams(fixtures / "paddle_params_small.pdparams")
    assert pickled and all(np.array_equal(v, expected[k]) for k, v in pickled.items())


@pytest.mark.parametrize("damage, names", [
    ("missing", "missing fc_7.w_0 (expected shape [8, 1])"),
    ("extra", "unexpected parameter fc_10.w_0"),
    ("misshapen", "gru_0.w_0 has shape [6, 17], expected [6, 18]"),
    ("transposed", "fc_4.w_0 has shape [8, 12], expected [12, 8]"),
    ("truncated", "ends early"),
    ("not-a-pickle", "not a Paddle parameter file"),
    ("code", "refusing to load os.system"),
])
def test_bad_parameter_files_get_one_line_naming_what_is_wrong(tmp_path: Path, params, damage: str, names: str) -> None:
    src = tmp_path / "ETS.pdparams"
    if damage == "missing":
        del params["fc_7.w_0"]
    elif damage == "extra":
        params["fc_10.w_0"] = np.zeros((2, 2), np.float32)
    elif damage == "misshapen":
        params["gru_0.w_0"] = params["gru_0.w_0"][:, :17]
    elif damage == "transposed":
        params["fc_4.w_0"] = params["fc_4.w_0"].T.copy()
    raw = dumps_py27(params)
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "not-a-pickle":
        raw = b"PK\x03\x04 not a pickle at all"
    elif damage == "code":
        raw = b"\x80\x02cos\nsystem\nU\x04trueR."
    src.write_bytes(raw)
    out = tmp_path / "run"
    line = _one_error_line(_run([str(src), "--dict", str(_dict_txt(tmp_path / "dict.txt")), "--out", str(out)]))
    assert names in line and str(src) in line
    assert not (out / "best.pt").exists()


@pytest.mark.parametrize("words, names", [
    (WORDS[:-1], "22 words, but the weights have 23 vocabulary rows"),
    (["<unk>", "<s>", "<e>"] + WORDS[3:], "the first three words must be <s> <e> <unk>"),
    (WORDS[:-1] + ["w0"], "'w0' appears twice"),
])
def test_a_dictionary_that_does_not_fit_the_weights_is_one_line(tmp_path: Path, params, words, names) -> None:
    src = tmp_path / "ETS.pdparams"
    src.write_bytes(dumps_py27(params))
    line = _one_error_line(_run([str(src), "--dict", str(_dict_txt(tmp_path / "d.txt", words)),
                                 "--out", str(tmp_path / "run")]))
    assert names in line


def test_no_dictionary_and_resume_of_an_import_are_one_line(tmp_path: Path, params) -> None:
    src = tmp_path / "ETS.pdparams"
    src.write_bytes(dumps_py27(params))
    assert "--dict dict.txt, or --train-json" in _one_error_line(_run([str(src), "--out", str(tmp_path / "r")]))
    assert _run([str(src), "--dict", str(_dict_txt(tmp_path / "d.txt")), "--out", str(tmp_path / "r")]).exit_code == 0
    again = _run([str(src), "--dict", str(tmp_path / "d.txt"), "--out", str(tmp_path / "r")])
    assert "--overwrite" in _one_error_line(again)


def test_without_dict_txt_the_dictionary_is_rebuilt_by_the_seeds_rule(tmp_path: Path) -> None:
    """--train-json: the seed's rule (PTB tokenizer, non-ASCII to space, count >= 3, ties in Python 2.7's
    dict order) gives the word ids; a corpus whose dictionary has another size than the weights is refused."""
    from caption_model.formats.seed_vocab import seed_dictionary

    sentences = ["A man plays the drum.", "The man plays a guitar.", "A dog runs, the dog jumps.",
                 "A man and a dog play in the park.", "The café is closed.", "Drum, guitar and dog."]
    train = {f"v_{i}": {"duration": 10.0, "timestamps": [[0, 5]], "sentences": [s]} for i, s in enumerate(sentences)}
    train_json = tmp_path / "train.json"
    train_json.write_text(json.dumps(train), encoding="utf-8")
    words = [w for w, _ in seed_dictionary(train_json)]
    assert words[:3] == ["<s>", "<e>", "<unk>"] and {"a", "man", "the", "dog"} <= set(words) and "park" not in words
    sizes = {**SMALL, "vocab": len(words)}
    src = tmp_path / "ETS.pdparams"
    src.write_bytes(dumps_py27(make_params(sizes, seed=1)))
    result = _run([str(src), "--train-json", str(train_json), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    _, vocab, ckpt = load_model(tmp_path / "run")
    assert vocab.itos[1:] == words and "rebuilt from" in ckpt["imported"]["dictionary"]
    src.write_bytes(dumps_py27(make_params({**sizes, "vocab": len(words) + 1}, seed=1)))
    line = _one_error_line(_run([str(src), "--train-json", str(train_json), "--out", str(tmp_path / "r2")]))
    assert f"{len(words)} words, but the weights have {len(words) + 1} vocabulary rows" in line
