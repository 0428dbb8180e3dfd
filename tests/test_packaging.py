"""Declared floors that hold: every version floor in setup.cfg is the version the tests run with.

A floor promises that the project works with that release. The only releases it
is tested with are the pins of constraints.txt (the Makefile installs them), so
each floor equals its pin: a floor below it (NumPy 1.24 while the code calls
`np.trapezoid`, new in 2.0) would promise what nothing checks. Raising a pin
means raising the floor in the same change; this test fails until both agree.
"""

from __future__ import annotations

import configparser
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)(\[[A-Za-z0-9_,-]+\])?\s*(.*)$")


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[_norm(name)] = version.strip()
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> list[tuple[str, str, str]]:
    """(section, name, specifier) of every requirement setup.cfg declares."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    out = []
    blocks = [("install_requires", cfg["options"]["install_requires"])]
    blocks += [(f"extras[{k}]", v) for k, v in cfg["options.extras_require"].items()]
    for section, text in blocks:
        for line in text.strip().splitlines():
            m = REQUIREMENT.match(line.strip())
            assert m, f"cannot read requirement {line!r}"
            out.append((section, _norm(m.group(1)), m.group(3).replace(" ", "")))
    return out


def floor_of(spec: str) -> str | None:
    m = re.search(r">=([0-9][0-9A-Za-z.]*)", spec)
    return m.group(1) if m else None


def test_every_floor_is_the_tested_version() -> None:
    tested = pins()
    wrong = []
    for section, name, spec in declared():
        floor = floor_of(spec)
        if floor is None:
            continue
        if name not in tested:
            wrong.append(f"{section}: {name}{spec} has a floor but no tested pin in constraints.txt")
        elif floor != tested[name]:
            wrong.append(f"{section}: {name}{spec}: floor {floor} != tested {tested[name]}")
    assert wrong == []


def test_every_tested_requirement_declares_its_floor() -> None:
    """A requirement the tests install (pinned) but declared without a floor would admit untested old releases."""
    tested = pins()
    missing = [f"{section}: {name}" for section, name, spec in declared()
               if name in tested and floor_of(spec) is None]
    assert missing == []


def test_python_floor_is_the_tested_version() -> None:
    """CI runs the oldest Python the project declares (the one the pinned torch file is built for)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    floor = tuple(int(x) for x in cfg["options"]["python_requires"].strip().removeprefix(">=").split("."))
    running = sys.version_info[:2]
    assert running >= floor
    if os.environ.get("CI"):
        assert running == floor, f"python_requires >={floor} but CI runs {running}"


def test_the_checker_sees_a_floor_below_its_pin(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "constraints.txt").write_text("numpy==2.4.6\n", encoding="utf-8")
    (tmp_path / "setup.cfg").write_text("[options]\ninstall_requires =\n    numpy>=1.24\n"
                                        "[options.extras_require]\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert [(n, floor_of(s)) for _, n, s in declared()] == [("numpy", "1.24")]
    assert pins() == {"numpy": "2.4.6"}
