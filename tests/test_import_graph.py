"""No import cycles in the ``tokenforge`` namespace (issue 19).

Every module is parsed with ``ast`` (nothing is imported) and the graph of its import-time imports is built:
statements at module level and in class bodies, including those under module-level ``if``/``try``/``with``,
excluding the body of ``if TYPE_CHECKING:`` and everything inside functions. Imports inside functions form a
second graph, ``deferred``: they run when called, once every module is loaded, so they cannot fail on a cycle,
but one that closes a cycle only hides it. Both graphs together must be acyclic too, except through a deferred
import listed in `DEFERRED_OK` with the reason it is deferred (start-up speed); none is listed today.

An edge goes to the module named (``from a.b import c`` to ``a.b.c`` when that is a module, else to ``a.b``);
the parent packages that Python initialises on the way are not added, since a package is in ``sys.modules``
before its ``__init__`` runs any import.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORTIONS = {  # as in setup.py: folder -> package name
    "tokenforge": "tokenforge",
    "tokenizers": "tokenforge.tokenizers",
    "generators": "tokenforge.generators",
    "data": "tokenforge.data",
}

# (importer, imported) -> why that function-level import may close a cycle
DEFERRED_OK: dict[tuple[str, str], str] = {}


def discover() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is_package) for every ``.py`` file of the four portions."""
    modules = {}
    for folder, package in PORTIONS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder)
            if "__pycache__" in rel.parts:
                continue
            parts = [package, *rel.parent.parts]
            is_package = rel.name == "__init__.py"
            if not is_package:
                parts.append(rel.stem)
            modules[".".join(parts)] = (path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(body: list[ast.stmt], deferred: bool = False):
    """Yield (import node, inside a function) for every import in ``body``, skipping TYPE_CHECKING blocks."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, deferred
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _imports(node.body, True)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse, deferred)
        else:  # class bodies and compound statements run at import time
            for field in ("body", "orelse", "finalbody"):
                yield from _imports(getattr(node, field, None) or [], deferred)
            for block in getattr(node, "handlers", None) or getattr(node, "cases", None) or []:
                yield from _imports(block.body, deferred)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The namespace modules one import statement loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if is_package else module.rpartition(".")[0]
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    found = set()
    for name in names:
        while name and name not in known:  # `import a.b.attr` is not valid, but `from a import b` may name a module
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def module_imports(source: str, name: str, is_package: bool, known: set[str]) -> tuple[set[str], set[str]]:
    """(modules imported when ``name`` is loaded, modules imported only inside its functions)."""
    eager: set[str] = set()
    deferred: set[str] = set()
    for node, inside_function in _imports(ast.parse(source).body):
        (deferred if inside_function else eager).update(_targets(node, name, is_package, known) - {name})
    return eager, deferred


def build_graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(import-time graph, deferred graph): module -> the namespace modules it imports."""
    modules = discover()
    eager: dict[str, set[str]] = {}
    deferred: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        eager[name], deferred[name] = module_imports(path.read_text(encoding="utf-8"), name, is_package, set(modules))
    return eager, deferred


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each module of each cyclic component, deduplicated; each ends where it starts."""
    chains = []
    seen = set()
    for component in _components(graph):
        members = set(component)
        for start in component:
            parents = {start: None}
            queue = deque([start])
            end = None
            while queue and end is None:
                node = queue.popleft()
                for child in sorted(graph[node] & members):
                    if child == start:
                        end = node
                        break
                    if child not in parents:
                        parents[child] = node
                        queue.append(child)
            chain = []
            while end is not None:
                chain.append(end)
                end = parents[end]
            chain.reverse()
            key = frozenset(chain)
            if key not in seen:
                seen.add(key)
                chains.append([*chain, start])
    return chains


def _readable(chain: list[str]) -> str:
    return " -> ".join(chain)


def test_discovery_maps_the_four_portions():
    modules = discover()
    for name in ("tokenforge.cli", "tokenforge.tokenizers.vqgan.official", "tokenforge.generators.base",
                 "tokenforge.data.shards"):
        assert name in modules
    assert modules["tokenforge.tokenizers.vqgan"][1]  # a folder with __init__.py is a package
    eager, _ = build_graphs()
    assert "tokenforge.data.shards" in eager["tokenforge.data.datamodule"]  # an edge inside a portion


def test_imports_are_resolved_and_sorted_by_when_they_run():
    known = {"p", "p.a", "p.b", "p.c", "p.sub", "p.sub.d", "p.e", "p.f", "p.g"}
    source = """
import p.a
from . import b
from .d import something
from ..c import other
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from p import e
else:
    import p.f
try:
    from p import g
except ImportError:
    pass
class K:
    import os
def later():
    from p.e import thing
"""
    eager, deferred = module_imports(source, "p.sub.x", False, known)
    assert eager == {"p.a", "p.sub", "p.c", "p.sub.d", "p.f", "p.g"} and deferred == {"p.e"}
    eager, _ = module_imports("from . import d\nfrom .. import b", "p.sub", True, known)  # in p/sub/__init__.py
    assert eager == {"p.sub.d", "p.b"}


def test_cycle_finder_reports_a_readable_chain():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    eager, _ = build_graphs()
    found = cycles(eager)
    assert not found, "import cycles (module-level imports):\n" + "\n".join(map(_readable, found))


def test_no_cycles_hidden_in_functions():
    eager, deferred = build_graphs()
    both = {name: eager[name] | {t for t in deferred[name] if (name, t) not in DEFERRED_OK} for name in eager}
    found = cycles(both)
    assert not found, ("import cycles closed by imports inside functions: move the shared piece to a module both "
                       "can import, or list the deferred edge in DEFERRED_OK with its reason:\n"
                       + "\n".join(map(_readable, found)))


def _area(module: str) -> str:
    """The package a module belongs to for privacy: a method's (``tokenforge.tokenizers.vqgan``), a shared area's
    (``tokenforge.tokenizers.quantizers``), or the module itself for the core and top-level modules."""
    parts = module.split(".")
    return ".".join(parts[:3]) if parts[1] in ("tokenizers", "generators") and len(parts) > 3 else module


def private_imports() -> list[str]:
    """``from X import _name`` where X lies in another method package than the importer (issue 19: a name with a
    leading underscore is its package's own business; what others use is public)."""
    found = []
    for name, (path, is_package) in discover().items():
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(anchor + ([source] if source else []))
            private = [alias.name for alias in node.names if alias.name.startswith("_") and alias.name != "__version__"]
            if private and source.startswith("tokenforge.") and _area(source) != _area(name):
                found.append(f"{name}: from {source} import {', '.join(private)}")
    return found


def test_no_private_names_cross_method_boundaries():
    assert _area("tokenforge.tokenizers.vqgan.official") == _area("tokenforge.tokenizers.vqgan.mage")
    assert _area("tokenforge.tokenizers.tokenflow.official") != _area("tokenforge.tokenizers.vqgan.official")
    assert not private_imports(), "\n".join(private_imports())
