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
* only the composers - `pipeline.py`, `etspipe_cli/`, `etspipe_demo/` - may
  import both stages. (benchmarks/ and scripts/ are drivers outside the
  packages and are not checked.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = {"extract_features", "caption_model"}
PROJECT = {"etspipe", "features_store", "extract_features", "caption_model", "etspipe_cli", "etspipe_demo",
           "etspipe_view", "pipeline"}
# Per package: the project packages it may import besides itself (None: any) and outside modules it must not.
RULES: dict[str, tuple[set[str] | None, set[str]]] = {
    "etspipe": (set(), {"click"}),
    "features_store": ({"etspipe"}, set()),
    "extract_features": ({"features_store", "etspipe"}, set()),
    "caption_model": ({"features_store", "etspipe"}, {"click"}),
    "etspipe_view": (PROJECT - STAGES - {"etspipe_view"}, {"torch"}),
    "etspipe_cli": (None, set()),
    "etspipe_demo": (None, set()),
    "pipeline": (None, set()),
}


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


def test_only_composers_import_both_stages() -> None:
    composers = {"pipeline", "etspipe_cli", "etspipe_demo"}
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
    module.write_text("import torch\nfrom caption_model.results import read_result\n", encoding="utf-8")
    assert violations(module, "etspipe_view") == ["torch", "caption_model"]
