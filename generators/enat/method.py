"""ENAT as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Command, Method, Option

GENERATE = ("generate",)

METHOD = Method(
    name="enat", kind="generator", modality="image", layout="grid", package="tokenforge.generators.enat",
    official={"enat": "tokenforge.generators.enat.official"},
    parity={"enat": "tokenforge.generators.enat.official"},
    bench=Command("enat", "tokenforge.generators.enat.bench:main", "8-step sampling images/s + GFLOPs, reuse vs not"),
    options=(
        Option(("--steps",), GENERATE, {"type": int, "default": None, "help": "sampling steps (8)"}),
        Option(("--no-reuse",), GENERATE, {"action": "store_false", "dest": "reuse", "default": None,
                                           "help": "re-encode every visible token at every step"}),
        Option(("--mode",), GENERATE, {"choices": ("enat", "maskgit"), "default": None,
                                       "help": "enat | maskgit (the compute baseline)"}),
        Option(("--cfg",), GENERATE, {"type": float, "default": None, "help": "guidance scale w, ramped (2.5)"}),
        Option(("--temperature",), GENERATE, {"type": float, "default": None, "help": "scales --samp-temp (1)"}),
        Option(("--mask-temp",), GENERATE, {"type": float, "default": None, "help": "Gumbel re-masking temperature "
                                                                                    "(1.5)"}),
        Option(("--samp-temp",), GENERATE, {"type": float, "default": None,
                                            "help": "token sampling temperature at step 0 (6)"}),
    ),
    demo="tokenforge.generators.enat.demo:part",
)
