"""The config file is the schema: typos and wrong types fail loudly, with a hint."""

from pathlib import Path

import pytest

from etspipe.config import load_config, reference_config
from etspipe.errors import UserError


def test_reference_values_are_the_paper_setting():
    cfg = load_config()
    assert cfg["extract"]["clip_len"] == 16 and cfg["extract"]["stride"] == 8
    assert cfg["extract"]["frame_size"] == [128, 171] and cfg["extract"]["crop"] == 112
    assert cfg["train"]["weight_decay"] == pytest.approx(1e-4)
    assert cfg["train"]["warmup_steps"] == 1000 and cfg["train"]["d_model"] == 512
    assert cfg["train"]["clip_norm"] == 5.0 and cfg["decode"]["beam_size"] == 3
    assert cfg["data"]["min_word_count"] == 3


def test_every_reference_key_has_a_comment():
    text = (Path(__file__).parent.parent / "configs" / "ets.yaml").read_text()
    for section, values in reference_config().items():
        for key in values:
            line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{key}:"))
            assert "#" in line, f"{section}.{key} has no comment"


def test_override_is_typed_and_applied():
    cfg = load_config(None, ["train.batch_size=32", "model.dropout=0", "extract.fps=null"])
    assert cfg["train"]["batch_size"] == 32
    assert cfg["model"]["dropout"] == 0.0 and isinstance(cfg["model"]["dropout"], float)
    assert cfg["extract"]["fps"] is None


def test_unknown_key_names_the_closest(tmp_path):
    with pytest.raises(UserError, match=r"train\.batch_sise.*did you mean 'train\.batch_size'"):
        load_config(None, ["train.batch_sise=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hiden_dim: 12\n")
    with pytest.raises(UserError, match=r"bad\.yaml.*model\.hiden_dim.*model\.hidden_dim"):
        load_config(bad)


def test_wrong_type_names_key_and_file(tmp_path):
    with pytest.raises(UserError, match=r"train\.epochs must be int"):
        load_config(None, ["train.epochs=many"])
    bad = tmp_path / "c.yaml"
    bad.write_text("train:\n  epochs: 2.5\n")
    with pytest.raises(UserError, match=r"c\.yaml: train\.epochs must be int"):
        load_config(bad)


def test_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 2\n  batch_size: 8\n")
    cfg = load_config(f, ["train.epochs=3"])
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["batch_size"] == 8
    assert cfg["model"]["hidden_dim"] == 512


@pytest.mark.parametrize("content, message", [
    ("train: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "mapping of sections"),
    ("train: 3\n", "must be a section"),
])
def test_malformed_files(tmp_path, content, message):
    f = tmp_path / "c.yaml"
    f.write_text(content)
    with pytest.raises(UserError, match=message):
        load_config(f)


def test_missing_file_and_bad_override():
    with pytest.raises(UserError, match="config file not found: nope.yaml"):
        load_config("nope.yaml")
    with pytest.raises(UserError, match="section.key=value"):
        load_config(None, ["train.epochs"])


def test_demo_config_only_uses_known_keys():
    demo = Path(__file__).parent.parent / "configs" / "demo.yaml"
    if demo.exists():
        load_config(demo)
