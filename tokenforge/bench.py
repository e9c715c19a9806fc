"""`tokenforge bench <area> [<method>] ...`: throughput measurements, one module per method.

    tokenforge bench data ...                        shard loaders, per modality and worker count
    tokenforge bench tokenizer wavtokenizer ...      (also tokenflow, flextok, vat)
    tokenforge bench generator ar ...                (also enat, ecar, linfusion)
    tokenforge bench tokenflow ...                   shorthand: a method name alone

Each method's ``main(argv) -> int`` lives beside the code it measures and is imported only when asked for.
Benchmarks print numbers; they never assert timings (see shared/BENCHMARKS.md for the measuring conditions;
`tokenforge.benchmarking` implements them).
"""

from __future__ import annotations

import importlib
import sys

from tokenforge.errors import UsageError

DATA = ("tokenforge.data.bench:main", "shard loader samples/s per worker, per modality")
METHODS: dict[str, dict[str, tuple[str, str]]] = {
    "tokenizer": {
        "wavtokenizer": ("tokenforge.tokenizers.wavtokenizer.bench:main", "audio seconds encoded/decoded per second"),
        "tokenflow": ("tokenforge.tokenizers.tokenflow.bench:main", "encode/decode images/s (bf16, fp32)"),
        "flextok": ("tokenforge.tokenizers.flextok.bench:main", "encode / decode images/s at k=1,32,256"),
        "vat": ("tokenforge.tokenizers.vat.bench:main", "encode shapes/s, decode meshes/s at 128^3 and 256^3"),
    },
    "generator": {
        "ar": ("tokenforge.generators.autoregressive.bench:main", "GPT sampling and training speed"),
        "enat": ("tokenforge.generators.enat.bench:main", "8-step sampling images/s + GFLOPs, reuse vs not"),
        "ecar": ("tokenforge.generators.ecar.bench:main", "E-CAR vs matched DiT: GFLOPs and latency per image"),
        "linfusion": ("tokenforge.generators.linfusion.bench:main", "UNet forward time/memory vs resolution"),
    },
}


def usage() -> str:
    lines = [f"  data                     {DATA[1]}"]
    for area, methods in METHODS.items():
        lines += [f"  {area + ' ' + name:<24} {help_}" for name, (_, help_) in methods.items()]
    return "usage: tokenforge bench <area> [<method>] [options]\n\n" + "\n".join(lines)


def resolve(argv: list[str]) -> tuple[str, list[str]] | None:
    """(target, remaining argv) for ``data``, ``<area> <method>`` or a bare method name."""
    if argv and argv[0] == "data":
        return DATA[0], argv[1:]
    if len(argv) >= 2 and argv[0] in METHODS and argv[1] in METHODS[argv[0]]:
        return METHODS[argv[0]][argv[1]][0], argv[2:]
    for methods in METHODS.values():
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
        choices = ", ".join(["data", *(f"{area} {name}" for area, methods in METHODS.items() for name in methods)])
        raise UsageError(f"nothing to measure called {' '.join(argv[:2])!r}; choose one of: {choices}")
    target, rest = found
    module_name, function = target.split(":")
    return int(getattr(importlib.import_module(module_name), function)(rest) or 0)
