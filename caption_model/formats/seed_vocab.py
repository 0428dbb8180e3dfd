"""The seed's vocabulary (``dict.txt``), rebuilt in Python 3 with the same word ids.

Why: the released ETS weights index their embedding and output rows by the line
numbers of the seed's ``dict.txt``. That file came from a Python 2 script
(``data/dataset/ets/generate_data.py``, ``generate_dictionary``): it sorted words
by count with a stable sort over ``dict.iteritems()``, so words of equal count
(most of them) sit in CPython 2.7's dict order. A user holding only the weights
can rebuild the ids here; the steps follow the script, with every Python 2 dict
walk replaced by :func:`caption_model.formats.py27_dict.py27_order`:

1. ``json.loads(train.json)``: the videos, keys inserted in document order, walked
   in 2.7 order; each video's sentences in list order, non-ASCII characters
   replaced by spaces, numbered 0, 1, ... into a dict of ints.
2. coco-caption's PTBTokenizer (Stanford CoreNLP 3.4.1, ``-preserveLines
   -lowerCase``, then its fixed punctuation list dropped) over that dict in 2.7
   order; its result, another dict of ints, walked in 2.7 order.
3. words counted into a dict in first-seen order; that dict sorted by count,
   descending, stably over its 2.7 order; words seen at least 3 times kept.
4. ``<s> -1``, ``<e> -1``, ``<unk> -1`` first (ids 0, 1, 2).

pycocoevalcap 1.2 (the Python 3 port) ships the same jar and the same wrapper as
tylin/coco-caption, except that it encodes the sentences to UTF-8 and decodes
the tokenizer's output: the same bytes for the ASCII text fed here. The 2.7 order is a
64-bit build's: on ActivityNet's captions a 32-bit build would give about 1,300 words other ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from caption_model.formats.py27_dict import py27_order
from etspipe.errors import UserError

SPECIALS = ("<s>", "<e>", "<unk>")
MIN_COUNT = 3

# {id: [{"caption": text}, ...]} -> {id: [tokenized text, ...]}: the PTBTokenizer.tokenize contract.
Tokenizer = Callable[[dict[int, list[dict[str, str]]]], dict[int, list[str]]]


def remove_nonascii(text: str) -> str:
    """Each non-ASCII character becomes a space, as the seed did before tokenizing."""
    return "".join(c if ord(c) < 128 else " " for c in text)


def ptb_tokenize(captions: dict[int, list[dict[str, str]]]) -> dict[int, list[str]]:
    """pycocoevalcap's PTBTokenizer (Java): the tokenizer the seed ran; imported late so Java is needed only here."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize(captions)


def seed_dictionary(train_json_path: str | Path, tokenizer: Tokenizer | None = None,
                    min_count: int = MIN_COUNT) -> list[tuple[str, int]]:
    """The lines of the seed's ``dict.txt`` for this ``train.json``, as ``(word, count)``; specials first with -1.

    `tokenizer` defaults to the Java PTBTokenizer; tests pass a stand-in with the same contract.
    """
    path = Path(train_json_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read the training captions: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of videos")

    sentences: list[str] = []
    for vid in py27_order(data):
        content = data[vid]
        if not isinstance(content, dict) or not isinstance(content.get("sentences"), list):
            raise UserError(f"{path}: video {vid!r} has no 'sentences' list")
        sentences.extend(remove_nonascii(s) for s in content["sentences"])

    # input_dict: ids 0..n-1 inserted in order; the tokenizer walks it (items()) in 2.7 order.
    input_dict = {i: [{"caption": sentences[i]}] for i in py27_order(range(len(sentences)))}
    output = (tokenizer or ptb_tokenize)(input_dict)

    # The tokenizer's lines were Python 2 byte strings: split and count them as bytes. bytes.split() breaks on
    # ASCII whitespace only, as 2.7's str.split() did; str.split() would also break the no-break space that
    # PTBTokenizer puts inside a fraction token ("1 1/4" -> "1\xa01/4") and count "1" and "1/4" instead.
    counts: dict[bytes, int] = {}
    for i in py27_order(output):  # output_dict.iteritems(): a fresh 2.7 dict filled in the tokenizer's order
        for w in output[i][0].encode("utf-8").split():
            counts[w] = counts.get(w, 0) + 1

    ranked = sorted(py27_order(counts), key=counts.__getitem__, reverse=True)  # stable, as Python 2's sorted
    return [(s, -1) for s in SPECIALS] + [(w.decode("utf-8"), counts[w]) for w in ranked if counts[w] >= min_count]


def write_dict_txt(entries: list[tuple[str, int]], path: str | Path) -> None:
    """Write ``word count`` lines; the line index is the word id the seed's reader assigns."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for word, count in entries:
            f.write(f"{word} {count}\n")


def read_dict_txt(path: str | Path) -> list[str]:
    """Words of a seed ``dict.txt`` by id (line index), checked so that a damaged file fails loudly, not silently.

    Lines are split as bytes, on ASCII whitespace only, as the Python 2 writer and reader saw them: a word may
    hold a no-break space (PTBTokenizer's "1\xa01/4").
    """
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the vocabulary: {exc}") from exc
    words: list[str] = []
    for n, raw in enumerate(lines, start=1):
        fields = raw.split()
        try:
            if len(fields) != 2:
                raise ValueError
            int(fields[1], 10)
            words.append(fields[0].decode("utf-8"))
        except ValueError:  # UnicodeDecodeError included
            raise UserError(f"{path}, line {n}: expected 'word count', got {raw!r}") from None
    if tuple(words[:3]) != SPECIALS:
        raise UserError(f"{path}: the first three words must be {' '.join(SPECIALS)}, got {' '.join(words[:3])!r}")
    return words
