"""`tokenforge bench`: throughput measurements; the method's own bench, found from the model.

    tokenforge bench --model CONFIG_OR_CHECKPOINT [options]   the bench of the model's method: random weights at
                                                             a config's size (a size overlay, composed with its
                                                             base.yaml) or a checkpoint's trained weights
    tokenforge bench data ...                                shard loaders, per modality and worker count
    tokenforge bench tokenizer|generator NAME [options]      a method's bench by name, at its --size configs
    tokenforge bench NAME [options]                          the same, by the bench's name alone

Each method's ``main(argv) -> int`` (`Method.bench` in its method.py) lives beside the code it measures and is
imported only when asked for; it takes ``--model`` and ``--size`` (a config of its configs/ folder). Benchmarks
print numbers; they never assert timings (see shared/BENCHMARKS.md for the measuring conditions;
`tokenforge.benchmarking` implements them).
"""

from __future__ import annotations

import sys

from tokenforge.errors import UsageError
from tokenforge.methods import KINDS, Method, load_target, method_of, registry

DATA = ("tokenforge.data.bench:main", "shard loader samples/s per worker, per modality")


def benches() -> dict[str, dict[str, tuple[str, str]]]:
    """area (tokenizer, generator) -> bench name -> ("module:function", one-line help), from the methods."""
    found: dict[str, dict[str, tuple[str, str]]] = {kind: {} for kind in KINDS}
    for method in registry().values():
        if method.bench is not None:
            found[method.kind][method.bench.name] = (method.bench.target, method.bench.help)
    return found


def usage() -> str:
    lines = ["  --model CONFIG_OR_CKPT    the bench of the model's method (a configs/ size overlay or a checkpoint)",
             f"  data                     {DATA[1]}"]
    for area, methods in benches().items():
        lines += [f"  {area + ' ' + name:<24} {help_}" for name, (_, help_) in methods.items()]
    return ("usage: tokenforge bench --model CONFIG_OR_CHECKPOINT [options]\n"
            "       tokenforge bench <area> [<method>] [options]\n\n" + "\n".join(lines))


def model_class_path(model: str) -> str:
    """The class a ``--model`` builds: a config's inference module (else its Lightning module), or a checkpoint's."""
    from tokenforge.benchmarking import is_config

    if is_config(model):
        from tokenforge.config_models import compose

        spec = compose(model).get("model") or {}
        inner = (spec.get("init_args") or {}).get("model")
        class_path = (inner or {}).get("class_path") or spec.get("class_path")
        if not class_path:
            raise UsageError(f"--model {model}: the config names no model class; give a configs/ size overlay")
        return str(class_path)
    from tokenforge.hub import class_path_of

    try:
        return class_path_of(model)
    except (OSError, ValueError) as error:
        raise UsageError(f"--model {model}: {str(error).rstrip('.')} (or give a configs/ .yaml)") from error


def method_of_model(model: str) -> Method:
    class_path = model_class_path(model)
    method = method_of(class_path)
    if method is None:
        raise UsageError(f"--model {model} builds {class_path}, which no installed method owns")
    if method.bench is None:
        with_bench = ", ".join(m.name for m in registry().values() if m.bench is not None)
        raise UsageError(f"method {method.name} has no bench; these have: {with_bench}")
    return method


def peek_model(argv: list[str]) -> str | None:
    """``--model VALUE`` / ``--model=VALUE`` when it comes before any positional argument (the verb form)."""
    if argv and not argv[0].startswith("-"):
        return None
    for i, arg in enumerate(argv):
        if arg == "--model" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return None


def resolve(argv: list[str]) -> tuple[str, list[str]] | None:
    """(target, remaining argv) for ``--model``, ``data``, ``<area> <method>`` or a bare bench name."""
    model = peek_model(argv)
    if model is not None:
        bench = method_of_model(model).bench
        assert bench is not None  # method_of_model refuses a method without one
        return bench.target, argv
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
        choices = ", ".join(["--model CONFIG_OR_CHECKPOINT", "data",
                             *(f"{area} {name}" for area, methods in benches().items() for name in methods)])
        raise UsageError(f"nothing to measure called {' '.join(argv[:2])!r}; choose one of: {choices}")
    target, rest = found
    return int(load_target(target)(rest) or 0)
