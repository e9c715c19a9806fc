"""`tokenforge bench <area> ...`: throughput measurements, one area per module.

Each area is a ``main(argv) -> int`` beside the code it measures, imported only when asked for. Benchmarks
print numbers; they never assert timings (see shared/BENCHMARKS.md for the measuring conditions).
"""

from __future__ import annotations

import importlib
import sys

AREAS: dict[str, tuple[str, str]] = {
    "flextok": ("tokenforge.tokenizers.flextok.bench:main", "FlexTok encode / decode images/s at k=1,32,256 (bf16, fp32)"),
    "data": ("tokenforge.data.bench:main", "shard loader samples/s per worker, per modality"),
    "ecar": ("tokenforge.generators.ecar.bench:main", "E-CAR vs matched DiT: GFLOPs and latency per 256 px image"),
    "generator": ("tokenforge.generators.autoregressive.bench:main", "generators: `ar` = GPT sampling/training speed"),
    "enat": ("tokenforge.generators.enat.bench:main", "ENAT 8-step sampling images/s + GFLOPs: reuse vs no-reuse vs MaskGIT mode"),
    "tokenflow": ("tokenforge.tokenizers.tokenflow.bench:main", "TokenFlow encode/decode images/s (bf16, fp32)"),
    "linfusion": ("tokenforge.generators.linfusion.bench:main", "LinFusion vs SDPA UNet forward time/memory vs resolution"),
    "tokenizer": ("tokenforge.tokenizers.wavtokenizer.bench:main", "tokenizers: `wavtokenizer` = audio seconds encoded/decoded per second"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in AREAS:
        lines = "\n".join(f"  {name:<8} {help_}" for name, (_, help_) in AREAS.items())
        print(f"usage: tokenforge bench <area> [options]\n\nareas:\n{lines}")
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    module_name, function = AREAS[argv[0]][0].split(":")
    return int(getattr(importlib.import_module(module_name), function)(argv[1:]) or 0)
