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
    lines = text.splitlines()
    for section, values in reference_config().items():
        head = next(i for i, ln in enumerate(lines) if ln.split("#")[0].rstrip() == f"{section}:")
        body = lines[head + 1:]  # a key may share its name with a section (proposals.model)
        for key in values:
            line = next(ln for ln in body if ln.strip().startswith(f"{key}:"))
            assert "#" in line, f"{section}.{key} has no comment"


def test_override_is_typed_and_applied():
    cfg = load_config(None, ["train.batch_size=32", "model.dropout=0", "extract.fps=null"])
    assert cfg["train"]["batch_size"] == 32
    assert cfg["model"]["dropout"] == 0.0 and isinstance(cfg["model"]["dropout"], float)
    assert cfg["extract"]["fps"] is None


def write_config(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    return f


@pytest.mark.parametrize("override, override_error, file_text, file_error", [
    ("train.batch_sise=3", r"train\.batch_sise.*did you mean 'train\.batch_size'",
     "model:\n  hiden_dim: 12\n", r"c\.yaml.*model\.hiden_dim.*model\.hidden_dim"),
    ("train.epochs=many", r"train\.epochs must be int",
     "train:\n  epochs: 2.5\n", r"c\.yaml: train\.epochs must be int"),
])
def test_a_mistake_names_the_key_the_file_and_the_closest_key(tmp_path, override, override_error, file_text,
                                                               file_error):
    with pytest.raises(UserError, match=override_error):
        load_config(None, [override])
    with pytest.raises(UserError, match=file_error):
        load_config(write_config(tmp_path, file_text))


def test_file_then_overrides(tmp_path):
    f = write_config(tmp_path, "train:\n  epochs: 2\n  batch_size: 8\n")
    cfg = load_config(f, ["train.epochs=3"])
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["batch_size"] == 8
    assert cfg["model"]["hidden_dim"] == 512


@pytest.mark.parametrize("content, message", [
    ("train: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "mapping of sections"),
    ("train: 3\n", "must be a section"),
])
def test_malformed_files(tmp_path, content, message):
    with pytest.raises(UserError, match=message):
        load_config(write_config(tmp_path, content))


def test_missing_file_and_bad_override():
    with pytest.raises(UserError, match="config file not found: nope.yaml"):
        load_config("nope.yaml")
    with pytest.raises(UserError, match="section.key=value"):
        load_config(None, ["train.epochs"])


def test_demo_config_only_uses_known_keys_and_every_value_it_sets_is_applied():
    import yaml

    from etspipe_demo.run import DEMO_CONFIG

    assert DEMO_CONFIG.is_file(), f"etspipe demo reads {DEMO_CONFIG}, which is missing"
    written = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    cfg = load_config(DEMO_CONFIG)  # an unknown key or a value out of range is a UserError
    assert written and all(cfg[section][key] == value for section, keys in written.items()
                           for key, value in keys.items())
    assert cfg["extract"]["width_mult"] < 1.0  # the demo's narrow C3D, not the reference network


@pytest.mark.parametrize("override, message", [
    ("train.epochs=-1", r"train\.epochs=-1 is out of range \(allowed: >= 1\)"),
    ("train.epochs=", r"train\.epochs needs a value \(allowed: >= 1\)"),
    ("model.hidden_dim=0", r"model\.hidden_dim=0 is out of range"),
    ("decode.beam_size=0", r"decode\.beam_size=0 is out of range"),
    ("data.val_fraction=1.5", r"data\.val_fraction=1\.5 is out of range \(allowed: 0 <= x < 1\)"),
    ("data.val_fraction=1", r"data\.val_fraction=1\.0 is out of range"),
    ("train.batch_size=0", r"train\.batch_size=0 is out of range"),
    ("train.warmup_steps=0", r"train\.warmup_steps=0 is out of range"),
    ("model.dropout=2", r"model\.dropout=2\.0 is out of range \(allowed: 0 <= x < 1\)"),
    ("model.dropout=1.5", r"model\.dropout=1\.5 is out of range"),
    ("eval.tious=[1.5]", r"eval\.tious=\[1\.5\] holds 1\.5, which is out of range \(allowed: 1\+ values 0 < x <= 1\)"),
    ("eval.tious=[]", r"eval\.tious=\[\] must hold at least 1 value"),
    ("model.encoder=transformer", r"model\.encoder=transformer is not allowed \(allowed: linear\|bilstm\)"),
    ("extract.pca_dim=abc", r"extract\.pca_dim=abc must be an int \(allowed: null or int >= 1\)"),
    ("extract.fps=0", r"extract\.fps=0 is out of range \(allowed: null or > 0\)"),
    ("extract.frame_size=[128]", r"extract\.frame_size=\[128\] must hold 2 value"),
    ("train.save_dir=", r"train\.save_dir needs a value"),
])
def test_values_outside_the_rules_are_refused_naming_key_value_and_rule(override, message):
    with pytest.raises(UserError, match=r"^-o: " + message):
        load_config(None, [override])


@pytest.mark.parametrize("override, key, expected", [
    ("extract.pca_dim=500", ("extract", "pca_dim"), 500), ("extract.pca_dim=null", ("extract", "pca_dim"), None),
    ("extract.fps=29.97", ("extract", "fps"), 29.97), ("data.val_fraction=0", ("data", "val_fraction"), 0.0),
    ("model.dropout=0.99", ("model", "dropout"), 0.99), ("eval.tious=[0.5, 1]", ("eval", "tious"), [0.5, 1]),
    ("model.encoder=bilstm", ("model", "encoder"), "bilstm"), ("extract.batch_size=0", ("extract", "batch_size"), 0),
])
def test_values_at_the_edges_of_the_rules_are_accepted(override, key, expected):
    assert load_config(None, [override])[key[0]][key[1]] == expected


def test_every_mistake_of_one_load_is_reported_one_line_each(tmp_path):
    f = write_config(tmp_path, "train:\n  epochs: 0\nmodel:\n  dropout: 1.0\n")
    with pytest.raises(UserError) as info:
        load_config(f, ["decode.beam_size=0", "train.epochs"])
    lines = str(info.value).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(str(f)) and "train.epochs=0" in lines[0]
    assert "model.dropout=1.0" in lines[1] and "decode.beam_size=0" in lines[2]
    assert lines[3].startswith("-o train.epochs:") and "section.key=value" in lines[3]


def test_every_key_has_a_rule_the_reference_value_meets():
    from etspipe.config import value_rules

    rules = value_rules()
    for section, values in reference_config().items():
        for key, value in values.items():
            if isinstance(value, bool):
                continue  # true/false: the type check is the whole rule
            assert f"{section}.{key}" in rules, f"{section}.{key}: no [rule] at the start of its comment"
            assert rules[f"{section}.{key}"].problem(value) is None, f"{section}.{key}: reference value breaks its rule"


def test_a_cli_flag_is_checked_like_an_override():
    from etspipe.config import set_value

    cfg = load_config()
    with pytest.raises(UserError, match=r"^--beam-size: decode\.beam_size=0 is out of range"):
        set_value(cfg, "decode.beam_size", 0, source="--beam-size")
    set_value(cfg, "decode.beam_size", 1)
    assert cfg["decode"]["beam_size"] == 1


def test_an_unreadable_rule_is_a_bug_of_the_schema_not_a_user_error():
    from etspipe.config_rules import Rule

    with pytest.raises(ValueError, match="cannot read the value rule"):
        Rule(">= one")


def test_a_float_written_without_a_dot_is_a_float():
    cfg = load_config(None, ["proposals.weight_decay=1e-4", "proposals.lr=5E-4"])
    assert cfg["proposals"]["weight_decay"] == 1e-4 and cfg["proposals"]["lr"] == 5e-4  # YAML 1.1 reads both as text
    with pytest.raises(UserError, match="proposals.weight_decay must be float"):
        load_config(None, ["proposals.weight_decay=small"])
