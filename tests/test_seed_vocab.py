"""The seed's dict.txt rebuilt in Python 3: tie order, cut, specials, non-ASCII, file round trip."""

from __future__ import annotations

import json
import shutil

import pytest

from caption_model.formats.py27_dict import py27_order
from caption_model.formats.seed_vocab import (
    SPECIALS,
    read_dict_txt,
    remove_nonascii,
    seed_dictionary,
    write_dict_txt,
)
from etspipe.errors import UserError

SPECIAL_ENTRIES = [(s, -1) for s in SPECIALS]


def fake_tokenizer(captions: dict[int, list[dict[str, str]]]) -> dict[int, list[str]]:
    """The PTBTokenizer contract without Java: lower case, split on spaces, drop '.' and ','."""
    out: dict[int, list[str]] = {}
    for k, caps in captions.items():  # walks the dict as given, like the real wrapper
        out[k] = [" ".join(w for w in (t.strip(".,").lower() for t in c["caption"].split()) if w) for c in caps]
    return out


def _train_json(tmp_path, videos: dict[str, list[str]]):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({v: {"duration": 10.0, "timestamps": [[0, 1]] * len(s), "sentences": s}
                                for v, s in videos.items()}))
    return path


def test_tie_order_is_python27_dict_order_hand_derived(tmp_path):
    # First seen: b, d, a, e, c (3 each), f (4), g (2). A one-letter string hashes to ((o << 7) * 1000003 ^ o) ^ 1
    # with o its code, whose low 7 bits are (o ^ 1): a, c, b, e, d, g, f -> slots 0, 2, 3, 4, 5, 6, 7 of the
    # 32-slot table the 6th word grows it to. No collisions, so 2.7 walks the words in that slot order.
    path = _train_json(tmp_path, {
        "v_one": ["B d a.", "e c f, f"],
        "v_two": ["b D a e", "c f g", "b d a e c f g"],
    })
    got = seed_dictionary(path, tokenizer=fake_tokenizer)
    assert got == SPECIAL_ENTRIES + [("f", 4), ("a", 3), ("c", 3), ("b", 3), ("e", 3), ("d", 3)]
    assert [w for w, _ in got[4:]] == py27_order(["b", "d", "a", "e", "c"])  # the emulation agrees
    assert seed_dictionary(path, tokenizer=fake_tokenizer, min_count=2)[-1] == ("g", 2)


def test_sentences_reach_the_tokenizer_numbered_in_python27_video_order(tmp_path):
    videos = {f"v_{name}": [f"{name} one", f"{name} two"] for name in ("kiwi", "fig", "plum", "date", "lime", "pear")}
    seen: list[tuple[int, str]] = []

    def recording(captions):
        seen.extend((k, c["caption"]) for k, v in captions.items() for c in v)
        return fake_tokenizer(captions)

    seed_dictionary(_train_json(tmp_path, videos), tokenizer=recording)
    expected = [s for v in py27_order(list(videos)) for s in videos[v]]
    assert seen == list(enumerate(expected))


def test_non_ascii_becomes_space(tmp_path):
    assert remove_nonascii("pi\u00f1ata, the man\u2019s \U0001f600!") == "pi ata, the man s  !"
    path = _train_json(tmp_path, {"v_x": ["A pi\u00f1ata.", "Pi\u00f1ata", "the pi\u00f1ata"]})
    seen: list[str] = []

    def recording(captions):
        seen.extend(c["caption"] for v in captions.values() for c in v)
        return fake_tokenizer(captions)

    words = dict(seed_dictionary(path, tokenizer=recording))
    assert all(ord(ch) < 128 for s in seen for ch in s)
    assert words["pi"] == 3 and words["ata"] == 3 and "a" not in words


def test_counts_split_like_python2_byte_strings(tmp_path):
    # PTBTokenizer joins "1 1/4" into one token with a no-break space; Python 2 split its byte-string output on
    # ASCII whitespace only, so the seed counted "1\xa01/4" as one word.
    path = _train_json(tmp_path, {"v_x": ["x", "y", "z"]})
    out = {0: ["add 1\u00a01/4 cup"], 1: ["1\u00a01/4 cup"], 2: ["1\u00a01/4 cup"]}
    words = dict(seed_dictionary(path, tokenizer=lambda captions: {k: out[k] for k in captions}))
    assert words == {**dict(SPECIAL_ENTRIES), "1\u00a01/4": 3, "cup": 3}


def test_dict_txt_round_trip(tmp_path):
    entries = SPECIAL_ENTRIES + [("the", 9), ("a", 3), ("1\u00a01/4", 3)]
    path = tmp_path / "dict.txt"
    write_dict_txt(entries, path)
    assert path.read_text(encoding="utf-8").splitlines()[:4] == ["<s> -1", "<e> -1", "<unk> -1", "the 9"]
    assert read_dict_txt(path) == [w for w, _ in entries]


@pytest.mark.parametrize(("text", "where"), [
    ("<s> -1\n<e> -1\n<unk> -1\nlonely\n", "line 4"),
    ("<s> -1\n<e> -1\n<unk> -1\nword many\n", "line 4"),
    ("<s> -1\n\n<e> -1\n<unk> -1\n", "line 2"),
    ("<e> -1\n<s> -1\n<unk> -1\nthe 5\n", "first three"),
    ("<s> -1\n<e> -1\n", "first three"),
])
def test_malformed_dict_txt_is_a_one_line_user_error(tmp_path, text, where):
    path = tmp_path / "dict.txt"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        read_dict_txt(path)
    message = str(err.value)
    assert str(path) in message and where in message and "\n" not in message


def test_unreadable_train_json_is_a_user_error(tmp_path):
    path = tmp_path / "train.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match="train.json"):
        seed_dictionary(path, tokenizer=fake_tokenizer)
    path.write_text(json.dumps({"v_x": {"timestamps": []}}))
    with pytest.raises(UserError, match="v_x"):
        seed_dictionary(path, tokenizer=fake_tokenizer)


@pytest.mark.skipif(shutil.which("java") is None, reason="the seed's tokenizer needs Java")
def test_with_the_java_ptb_tokenizer(tmp_path):
    path = _train_json(tmp_path, {"v_x": ["Add 1 1/4 cups (of sugar)."] * 3})
    words = dict(seed_dictionary(path))
    # '.' is dropped by coco-caption's list; '-lrb-' survives it (the list has '-LRB-', the tokenizer lower-cased).
    assert words == {**dict(SPECIAL_ENTRIES), "add": 3, "1\u00a01/4": 3, "cups": 3, "-lrb-": 3, "of": 3,
                     "sugar": 3, "-rrb-": 3}
