"""The layers of docs/architecture.md, read from the code: every import of every module.

Data flows one way, and so do imports::

    commands  (stress.cli, stress.__main__, stress.commands.*)
       |
    engine    (stress.engine.*)
       |  \\
       |   workloads (stress.workloads.*, stress.plugins)
       |      |
    output    (stress.output.*)           |
       |                                  |
    documents (stress.documents, stress.samples, stress.files, stress.schemas)
       |                                  |
    base      (stress.config, options, cpulist, process, audit, outcome, stats, variants)
       |
    allocator (allocator.*)

A module may import its own layer and the layers below it, never one above; no import
cycle, even through imports hidden inside functions; ``allocator`` imports nothing of
``stress``.  Imports are read with ``ast`` (nothing is imported), inside functions and
``TYPE_CHECKING`` blocks too: an arrow a reader sees is an arrow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("allocator", "stress")

#: layer -> the layers it may import (its own included)
ALLOWED: dict[str, set[str]] = {
    "commands": {"commands", "engine", "workloads", "output", "documents", "base", "allocator"},
    "engine": {"engine", "workloads", "output", "documents", "base", "allocator"},
    "workloads": {"workloads", "base", "allocator"},
    "output": {"output", "documents", "base", "allocator"},
    "documents": {"documents", "base", "allocator"},
    "base": {"base", "allocator"},
    "allocator": {"allocator"},
}
BASE = {"stress", "stress.config", "stress.options", "stress.cpulist", "stress.process", "stress.audit",
        "stress.outcome",
        "stress.stats", "stress.variants"}


def layer_of(module: str) -> str | None:
    """The layer of a module of this project, None for a module no layer claims."""
    if module == "allocator" or module.startswith("allocator."):
        return "allocator"
    if module in ("stress.cli", "stress.__main__") or module.startswith("stress.commands"):
        return "commands"
    if module == "stress.plugins":  # the plug-in point of both registries: policies and workloads
        return "workloads"
    for name in ("engine", "workloads", "output"):
        if module == f"stress.{name}" or module.startswith(f"stress.{name}."):
            return name
    if module in ("stress.documents", "stress.samples", "stress.files") or module.startswith("stress.schemas"):
        return "documents"
    if module in BASE:
        return "base"
    return None


def module_names(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``: dotted name -> file."""
    out: dict[str, Path] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def import_graph(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    """module -> the project's modules it imports (``from a import b`` names ``a.b`` when
    that is a module, else ``a``)."""
    modules = module_names(root, packages)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:  # `import a.b.c` of a non-module tail
                    target = target.rpartition(".")[0]
                if target and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Every import that runs up a layer (or out of any layer), as ``a (layer) -> b (layer)``."""
    bad = []
    for a, targets in sorted(graph.items()):
        la = layer_of(a)
        for b in sorted(targets):
            lb = layer_of(b)
            if la is None or lb is None or lb not in ALLOWED[la]:
                bad.append(f"{a} ({la}) -> {b} ({lb})")
    return bad


GRAPH = import_graph(ROOT)


def test_every_module_has_a_layer() -> None:
    assert [m for m in GRAPH if layer_of(m) is None] == []


def test_no_import_cycle() -> None:
    assert cycles(GRAPH) == []


def test_allocator_never_imports_stress() -> None:
    assert [f"{a} -> {b}" for a, bs in GRAPH.items() if a.startswith("allocator")
            for b in bs if b.startswith("stress")] == []


def test_no_arrow_runs_up() -> None:
    assert upward_arrows(GRAPH) == []


def test_the_graph_is_read_whole() -> None:
    """The reader sees imports hidden in functions and relative ones, or the tests above
    would pass on a graph with arrows missing."""
    assert "stress.engine.runner" in GRAPH["stress.commands.run"]  # imported inside main_run
    assert "stress.engine.sched.token" in GRAPH["stress.engine.sched.controller"]
    assert "allocator.layout" in GRAPH["allocator.zone"]


# --- the checks can fail: a tiny tree with one of each fault ---------------------------------


@pytest.fixture
def faulty_tree(tmp_path: Path) -> Path:
    files = {
        "allocator/__init__.py": "",
        "allocator/zone.py": "from stress import config\n",  # the allocator imports the tester
        "stress/__init__.py": "",
        "stress/config.py": "",
        "stress/documents.py": "def f():\n    from stress.engine import manager\n",  # up, hidden in a function
        "stress/engine/__init__.py": "",
        "stress/engine/manager.py": "from . import worker\n",
        "stress/engine/worker.py": "import stress.engine.manager\n",  # a cycle, through a relative import
        "stress/commands/__init__.py": "",
        "stress/stray.py": "",  # no layer
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_checks_catch_each_fault(faulty_tree: Path) -> None:
    graph = import_graph(faulty_tree)
    assert cycles(graph) == [["stress.engine.manager", "stress.engine.worker"]]
    assert upward_arrows(graph) == [
        "allocator.zone (allocator) -> stress.config (base)",
        "stress.documents (documents) -> stress.engine.manager (engine)",
    ]
    assert [m for m in graph if layer_of(m) is None] == ["stress.stray"]
