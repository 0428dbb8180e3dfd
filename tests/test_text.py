"""Tokenizer (the metrics' PTB rules) and vocabulary."""

from caption_model.formats.text import BOS, EOS, PAD, SPECIALS, UNK, Vocab, tokenize


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("  A man, a PLAN; a canal: Panama!  ") == ["a", "man", "a", "plan", "a", "canal", "panama"]
    assert tokenize('He said "hi" (twice) -- then left...') == ["he", "said", "hi", "twice", "then", "left"]


def test_tokenize_clitics_split_like_ptb():
    assert tokenize("Don't stop, it's the man's car.") == ["do", "n't", "stop", "it", "'s", "the", "man", "'s", "car"]
    assert tokenize("They\u2019re here") == ["they", "'re", "here"]  # typographic apostrophe


def test_tokenize_keeps_hyphenated_numbers_symbols_and_non_ascii():
    assert tokenize("A well-known 3.5 kg piñata costs $5 & 1,000 cents.") == [
        "a", "well-known", "3.5", "kg", "piñata", "costs", "$", "5", "&", "1,000", "cents"]
    assert tokenize("and/or o'clock") == ["and/or", "o'clock"]


def test_tokenize_degenerate_inputs():
    assert tokenize("") == []
    assert tokenize(" ... !! -- ") == []
    assert tokenize("\u00c9T\u00c9") == ["été"]


def test_vocab_build_min_count_specials_and_order():
    sents = [["a", "dog", "runs"], ["a", "dog", "sits"], ["a", "cat", "runs"], ["a", "dog"]]
    vocab = Vocab.build(sents, min_count=2)
    assert vocab.itos[:4] == list(SPECIALS) and (PAD, BOS, EOS, UNK) == (0, 1, 2, 3)
    assert vocab.itos[4:] == ["a", "dog", "runs"]  # by count, ties alphabetical; cat/sits < 2
    assert vocab.encode("A dog sits.") == [BOS, vocab.stoi["a"], vocab.stoi["dog"], UNK, EOS]
    assert vocab.encode(["a", "dog", "runs"], max_words=2) == [BOS, 4, 5, EOS]
    assert vocab.decode([BOS, 4, 5, EOS, 6, PAD]) == "a dog"


def test_vocab_roundtrips(tmp_path):
    vocab = Vocab.build([["x", "y", "x"]], min_count=1)
    assert Vocab.from_dict(vocab.to_dict()).itos == vocab.itos
    vocab.save_txt(tmp_path / "vocab.txt")
    lines = (tmp_path / "vocab.txt").read_text().splitlines()
    assert lines[0] == "0\t<pad>\t0" and lines[4] == "4\tx\t2"
    again = Vocab.load_txt(tmp_path / "vocab.txt")
    assert again.itos == vocab.itos and again.counts == vocab.counts
