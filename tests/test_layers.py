"""The code's layers, read from its imports (every import statement, at any depth of a
function): no import circle anywhere, arrows that only point down the layers, and an edge
runtime that imports nothing beyond the base install."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, module_env

PACKAGES = ("edgener", "pretrain", "teacher", "distill", "quantize", "bench")
# Lower first. A module may import its own layer and those below it; never one above, nor
# a sibling of the same rank (the service and the training kit do not know each other).
RANKS = {
    "edgener.runtime": 0,
    "edgener.backends": 1,
    "edgener.predictor": 2,
    "edgener.training": 3,
    "edgener.serve": 3,
    "edgener.labelling": 3,
    "edgener.cli": 4,
    "pretrain": 5,
    "teacher": 5,
    "distill": 5,
    "quantize": 5,
    "bench": 6,  # the report measures what the other stages made, and gpu-check runs them
}
# The import names of the base install's dependencies (pyproject's [project] dependencies).
BASE_IMPORTS = {"onnxruntime": "onnxruntime", "tokenizers": "tokenizers", "numpy": "numpy",
                "rich": "rich"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES
            for path in (REPO / package).rglob("*.py")}


def imported_names(path: Path) -> set[str]:
    """Every module an import statement in `path` names, with `from X import y` giving X.y
    (a submodule or a name in X; the caller keeps what is a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def project_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package's __init__ counts as the
    package)."""
    modules = project_modules()
    return {name: {imported for imported in imported_names(path) if imported in modules
                   and imported != name}
            for name, path in modules.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return None


def layer(module: str) -> str | None:
    return max((prefix for prefix in RANKS if module == prefix
                or module.startswith(prefix + ".")), key=len, default=None)


def test_the_circle_finder_finds_a_planted_circle():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circle_in_the_project():
    graph = project_graph()
    assert len(graph) > 60 and graph["edgener.predictor"]  # the imports were read
    assert find_circle(graph) is None


def test_imports_point_down_the_layers():
    upward = [f"{module} -> {target}" for module, targets in project_graph().items()
              for target in targets
              if layer(module) != layer(target)
              and RANKS.get(layer(target), -1) >= RANKS.get(layer(module), -1)]
    assert upward == []


def test_every_module_has_a_layer():
    assert all(layer(module) for module in project_modules() if module != "edgener")


def test_the_runtime_imports_only_the_standard_library_and_the_base_install():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {r.split(">")[0].split("=")[0].split("[")[0] for r in dependencies["dependencies"]}
    assert base == set(BASE_IMPORTS)
    allowed = set(sys.stdlib_module_names) | set(BASE_IMPORTS.values())
    outside = sorted(
        f"{name}: {imported}" for name, path in project_modules().items()
        if layer(name) == "edgener.runtime"
        for imported in imported_names(path)
        if imported.split(".")[0] not in allowed
        and not (imported + ".").startswith("edgener.runtime."))
    assert outside == []


@pytest.mark.parametrize("entry", ["edgener.predictor", "edgener.cli.main"])
def test_the_lean_entry_points_load_no_extra(entry):
    """Importing every runtime module and the lean entry points, in a fresh interpreter,
    loads none of the extras' libraries."""
    runtime = sorted(name for name in project_modules() if layer(name) == "edgener.runtime")
    code = (f"import importlib, sys\nfor name in {[*runtime, entry]!r}:\n"
            "    importlib.import_module(name)\n"
            "from edgener.runtime.errors import EXTRA_OF_MODULE\n"
            "print(sorted(m for m in EXTRA_OF_MODULE if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=module_env(),
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
