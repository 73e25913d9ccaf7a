"""The import graph of duplex/, tui/ and policies/: one way down, no cycles.

Layers, lowest first (docs/architecture.md):

0. ``duplex.*``: events, config, audio, stages, listener, engine, reply, session, mqtt, app;
1. ``policies.*``: turn policies, their training and evaluation (see only events and frames);
2. ``tui.*``: the terminal UI (drives the engine through events);
3. entry points: ``duplex.cli``, ``duplex.commands.*`` and the pytest plugin
   ``duplex.session.pytest_plugin``, which wire the whole stack together.

``benchmarks/`` are scripts on top of everything; nothing in the packages imports them.
A module may import its own layer or lower ones. The graph is read from every import
statement in the source (module level, inside functions and under ``TYPE_CHECKING``), so a
cycle cannot hide behind a function-local import.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("duplex", "tui", "policies")
ENTRY_POINTS = ("duplex.cli", "duplex.commands", "duplex.session.pytest_plugin")
LAYER_NAMES = ("duplex core", "policies", "tui", "entry points", "benchmarks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


def _within(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def layer(mod: str) -> int:
    if any(_within(mod, e) for e in ENTRY_POINTS):
        return 3
    if _within(mod, "benchmarks"):
        return 4
    return {"duplex": 0, "policies": 1, "tui": 2}[mod.split(".")[0]]


def imported_names(mod: str, path: Path) -> Iterator[tuple[str, int]]:
    """(dotted name, line) for every import in the file; ``from X import Y`` gives ``X.Y``
    (resolved to ``X`` later when ``Y`` is not a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                yield f"{prefix}.{alias.name}", node.lineno


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The most specific module of ours (or ``benchmarks.*``) that ``name`` names."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in known:
            return candidate
    if parts[0] == "benchmarks":
        return ".".join(parts[:2])
    return None


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module of ours: first line}."""
    known = source_modules()
    graph: dict[str, dict[str, int]] = {m: {} for m in known}
    for mod, path in known.items():
        for name, line in imported_names(mod, path):
            target = resolve(name, known)
            if target is not None and target != mod:
                graph[mod].setdefault(target, line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next((t for t in it if t in graph), None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph()


def test_the_graph_sees_the_packages_and_function_local_imports(graph):
    # The reader must work before its verdicts mean anything: a known module-level edge,
    # and a known function-local one (the heavy backend loaded only when chosen).
    assert "duplex.events" in graph["duplex.engine"]
    assert "duplex.stages.whisper_asr" in graph["duplex.stages.factory"]
    assert len(graph) > 80


def test_no_import_cycles(graph):
    cycles = strongly_connected(graph)
    described = []
    for comp in cycles:
        members = set(comp)
        edges = [f"{a} -> {b} (line {graph[a][b]})" for a in comp for b in graph[a] if b in members]
        described.append(", ".join(comp) + ":\n    " + "\n    ".join(edges))
    assert not cycles, "import cycles:\n  " + "\n  ".join(described)


def test_no_upward_imports(graph):
    upward = [
        f"{a} ({LAYER_NAMES[layer(a)]}) -> {b} ({LAYER_NAMES[layer(b)]}), {ROOT.name}/{source_modules()[a].relative_to(ROOT)}:{line}"
        for a, targets in graph.items() for b, line in targets.items() if layer(b) > layer(a)
    ]
    assert not upward, "imports against the layering:\n  " + "\n  ".join(upward)


@pytest.mark.parametrize("module", ["duplex.engine", "duplex.app", "duplex.session.replay", "duplex.stages.factory"])
def test_importing_the_core_loads_nothing_above_it(module):
    probe = (
        f"import sys, {module}\n"
        "up = sorted(m for m in sys.modules if m.split('.')[0] in ('policies', 'tui', 'benchmarks')"
        " or m == 'duplex.cli' or m.startswith('duplex.commands'))\n"
        "print(' '.join(up))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [], f"import {module} also imported: {p.stdout.strip()}"
