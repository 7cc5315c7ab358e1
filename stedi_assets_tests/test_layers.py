"""The architecture as a test: imports point one way, cli -> definitions -> defs -> storage -> rules.

A module may import its own layer and the layers below it, never one above. rules/ is pure Polars;
`stedi sql` and `stedi generate` start without loading Dagster.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stedi_assets"
LAYERS = {"rules": 0, "generate": 0, "storage": 1, "defs": 2, "definitions": 3, "cli": 4}
PURE = {"dagster", "deltalake", "boto3", "botocore", "duckdb", "pyarrow"}
"""Packages rules/ must not import: the rules are pure Polars, tested on hand-made frames."""


def layer_of(module: str) -> int:
    parts = module.split(".")
    assert parts[0] == "stedi_assets" and len(parts) > 1, module
    return LAYERS[parts[1]]


def imports(path: Path) -> set[str]:
    """Every module a source file imports, at any depth (imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts): path
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    }


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Edges that point from a lower layer to a higher one."""
    return sorted(
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if target.startswith("stedi_assets.") and layer_of(target) > layer_of(module)
    )


def test_every_module_has_a_layer():
    assert {name.split(".")[1] for name in modules()} == set(LAYERS)


def test_imports_point_down_the_layers():
    graph = {name: imports(path) for name, path in modules().items()}
    assert upward_imports(graph) == []


def test_an_upward_import_is_caught():
    graph = {"stedi_assets.storage.lakehouse": {"stedi_assets.defs.settings", "polars"}}
    assert upward_imports(graph) == [
        "stedi_assets.storage.lakehouse (layer 1) imports stedi_assets.defs.settings (layer 2)"
    ]


def test_rules_are_pure_polars():
    for name, path in modules().items():
        if name.startswith("stedi_assets.rules."):
            outside = {m.split(".")[0] for m in imports(path)} & PURE
            assert outside == set(), f"{name} imports {sorted(outside)}"


@pytest.mark.parametrize("module", ["stedi_assets.cli", "stedi_assets.storage.sql", "stedi_assets.generate"])
def test_fast_commands_start_without_dagster(module: str):
    probe = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
