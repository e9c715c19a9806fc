"""ENAT as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Command, Method

METHOD = Method(
    name="enat", kind="generator", modality="image", layout="grid", package="tokenforge.generators.enat",
    official={"enat": "tokenforge.generators.enat.official"},
    parity={"enat": "tokenforge.generators.enat.official"},
    bench=Command("enat", "tokenforge.generators.enat.bench:main", "8-step sampling images/s + GFLOPs, reuse vs not"),
    commands=(Command("enat-generate", "tokenforge.generators.enat.generate:main",
                      "ENAT sampling: tokenforge generate plus --steps/--no-reuse/--mode"),),
    demo="tokenforge.generators.enat.demo:part",
)
