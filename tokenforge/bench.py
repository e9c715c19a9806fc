"""`tokenforge bench <area> [<method>] ...`: throughput measurements, one module per method.

    tokenforge bench data ...                        shard loaders, per modality and worker count
    tokenforge bench tokenizer|generator NAME ...    a method's own bench (`Method.bench` in its method.py)
    tokenforge bench NAME ...                        shorthand: a method's bench name alone

Each method's ``main(argv) -> int`` lives beside the code it measures and is imported only when asked for.
Benchmarks print numbers; they never assert timings (see shared/BENCHMARKS.md for the measuring conditions;
`tokenforge.benchmarking` implements them).
"""

from __future__ import annotations

import importlib
import sys

from tokenforge.errors import UsageError
from tokenforge.methods import KINDS, registry

DATA = ("tokenforge.data.bench:main", "shard loader samples/s per worker, per modality")


def benches() -> dict[str, dict[str, tuple[str, str]]]:
    """area (tokenizer, generator) -> bench name -> ("module:function", one-line help), from the methods."""
    found: dict[str, dict[str, tuple[str, str]]] = {kind: {} for kind in KINDS}
    for method in registry().values():
        if method.bench is not None:
            found[method.kind][method.bench.name] = (method.bench.target, method.bench.help)
    return found


def usage() -> str:
    lines = [f"  data                     {DATA[1]}"]
    for area, methods in benches().items():
        lines += [f"  {area + ' ' + name:<24} {help_}" for name, (_, help_) in methods.items()]
    return "usage: tokenforge bench <area> [<method>] [options]\n\n" + "\n".join(lines)


def resolve(argv: list[str]) -> tuple[str, list[str]] | None:
    """(target, remaining argv) for ``data``, ``<area> <method>`` or a bare method name."""
    if argv and argv[0] == "data":
        return DATA[0], argv[1:]
    areas = benches()
    if len(argv) >= 2 and argv[0] in areas and argv[1] in areas[argv[0]]:
        return areas[argv[0]][argv[1]][0], argv[2:]
    for methods in areas.values():
        if argv and argv[0] in methods:
            return methods[argv[0]][0], argv[1:]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    found = resolve(argv)
    if found is None:
        if not argv or argv[0] in {"-h", "--help"}:
            print(usage())
            return 0 if argv else 2
        choices = ", ".join(["data", *(f"{area} {name}" for area, methods in benches().items()
                                       for name in methods)])
        raise UsageError(f"nothing to measure called {' '.join(argv[:2])!r}; choose one of: {choices}")
    target, rest = found
    module_name, function = target.split(":")
    return int(getattr(importlib.import_module(module_name), function)(rest) or 0)
