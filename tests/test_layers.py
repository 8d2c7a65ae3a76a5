"""The package's layering: layers point one way (docs/architecture.md's order), no import cycle between
subpackages, and TensorFlow-free entry points.

Every ``import`` counts: at module level, inside a function, or under ``if TYPE_CHECKING:``.
A node is a subpackage (``edgecnn/export/``) or a
top-level module (``edgecnn/config.py``); ``errors``, ``_io`` and ``_tf`` are the floor.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgecnn"


def _node(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "edgecnn"


def import_graph() -> dict[str, dict[str, list[str]]]:
    """``{node: {imported node: [where, ...]}}`` over every edgecnn module."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        for n in ast.walk(tree):
            targets: list[str] = []
            if isinstance(n, ast.ImportFrom):
                if n.level:
                    base = package.split(".")[: len(package.split(".")) - n.level + 1]
                    targets = [".".join(base + ([n.module] if n.module else []))]
                elif n.module:
                    targets = [n.module]
            elif isinstance(n, ast.Import):
                targets = [a.name for a in n.names]
            for t in targets:
                if t.startswith("edgecnn") and _node(t) != _node(module):
                    graph[_node(module)][_node(t)].append(f"{path.relative_to(PACKAGE.parent)}:{n.lineno}")
    return graph


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_subpackages():
    graph = import_graph()
    cycles = _cycles(graph)
    detail = []
    for comp in cycles:
        for a in comp:
            for b in comp:
                if b in graph.get(a, {}):
                    detail.append(f"{a} -> {b}: {', '.join(graph[a][b][:3])}")
    assert not cycles, "import cycles between subpackages:\n  " + "\n  ".join(detail)


def test_the_cycle_check_can_fail():
    assert _cycles({"a": {"b": ["x"]}, "b": {"a": ["y"]}}) == [["a", "b"]]
    assert _cycles({"a": {"b": ["x"]}, "b": {}}) == []


# docs/architecture.md's layers, lowest first: a node may import its own layer and those before it, never one
# after it. A new subpackage or top-level module must be placed here (the test says so).
LAYERS: list[tuple[str, ...]] = [
    # the floor
    ("errors", "_io", "_memory", "_tf", "_plugins", "_strict", "_trust", "_version", "console", "progress", "store"),
    ("data", "arch"),
    ("quantize",),
    ("runtime",),
    ("export",),
    ("budget_schema",),
    ("compress",),
    ("importing",),
    ("tasks",),          # the task registry and the tasks' recipe sections
    ("report",),         # rendering only: reads the run directory
    ("evaluate",),       # measurement and gating
    ("serve",),
    ("stages",),         # the stage core the tasks share
    ("config",),         # the recipe, composed from the sections
    ("distill", "train"),
    ("classify", "segment", "anomaly", "detect"),   # the tasks' packages
    ("mcu", "auto_recipe", "predict"),
    ("pipeline",),       # orchestration only
    ("cli", "edgecnn"),  # the commands and the package's public API
]


def upward_imports(graph, layers) -> list[str]:
    """Every import of a node by a node in a lower layer, as "low -> high: where"."""
    level = {node: i for i, layer in enumerate(layers) for node in layer}
    return [f"{a} -> {b}: {', '.join(where[:3])}" for a, targets in graph.items() for b, where in targets.items()
            if level[b] > level[a]]


def test_every_node_has_a_layer():
    graph = import_graph()
    nodes = set(graph) | {b for targets in graph.values() for b in targets}
    placed = {n for layer in LAYERS for n in layer}
    assert not nodes - placed, f"place these in tests/test_layers.py LAYERS and docs/architecture.md: {nodes - placed}"


def test_layers_point_one_way():
    bad = upward_imports(import_graph(), LAYERS)
    assert not bad, "a lower layer imports a higher one (see docs/architecture.md):\n  " + "\n  ".join(bad)


def test_the_direction_check_can_fail():
    graph = {"data": {"pipeline": ["edgecnn/data/x.py:3"]}, "pipeline": {"data": ["edgecnn/pipeline.py:9"]}}
    assert upward_imports(graph, [("data",), ("pipeline",)]) == ["data -> pipeline: edgecnn/data/x.py:3"]


def test_the_version_is_the_packages():
    import tomllib

    from edgecnn._version import __version__

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__


# The layers a runtime-only install (``edgecnn[serve]``) uses: importing them must not import TensorFlow.
TF_FREE = [
    "import edgecnn.config as c; c.load_recipe('models/defects-mobilenetv2.yaml')",
    "import edgecnn.export as e; e.list_formats()",
    "import edgecnn.runtime as r; r.runtime_names()",
    "import edgecnn.compress.chooser as ch; ch.list_routes()",
    "import edgecnn.serve",
    "import edgecnn.evaluate.check",
    "import edgecnn.report",
    "import edgecnn.data.preprocess",
    "import edgecnn.cli",
]


@pytest.mark.parametrize("code", TF_FREE)
def test_entry_points_do_not_import_tensorflow(code):
    probe = f"import sys; {code}; bad = [m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules]; " \
            "sys.exit(f'imported {bad}' if bad else 0)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=PACKAGE.parent, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:] or done.stdout[-2000:]


def test_lazy_public_names_are_not_shadowed_by_submodules():
    """`from edgecnn.compress import prune` must give the function even after its module was imported."""
    import importlib
    import types

    import edgecnn.compress as compress
    from edgecnn._plugins import import_submodules

    import_submodules("edgecnn.compress")
    for name in compress.__all__:
        assert not isinstance(getattr(compress, name), types.ModuleType), name
    assert callable(importlib.import_module("edgecnn.compress").prune)


def test_only_the_run_store_names_state_json():
    """``state.json`` belongs to edgecnn/store.py: no other module names the file (in code; prose may)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "store.py" and path.parent == PACKAGE:
            continue
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.strip() == "state.json":
                found.append(f"{path.relative_to(PACKAGE.parent)}:{n.lineno}")
    assert not found, f"modules naming state.json outside the run store: {found}"
