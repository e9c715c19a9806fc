"""E-CAR (and its peer MAR) as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Command, Method, Option

GENERATE = ("generate",)

METHOD = Method(
    name="ecar", kind="generator", modality="image", layout="continuous", package="tokenforge.generators.ecar",
    official={"mar": "tokenforge.generators.ecar.official"},
    parity={"mar": "tokenforge.generators.ecar.official"},
    bench=Command("ecar", "tokenforge.generators.ecar.bench:main",
                  "E-CAR vs matched DiT: GFLOPs and latency per image"),
    options=(
        Option(("--stages",), GENERATE, {"type": int, "default": None,
                                         "help": "stages to run (default all; fewer: a low-resolution preview)"}),
        Option(("--steps",), GENERATE, {"type": int, "nargs": "+", "default": None,
                                        "help": "Euler steps per stage: one value or one per stage (10; DiT: 50)"}),
        Option(("--cfg",), GENERATE, {"type": float, "default": None,
                                      "help": "classifier-free guidance scale (1 = off)"}),
    ),
    demo="tokenforge.generators.ecar.demo:part",
)
