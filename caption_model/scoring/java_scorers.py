"""The two Java tools of the caption metrics: Stanford's PTB tokenizer and METEOR 1.5.

pycocoevalcap ships both jars and drives them one call at a time: a fresh JVM for
every `PTBTokenizer.tokenize` and one blocking round trip per sentence pair for
METEOR. The official ActivityNet script calls them per tIoU threshold and per
video, which is why it needs minutes. Here each tool is driven in bulk:

* `ptb_tokenize` runs the tokenizer once over any number of sentences, with the
  exact command line and punctuation filter of pycocoevalcap's `PTBTokenizer`.
* `MeteorProcess` keeps one METEOR JVM (pycocoevalcap's command line) and
  streams many `SCORE` / `EVAL` lines through it from a writer thread, so Java
  never waits for Python between lines. The strings sent are built exactly as
  pycocoevalcap's `Meteor._stat` / `compute_score` build them, so every number
  is the one pycocoevalcap would return.

Without Java, `python_tokenize` is an approximate pure-Python stand-in (used so
BLEU, ROUGE-L and CIDEr can still be printed); METEOR has no stand-in.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

JAVA_INSTALL_HINT = (
    "Java is needed for the PTB tokenizer and METEOR; install a JRE "
    "(Debian/Ubuntu: sudo apt-get install default-jre-headless; macOS: brew install openjdk; "
    "or run `make java`) and rerun"
)

# pycocoevalcap's PTBTokenizer drops exactly these tokens after tokenising.
# (With -lowerCase the bracket tokens come out as -lrb- and so are *kept*; that
# quirk is part of the official numbers and is reproduced, not fixed.)
PTB_PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)


def _pycocoevalcap_dir() -> Path:
    import pycocoevalcap.meteor.meteor as meteor_module

    return Path(meteor_module.__file__).resolve().parent.parent


def tokenizer_jar() -> Path:
    return _pycocoevalcap_dir() / "tokenizer" / "stanford-corenlp-3.4.1.jar"


def meteor_dir() -> Path:
    return _pycocoevalcap_dir() / "meteor"


_java_ok: bool | None = None


def java_available() -> bool:
    """True when a working `java` is on PATH (checked once per process)."""
    global _java_ok
    if _java_ok is None:
        java = shutil.which("java")
        ok = False
        if java:
            try:
                ok = subprocess.run([java, "-version"], capture_output=True, timeout=60).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
        _java_ok = ok
    return _java_ok


def _line_safe(sentence: str) -> str:
    """One sentence per line: pycocoevalcap replaces '\\n'; other line breaks would
    shift every later line of the batch, so they become spaces too."""
    return sentence.replace("\n", " ").replace("\r", " ").replace("\x0b", " ").replace("\x0c", " ")


def _filter_punctuation(line: str) -> str:
    return " ".join(w for w in line.rstrip().split(" ") if w not in PTB_PUNCTUATIONS)


def ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """Tokenise all `sentences` in ONE tokenizer JVM, as pycocoevalcap's PTBTokenizer does.

    Same jar, flags (`-preserveLines -lowerCase`) and punctuation filter, so each
    result equals what `PTBTokenizer().tokenize` gives for that sentence.
    """
    if not sentences:
        return []
    if not java_available():
        raise RuntimeError(JAVA_INSTALL_HINT)
    text = "\n".join(_line_safe(s) for s in sentences)
    with tempfile.TemporaryDirectory(prefix="etspipe-ptb-") as tmp:
        path = os.path.join(tmp, "sentences.txt")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        cmd = ["java", "-cp", str(tokenizer_jar()), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", path]
        proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"PTB tokenizer failed: {proc.stderr.decode(errors='replace')[-500:]}")
    lines = proc.stdout.decode("utf-8").split("\n")
    # The tokenizer ends its output with a newline; pycocoevalcap zips lines to
    # captions and so ignores anything past the last caption.
    if len(lines) < len(sentences):
        raise RuntimeError(f"PTB tokenizer returned {len(lines)} lines for {len(sentences)} sentences")
    return [_filter_punctuation(line) for line in lines[: len(sentences)]]


# A pure-Python approximation of PTB tokenisation for machines without Java.
# It splits off punctuation and the English clitics PTB splits; it is NOT the
# official tokenizer, so scores computed with it are close but not official.
_CLITICS = re.compile(r"(?i)(\w)('s|'re|'ve|'ll|'d|'m|n't)\b")
_TOKEN = re.compile(r"n't|'s|'re|'ve|'ll|'d|'m|\w+(?:[-.]\w+)*|\.\.\.|--|[^\w\s]")


def python_tokenize(sentences: Iterable[str]) -> list[str]:
    """Approximate PTB tokenisation in Python (lower-cased, punctuation removed)."""
    out = []
    for s in sentences:
        s = _CLITICS.sub(r"\1 \2", _line_safe(s).lower())
        tokens = _TOKEN.findall(s)
        out.append(" ".join(t for t in tokens if t not in PTB_PUNCTUATIONS and t not in "\"()[]{}"))
    return out


class MeteorProcess:
    """One METEOR 1.5 JVM for a whole evaluation, fed in bulk.

    `stats` returns METEOR's sufficient statistics of each (hypothesis,
    references) pair; `aggregate` turns groups of statistics into METEOR
    scores (METEOR's corpus-level score of each group, i.e. exactly what
    pycocoevalcap's `Meteor.compute_score` returns for those pairs).
    """

    def __init__(self) -> None:
        if not java_available():
            raise RuntimeError(JAVA_INSTALL_HINT)
        cmd = ["java", "-jar", "-Xmx2G", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en", "-norm"]
        self._proc = subprocess.Popen(
            cmd, cwd=str(meteor_dir()), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._stderr: list[bytes] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line)

    @staticmethod
    def score_line(hypothesis: str, references: Sequence[str]) -> str:
        # Built exactly as pycocoevalcap's Meteor._stat builds it.
        hypothesis = hypothesis.replace("|||", "").replace("  ", " ")
        return " ||| ".join(("SCORE", " ||| ".join(references), hypothesis))

    def _exchange(self, lines: list[str], answers_per_line: Sequence[int]) -> list[str]:
        """Send all lines from a writer thread while this thread reads the answers."""
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        error: list[BaseException] = []

        def write() -> None:
            try:
                chunk: list[str] = []
                size = 0
                for line in lines:
                    chunk.append(line)
                    size += len(line)
                    if size > 1 << 16:
                        proc.stdin.write(("\n".join(chunk) + "\n").encode("utf-8"))
                        chunk, size = [], 0
                if chunk:
                    proc.stdin.write(("\n".join(chunk) + "\n").encode("utf-8"))
                proc.stdin.flush()
            except BaseException as exc:  # reported by the reader below
                error.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        out: list[str] = []
        total = sum(answers_per_line)
        readline = proc.stdout.readline
        for _ in range(total):
            raw = readline()
            if not raw:
                writer.join(timeout=1)
                detail = b"".join(self._stderr[-20:]).decode(errors="replace").strip()
                raise RuntimeError(f"METEOR stopped unexpectedly: {detail or error or 'no message'}")
            out.append(raw.decode("utf-8").strip())
        writer.join()
        if error:
            raise RuntimeError(f"writing to METEOR failed: {error[0]}")
        return out

    def stats(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
        """METEOR statistics of each (tokenised hypothesis, tokenised references) pair."""
        if not pairs:
            return []
        lines = [self.score_line(h, refs) for h, refs in pairs]
        return self._exchange(lines, [1] * len(lines))

    def aggregate(self, groups: Sequence[Sequence[str]]) -> list[float]:
        """METEOR score of each group of statistics (one `EVAL` line per group)."""
        groups = [g for g in groups]
        if any(len(g) == 0 for g in groups):
            raise ValueError("an EVAL group needs at least one pair")
        if not groups:
            return []
        lines = ["EVAL ||| " + " ||| ".join(g) for g in groups]
        # METEOR answers an EVAL line with one score per segment, then the total.
        answers = self._exchange(lines, [len(g) + 1 for g in groups])
        scores = []
        pos = 0
        for g in groups:
            pos += len(g) + 1
            scores.append(float(answers[pos - 1]))
        return scores

    def segment_scores(self, stats: Sequence[str], chunk: int = 1000) -> list[float]:
        """METEOR score of each pair's statistics on its own.

        These are the per-segment lines of METEOR's answer to an `EVAL` line
        (pycocoevalcap's `compute_score` returns them as its second value); each
        depends on its own statistics only, so any number of pairs go in
        `EVAL` lines of at most `chunk` pairs.
        """
        groups = [list(stats[i:i + chunk]) for i in range(0, len(stats), chunk)]
        if not groups:
            return []
        lines = ["EVAL ||| " + " ||| ".join(g) for g in groups]
        answers = self._exchange(lines, [len(g) + 1 for g in groups])
        scores: list[float] = []
        pos = 0
        for g in groups:
            scores.extend(float(a) for a in answers[pos:pos + len(g)])
            pos += len(g) + 1
        return scores

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> MeteorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared_lock = threading.Lock()
_shared: MeteorProcess | None = None


def shared_meteor() -> MeteorProcess:
    """A METEOR process kept for the life of this Python process.

    Its JVM needs seconds to load the paraphrase table, so evaluation during
    training, repeated `evaluate_results` calls and the test suite all reuse
    one. Callers hold `meteor_lock()` while they use it.
    """
    global _shared
    if _shared is None or _shared._proc.poll() is not None:
        _shared = MeteorProcess()
    return _shared


def meteor_lock() -> threading.Lock:
    return _shared_lock


@atexit.register
def _close_shared() -> None:
    if _shared is not None:
        _shared.close()
