"""The demo's caption grammar: what a caption may say, and when a predicted caption is right.

Every caption names one or two *events* (an object and what it does) in time
order:

    A red circle moves to the left.
    A blue square grows and then a green triangle moves up.

A predicted caption is *correct* when it parses under this grammar (case,
punctuation and the article a/an/the are ignored; "moves left" is accepted for
"moves to the left"; events are joined by "then" or "and then") and its
sequence of (colour, shape, action) events equals the reference sequence
exactly: the right objects, the right events, in the right order, nothing
missing or extra. The scorer (`etspipe_demo.scoring`) and the video planner
(`etspipe_demo.scenes`) both draw their vocabulary from here, so the words a
video can show and the words a caption can use never drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

# Saturated RGB colours, far from each other and from the muted backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (235, 30, 30),
    "green": (30, 205, 50),
    "blue": (40, 70, 240),
    "yellow": (245, 225, 30),
}
SHAPES = ("circle", "square", "triangle")
# Action id -> the words of the caption.
ACTIONS: dict[str, str] = {
    "appear": "appears",
    "disappear": "disappears",
    "grow": "grows",
    "shrink": "shrinks",
    "move_left": "moves to the left",
    "move_right": "moves to the right",
    "move_up": "moves up",
    "move_down": "moves down",
}


class Event(NamedTuple):
    """What happens in one event: which object does what (the unit a caption names)."""

    colour: str
    shape: str
    action: str


def caption_for(events: Sequence[Event]) -> str:
    """The caption of one segment: its events in time order, joined by "and then"."""
    if not events:
        raise ValueError("a caption needs at least one event")
    parts = [f"a {e.colour} {e.shape} {ACTIONS[e.action]}" for e in events]
    text = " and then ".join(parts)
    return text[0].upper() + text[1:] + "."


_ARTICLES = {"a", "an", "the"}
_ACTION_WORDS: dict[tuple[str, ...], str] = {tuple(words.split()): a for a, words in ACTIONS.items()}
_ACTION_WORDS.update({("moves", "left"): "move_left", ("moves", "right"): "move_right"})


def _parse_event(tokens: list[str], i: int) -> tuple[Event, int] | None:
    if i < len(tokens) and tokens[i] in _ARTICLES:
        i += 1
    if i + 1 >= len(tokens) or tokens[i] not in COLOURS or tokens[i + 1] not in SHAPES:
        return None
    colour, shape = tokens[i], tokens[i + 1]
    i += 2
    # Longest action phrase first, so "moves to the left" wins over a shorter prefix.
    for words in sorted(_ACTION_WORDS, key=len, reverse=True):
        if tuple(tokens[i : i + len(words)]) == words:
            return Event(colour, shape, _ACTION_WORDS[words]), i + len(words)
    return None


def parse_caption(text: str) -> list[Event] | None:
    """The events a caption names, in order, or None if it is not a sentence of the grammar.

    Lenient only where meaning does not change: case, punctuation, the article,
    "moves left" for "moves to the left", "then" for "and then". Anything else -
    an unknown word, `<unk>`, a missing action, trailing words - makes it None.
    """
    tokens = re.findall(r"[a-z]+|<[a-z]+>", text.lower())
    events: list[Event] = []
    i = 0
    while True:
        parsed = _parse_event(tokens, i)
        if parsed is None:
            return None
        event, i = parsed
        events.append(event)
        if i == len(tokens):
            return events
        if tokens[i : i + 2] == ["and", "then"]:
            i += 2
        elif tokens[i] == "then":
            i += 1
        else:
            return None


def caption_correct(predicted: str, reference: str | Sequence[Event] | Sequence[Sequence[str]]) -> bool:
    """True when `predicted` names the right objects and events in the right order.

    `reference` is a reference caption or its event list (from the meta file).
    Correct means: `predicted` parses (`parse_caption`) and its sequence of
    (colour, shape, action) equals the reference sequence exactly.
    """
    if isinstance(reference, str):
        ref = parse_caption(reference)
        if ref is None:
            raise ValueError(f"reference caption is not in the demo grammar: {reference!r}")
    else:
        ref = [Event(*e) for e in reference]
    pred = parse_caption(predicted)
    return pred is not None and pred == ref
