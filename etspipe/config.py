"""Configuration: `configs/ets.yaml` defines every key, files and `-o` overrides change them.

The reference file is also the schema: a key that it does not hold is a mistake
(reported with the closest valid key), a value must have the type of the
reference value and meet the rule in brackets at the start of the key's comment
(`[>= 1]`, `[linear|bilstm]`, see `etspipe.config_rules`), so a typo or an
impossible value never silently falls back to a default or fails deep in a
stage. Every mistake of one load is reported at once, one line each.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import json
from pathlib import Path
from typing import Any

import yaml

from etspipe.config_rules import Rule, read_rules
from etspipe.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
REFERENCE_CONFIG = CONFIG_DIR / "ets.yaml"

Config = dict[str, dict[str, Any]]


def _read_yaml(path: Path) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping of sections")
    return data


def reference_config() -> Config:
    """The paper/reference hyper-parameters, which also define the valid keys."""
    return _read_yaml(REFERENCE_CONFIG)


def _all_keys(ref: Config) -> list[str]:
    return [f"{s}.{k}" for s, sec in ref.items() for k in sec]


def _closest(key: str, ref: Config) -> str:
    match = difflib.get_close_matches(key, _all_keys(ref), n=1, cutoff=0.0)
    return match[0] if match else ""


@functools.lru_cache(maxsize=1)
def value_rules() -> dict[str, Rule]:
    """`section.key` -> its value rule, read from the comments of configs/ets.yaml."""
    return read_rules(REFERENCE_CONFIG)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """Check `value` against the type of the reference value and the key's rule; return it typed."""
    rule = value_rules().get(key)
    if value is None or default is None:
        why = rule.problem(value) if rule else (None if default is None else "needs a value")
        if why:
            allowed = f" (allowed: {rule.text})" if rule else ""
            raise UserError(f"{source}: {key}{'' if value is None else '=' + _show(value)} {why}{allowed}")
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string; a float key means the number
            with contextlib.suppress(ValueError):
                value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise UserError(
            f"{source}: {key} must be {type(default).__name__} "
            f"(like {default!r}), got {type(value).__name__} {value!r}"
        )
    why = rule.problem(value) if rule else None
    if why:
        raise UserError(f"{source}: {key}={_show(value)} {why} (allowed: {rule.text})")
    return value


def _set(cfg: Config, ref: Config, key: str, value: Any, source: str) -> None:
    section, _, name = key.partition(".")
    if not name or section not in ref or name not in ref[section]:
        hint = _closest(key, ref)
        raise UserError(f"{source}: unknown config key '{key}' (did you mean '{hint}'?)")
    cfg[section][name] = _coerce(key, value, ref[section][name], source)


def _collect(problems: list[str], cfg: Config, ref: Config, key: str, value: Any, source: str) -> None:
    """`_set`, with the mistake added to `problems` instead of stopping at the first."""
    try:
        _set(cfg, ref, key, value, source)
    except UserError as exc:
        problems.append(str(exc))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Reference values, then the keys of `path`, then `section.key=value` overrides.

    The result always holds every key of the reference (a file or an override
    can change a value, never remove a key), so the stages index it directly
    and no default is copied into code. All mistakes are raised together as one
    UserError, one line per mistake.
    """
    ref = reference_config()
    cfg = copy.deepcopy(ref)
    problems: list[str] = []
    if path is not None and Path(path).resolve() != REFERENCE_CONFIG:
        data = _read_yaml(Path(path))
        for section, values in data.items():
            if not isinstance(values, dict):
                hint = _closest(str(section), ref)
                problems.append(f"{path}: '{section}' must be a section of keys (did you mean '{hint}'?)")
                continue
            for name, value in values.items():
                _collect(problems, cfg, ref, f"{section}.{name}", value, str(path))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            problems.append(f"-o {item}: an override must look like section.key=value")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        _collect(problems, cfg, ref, key.strip(), value, "-o")
    if problems:
        raise UserError("\n".join(dict.fromkeys(problems)))
    return cfg


def set_value(cfg: Config, key: str, value: Any, source: str = "option") -> None:
    """Set a key from a CLI flag (already typed by click), validated like an override."""
    _set(cfg, reference_config(), key, value, source)
