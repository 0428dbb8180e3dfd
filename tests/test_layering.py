"""The layering of docs/ARCHITECTURE.md, checked on the source: who may import whom.

Every module of every project package is parsed (nothing is imported or run),
and every import in it - at the top or inside a function, absolute or relative -
is checked against the rules:

* `etspipe/` (the shared ground: version, errors, config, files, devices)
  imports no other project package and no click;
* `features_store` imports only `etspipe`;
* `extract_features` imports only `features_store` and `etspipe`;
* `caption_model` imports only `features_store` and `etspipe`, never click:
  the two stages meet only at the store;
* `etspipe_view` (the HTML viewer) imports no stage and no torch: it reads
  result files;
* only the composers - `pipeline.py`, `etspipe_cli/`, `etspipe_flows/`,
  `etspipe_demo/` - may import both stages; the CLI is the top floor: nothing
  imports it, and `etspipe_flows/` (what the CLI and the demo share) has no click;
* inside `caption_model`, the floors of docs/ARCHITECTURE.md: `formats/` (file
  formats) and `runs/` (run plumbing) import no other part of it, `scoring/`
  only `formats/`, `proposals/` only `runs/`, `scoring/` and `formats/` except
  `proposals/dense.py`, where proposals and the captioner meet; the captioner
  at the top may import every floor. `formats/` and `scoring/` load without
  torch (checked by importing them in a process where torch cannot load).

benchmarks/ and scripts/ are drivers outside the packages and are not checked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = {"extract_features", "caption_model"}
PROJECT = {"etspipe", "features_store", "extract_features", "caption_model", "etspipe_cli", "etspipe_demo",
           "etspipe_flows", "etspipe_view", "pipeline"}
# Per package: the project packages it may import besides itself (None: any) and outside modules it must not.
RULES: dict[str, tuple[set[str] | None, set[str]]] = {
    "etspipe": (set(), {"click"}),
    "features_store": ({"etspipe"}, set()),
    "extract_features": ({"features_store", "etspipe"}, set()),
    "caption_model": ({"features_store", "etspipe"}, {"click"}),
    "etspipe_view": (PROJECT - STAGES - {"etspipe_view"}, {"torch"}),
    "etspipe_flows": (PROJECT - {"etspipe_cli", "etspipe_demo", "pipeline", "etspipe_flows"}, {"click"}),
    "etspipe_cli": (None, set()),
    "etspipe_demo": (PROJECT - {"etspipe_cli", "pipeline", "etspipe_demo"}, set()),
    "pipeline": (None, set()),
}


# caption_model's floors: the parts each may import (besides itself) and whether torch is banned.
FLOORS: dict[str, tuple[set[str], bool]] = {
    "formats": (set(), True),
    "scoring": ({"formats"}, True),
    "runs": (set(), False),
    "proposals": ({"runs", "scoring", "formats"}, False),
}
COMPOSITION_POINTS = {"caption_model/proposals/dense.py"}  # may import the captioner too


def _modules() -> list[Path]:
    files = [ROOT / "pipeline.py"]
    for package in sorted(RULES):
        if (ROOT / package).is_dir():
            files += sorted((ROOT / package).rglob("*.py"))
    return files


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_tops(path: Path, package: str) -> set[str]:
    """The top-level names a module imports anywhere in its body; relative imports count as `package`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    tops: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            tops.add(package if node.level else (node.module or "").split(".")[0])
    return tops


def imported_modules(path: Path) -> set[str]:
    """The dotted names of the absolute imports of a module (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def floor_violations(path: Path) -> list[str]:
    """What a module in one of caption_model's floors imports that its floor must not."""
    rel = path.relative_to(ROOT).as_posix()
    parts = rel.split("/")
    if parts[0] != "caption_model" or len(parts) < 3 or parts[1] not in FLOORS or rel in COMPOSITION_POINTS:
        return []
    allowed, no_torch = FLOORS[parts[1]]
    bad = set()
    for name in imported_modules(path):
        bits = name.split(".")
        if bits[0] == "torch" and no_torch:
            bad.add("torch")
        if bits[0] == "caption_model":
            part = bits[1] if len(bits) > 1 else "(top)"
            if part != parts[1] and part not in allowed:
                bad.add(f"caption_model.{part}" if part in FLOORS else "the captioner (caption_model's top)")
    return sorted(bad)


