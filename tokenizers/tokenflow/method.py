"""TokenFlow as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Command, Method, Option

METHOD = Method(
    name="tokenflow", kind="tokenizer", modality="image", layout="scales", package="tokenforge.tokenizers.tokenflow",
    official={"tokenflow": "tokenforge.tokenizers.tokenflow.official"},
    parity={"tokenflow": "tokenforge.tokenizers.tokenflow.official",
            "tokenflow_siglip": "tokenforge.tokenizers.tokenflow.official"},
    bench=Command("tokenflow", "tokenforge.tokenizers.tokenflow.bench:main", "encode/decode images/s (bf16, fp32)"),
    options=(
        Option(("--fit",), ("reconstruct",), {"choices": ("crop", "resize", "none"), "default": "crop",
                                              "help": "how images reach --size: centre crop, squash, or as they are"}),
        Option(("--min-side",), ("reconstruct",), {"type": int, "default": 16,
                                                   "help": "refuse images smaller than this (default 16)"}),
    ),
    verbs={"reconstruct": "tokenforge.tokenizers.tokenflow.cli:reconstruct_verb"},
    demo="tokenforge.tokenizers.tokenflow.demo:part",
)
