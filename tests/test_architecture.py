"""The layout docs/architecture.md describes is the one on disk: every module named in its table,
no import circle (lazy imports included), and the web framework kept to the HTTP edge."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "livecomments"
DOC = PACKAGE.parent / "docs" / "architecture.md"
# The fan-out core and everything between processes stay framework-free (STYLE.md: a Viewer holds
# a transport, never a response), so they can be driven and measured without an HTTP server.
FRAMEWORK_FREE = ("core", "brokers", "registry", "strategies", "storage")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """What a module imports, at run time (TYPE_CHECKING blocks are not): lazy imports count."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner) for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test) for inner in ast.walk(node)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in out if m in modules and m != name}


def _only_a_docstring(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def test_every_module_is_in_the_layout_table() -> None:
    table = DOC.read_text()
    named = set(re.findall(r"`([\w/]+\.py)`", table))
    missing = []
    for path in _modules().values():
        relative = path.relative_to(PACKAGE).as_posix()
        if path.name == "__init__.py" and _only_a_docstring(path):
            continue  # a package marker: its folder is in the table
        if relative not in named:
            missing.append(relative)
    assert not missing, f"docs/architecture.md does not name: {', '.join(sorted(missing))}"


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan: strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    assert not circles, f"import circles: {circles}"


def test_the_core_and_the_transports_do_not_import_the_web_framework() -> None:
    offenders = []
    modules = _modules()
    for name, path in modules.items():
        layer = name.split(".")[1] if "." in name else ""
        if layer not in FRAMEWORK_FREE:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names]
            if any(n.startswith(("aiohttp.web", "livecomments.edge")) for n in names):
                offenders.append(name)
    assert not offenders, f"framework-free layers import aiohttp.web or the edge: {sorted(set(offenders))}"
