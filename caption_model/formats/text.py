"""Tokenizer and vocabulary of the caption model.

The captions are scored by pycocoevalcap, which first runs the Stanford PTB
tokenizer (``-lowerCase``) and then drops a fixed list of punctuation tokens.
The model should be trained on the same units the metrics count, so
:func:`tokenize` reproduces those rules in pure Python (no Java at training
time):

* lower case; typographic quotes and apostrophes become ASCII ones;
* clitics are split off as PTB does (``don't -> do n't``, ``man's -> man 's``);
* punctuation is split off words and dropped (``. , ? ! : ; - -- ... ' " `` and
  brackets); hyphenated words (``well-known``), decimals (``3.5``) and
  thousands (``1,000``) stay one token, as in PTB;
* other symbols (``& $ % / #``) are kept as their own tokens, as PTB keeps them;
* non-ASCII letters are kept (``piñata``), after Unicode NFC normalisation.

The vocabulary is built from the training sentences only; words seen fewer than
``min_count`` times map to ``<unk>``. Index 0 is ``<pad>`` so that padding
can be masked with ``tokens != 0``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "<e>", "<unk>")

# Tokens the metrics' PTB wrapper removes (plus brackets, which PTB renames to -LRB- etc.).
DROPPED = frozenset({".", ",", "?", "!", ":", ";", "-", "--", "...", "'", '"', "`", "``", "''",
                     "(", ")", "[", "]", "{", "}"})

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                         "\u2014": "--", "\u2026": "..."})
_CLITIC_NT = re.compile(r"(\w)(n't)\b")
_CLITIC = re.compile(r"(\w)('(?:s|re|ve|ll|d|m))\b")
_TOKEN = re.compile(
    r"""
    n't | '(?:s|re|ve|ll|d|m)\b          # clitics, already separated by a space
    | \d+(?:[.,]\d+)+                    # numbers with decimals or thousands: 3.5, 1,000
    | \w+(?:[-'/.]\w+)*                  # words, hyphenated words, o'clock, and/or, u.s
    | \.\.\. | -- | ``                   # multi-character punctuation
    | [^\w\s]                            # any other single symbol
    """,
    re.VERBOSE,
)


def tokenize(sentence: str) -> list[str]:
    """Lower-cased word tokens of `sentence`, punctuation split off and dropped."""
    text = unicodedata.normalize("NFC", sentence).translate(_QUOTES).lower()
    text = _CLITIC_NT.sub(r"\1 \2", text)
    text = _CLITIC.sub(r"\1 \2", text)
    return [tok for tok in _TOKEN.findall(text) if tok not in DROPPED]


class Vocab:
    """Word <-> index map with the special tokens ``<pad> <s> <e> <unk>`` at 0..3."""

    def __init__(self, words: Sequence[str], counts: dict[str, int] | None = None):
        words = list(words)
        if tuple(words[:4]) != SPECIALS:
            words = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.itos: list[str] = words
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(words)}
        self.counts: dict[str, int] = dict(counts or {})

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_count: int = 3) -> Vocab:
        """Words seen at least `min_count` times, most frequent first (ties alphabetical, so it is deterministic)."""
        counter: Counter[str] = Counter()
        for tokens in token_lists:
            counter.update(tokens)
        kept = sorted((w for w, n in counter.items() if n >= min_count), key=lambda w: (-counter[w], w))
        return cls(list(SPECIALS) + kept, {w: counter[w] for w in kept})

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def encode(self, sentence: str | Sequence[str], max_words: int | None = None) -> list[int]:
        """``<s> w1 .. wn <e>`` as indices; a string is tokenized first, words beyond `max_words` are cut."""
        tokens = tokenize(sentence) if isinstance(sentence, str) else list(sentence)
        if max_words is not None:
            tokens = tokens[:max_words]
        return [BOS] + [self.stoi.get(t, UNK) for t in tokens] + [EOS]

    def decode(self, ids: Iterable[int]) -> str:
        """Words of `ids` up to the first ``<e>``; ``<s>`` and ``<pad>`` are skipped."""
        words = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            words.append(self.itos[i] if 0 <= i < len(self.itos) else SPECIALS[UNK])
        return " ".join(words)

    def to_dict(self) -> dict:
        """Plain data for the checkpoint (loads with ``torch.load(weights_only=True)``)."""
        return {"itos": list(self.itos), "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, data: dict) -> Vocab:
        return cls(data["itos"], data.get("counts"))

    def save_txt(self, path: str | Path) -> None:
        """One line per word, ``index<TAB>word<TAB>count``, readable and diff-able."""
        lines = [f"{i}\t{w}\t{self.counts.get(w, 0)}" for i, w in enumerate(self.itos)]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")

    @classmethod
    def load_txt(cls, path: str | Path) -> Vocab:
        words, counts = [], {}
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if not line:
                continue
            _, word, count = line.split("\t")
            words.append(word)
            counts[word] = int(count)
        return cls(words, {w: n for w, n in counts.items() if w not in SPECIALS})