def violations(path: Path, package: str) -> list[str]:
    """What `path` imports that the rule of `package` forbids (empty when it keeps the rule)."""
    allowed, banned = RULES[package]
    tops = imported_tops(path, package) - {package}
    bad = sorted(tops & banned)
    if allowed is not None:
        bad += sorted(t for t in tops & PROJECT if t not in allowed)
    return bad


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_keeps_its_layer(path: Path) -> None:
    bad = violations(path, _package_of(path))
    assert bad == [], f"{path.relative_to(ROOT)} imports {bad}, which its layer must not"


@pytest.mark.parametrize("path", sorted((ROOT / "caption_model").glob("*/*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_caption_model_floors(path: Path) -> None:
    bad = floor_violations(path)
    assert bad == [], f"{path.relative_to(ROOT)} imports {bad}, which its floor must not"


def test_formats_and_scoring_load_without_torch() -> None:
    """A scorer or a file format loads where torch cannot (the viewer's process, a user's notebook)."""
    modules = [f"caption_model.{p.parent.name}.{p.stem}" for floor in ("formats", "scoring")
               for p in sorted((ROOT / "caption_model" / floor).glob("*.py")) if p.stem != "__init__"]
    code = ("import sys\nsys.modules['torch'] = None\nimport importlib\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_floor_checker_catches_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_root = tmp_path
    module = fake_root / "caption_model" / "formats" / "m.py"
    module.parent.mkdir(parents=True)
    module.write_text("import torch\nfrom caption_model.model import ETS\nfrom caption_model.runs import x\n"
                      "from caption_model.formats.text import Vocab\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    assert floor_violations(module) == ["caption_model.runs", "the captioner (caption_model's top)", "torch"]


def test_only_composers_import_both_stages() -> None:
    composers = {"pipeline", "etspipe_cli", "etspipe_flows", "etspipe_demo"}
    both = [p for p in _modules() if STAGES <= imported_tops(p, _package_of(p))]
    assert [str(p.relative_to(ROOT)) for p in both if _package_of(p) not in composers] == []


def test_the_checker_sees_lazy_dotted_and_relative_imports(tmp_path: Path) -> None:
    """A stage import hidden in a function, a dotted import or click are caught; relative imports are not."""
    module = tmp_path / "m.py"
    module.write_text("import os.path\nfrom . import sibling\nfrom .inner import thing\n\n\ndef f():\n"
                      "    from extract_features.corpus import x\n    import click\n", encoding="utf-8")
    assert imported_tops(module, "caption_model") == {"os", "caption_model", "extract_features", "click"}
    assert violations(module, "caption_model") == ["click", "extract_features"]
    assert violations(module, "etspipe_cli") == []
    module.write_text("import torch\nfrom caption_model.formats.results import read_result\n", encoding="utf-8")
    assert violations(module, "etspipe_view") == ["torch", "caption_model"]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_cycles() -> list[list[str]]:
    """Circles of project modules that import each other (anywhere in their bodies, lazy imports included)."""
    names = {_module_name(p): p for p in _modules()}
    graph = {}
    for name, path in names.items():
        targets = set()
        for imported in imported_modules(path):
            while imported and imported not in names:  # `from a.b import c`: c may be a name, not a module
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.endswith("__init__") or nxt not in graph:
                continue
            if state.get(nxt) == "open" and nxt not in (n for c in cycles for n in c):
                cycles.append(stack[stack.index(nxt):])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def test_no_module_imports_itself_through_another() -> None:
    """A circle (a imports b, b imports a) hides which of them is the lower floor: give the shared piece one home."""
    assert import_cycles() == []
