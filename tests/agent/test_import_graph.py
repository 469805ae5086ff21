"""The agent's import graph, read from its source: no two modules import each other (directly or
round a longer loop, function-local imports included), and nothing imports the collector."""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

from conftest import REPO

AGENT = REPO / "agent"


def _modules() -> dict[str, Path]:
    out = {}
    for path in AGENT.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, module: str, modules: Collection[str] = ()) -> set[str]:
    """What `module` imports, typing-only imports left out: `from pkg import name` is
    `pkg.name` when that is one of `modules` (a submodule), else `pkg`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return names


def _graph() -> dict[str, set[str]]:
    """module -> the agent modules it imports (its own packages, loading already, left out)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        graph[module] = set()
        for name in _imports(path, module, modules):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                graph[module].add(name)
    return graph


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph[node]):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_agent_module_imports_itself_round_a_loop() -> None:
    graph = _graph()
    assert len(graph) > 50 and "agent.detection.network" in graph
    cycles = [c for m in sorted(graph) if (c := _cycle_from(graph, m)) is not None]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle_from(graph, "a") == ["a", "b", "c", "a"]
    assert _cycle_from(graph, "d") is None


def test_the_agent_never_imports_the_collector() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for module, path in _modules().items()
        if any(n == "collector" or n.startswith("collector.") for n in _imports(path, module))
    ]
    assert not offenders
