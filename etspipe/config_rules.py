"""Value rules of the config schema: the `[...]` that starts a key's comment in configs/ets.yaml.

The rule sits beside the words that explain the key, so the documentation a
user reads and the check the loader runs cannot drift apart. The grammar is
deliberately small (see the head of configs/ets.yaml):

    [>= 1]  [> 0]  [0 <= x < 1]     a number in range (an int where the reference value is an int)
    [a|b|c]                         one of these words
    [null or REST]                  null, or a value that meets REST
    [2 values REST]  [1+ values REST]  a list of that many values, each meeting REST
    [text]  [int]                   a non-empty string; any whole number
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_NUM = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"
_ONE_SIDED = re.compile(rf"^(?:(int|float) )?(>=|>|<=|<) ({_NUM})$")
_TWO_SIDED = re.compile(rf"^(?:(int|float) )?({_NUM}) (<=|<) x (<=|<) ({_NUM})$")
_LIST = re.compile(r"^(\d+)(\+?) values(?: (.*))?$")
_WORDS = re.compile(r"^[a-z][a-z0-9_]*(\|[a-z][a-z0-9_]*)*$")
_LINE = re.compile(r"^  (\w+):[^#]*#\s*\[([^\]]*)\]")
_SECTION = re.compile(r"^(\w+):\s*(#.*)?$")


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """One parsed `[...]`; `text` is how messages say what is allowed."""

    text: str

    def __post_init__(self) -> None:
        self._problem_of(None, parse_only=True)  # a rule that cannot be read is a bug of ets.yaml

    def problem(self, value: Any) -> str | None:
        """None when `value` meets the rule, else a short reason."""
        return self._problem_of(value)

    def _problem_of(self, value: Any, parse_only: bool = False) -> str | None:
        text = self.text
        if text.startswith("null or "):
            if value is None and not parse_only:
                return None
            text = text[len("null or "):]
        elif value is None and not parse_only:
            return "needs a value"
        return _check(text, value, parse_only)


def _check(text: str, value: Any, parse_only: bool) -> str | None:
    """Check `value` against one rule body (recursive for lists); with parse_only, only parse."""
    if m := _LIST.match(text):
        count, at_least, each = int(m.group(1)), bool(m.group(2)), m.group(3)
        if each:
            _check(each, None, parse_only=True)
        if parse_only:
            return None
        if not isinstance(value, list):
            return "must be a list"
        if len(value) < count or (not at_least and len(value) != count):
            return f"must hold {'at least ' if at_least else ''}{count} value(s), has {len(value)}"
        for item in value:
            why = _check(each or "number", item, False)
            if why:
                return f"holds {_plain(item)}, which {why}"
        return None
    if text == "text":
        return None if parse_only or (isinstance(value, str) and value.strip()) else "must be a non-empty string"
    if text in ("int", "number"):
        ok = isinstance(value, int) if text == "int" else _is_number(value)
        if parse_only or (ok and not isinstance(value, bool)):
            return None
        return "must be an int" if text == "int" else "must be a number"
    if _WORDS.match(text):
        return None if parse_only or value in text.split("|") else "is not allowed"
    m = _ONE_SIDED.match(text)
    if m:
        kind, bounds = m.group(1), [(m.group(2), float(m.group(3)))]
    elif m := _TWO_SIDED.match(text):
        kind = m.group(1)
        flip = {"<": ">", "<=": ">="}
        bounds = [(flip[m.group(3)], float(m.group(2))), (m.group(4), float(m.group(5)))]
    else:
        raise ValueError(f"configs/ets.yaml: cannot read the value rule [{text}]")
    if parse_only:
        return None
    if not _is_number(value) or (kind == "int" and not isinstance(value, int)):
        return f"must be {'an int' if kind == 'int' else 'a number'}"
    if all(_OPS[op](value, bound) for op, bound in bounds):
        return None
    return "is out of range"


def read_rules(path: Path) -> dict[str, Rule]:
    """`section.key` -> rule, for every key whose comment starts with a `[...]`."""
    rules: dict[str, Rule] = {}
    section = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := _SECTION.match(line):
            section = m.group(1)
        elif section and (m := _LINE.match(line)):
            rules[f"{section}.{m.group(1)}"] = Rule(m.group(2).strip())
    return rules
