"""E-CAR (and its peer MAR) as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Command, Method

METHOD = Method(
    name="ecar", kind="generator", modality="image", layout="continuous", package="tokenforge.generators.ecar",
    official={"mar": "tokenforge.generators.ecar.official"},
    parity={"mar": "tokenforge.generators.ecar.official"},
    bench=Command("ecar", "tokenforge.generators.ecar.bench:main",
                  "E-CAR vs matched DiT: GFLOPs and latency per image"),
    commands=(Command("ecar-generate", "tokenforge.generators.ecar.generate:main",
                      "E-CAR sampling: --stages/--steps per stage/--cfg, decoded by its KL tokenizer"),),
    demo="tokenforge.generators.ecar.demo:part",
)
