"""FlexTok as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Command, Method, Option

METHOD = Method(
    name="flextok", kind="tokenizer", modality="image", layout="sequence", package="tokenforge.tokenizers.flextok",
    official={"flextok": "tokenforge.tokenizers.flextok.official"},
    parity={"flextok": "tokenforge.tokenizers.flextok.official"},
    bench=Command("flextok", "tokenforge.tokenizers.flextok.bench:main", "encode / decode images/s at k=1,32,256"),
    options=(
        Option(("--tokens",), ("reconstruct",), {"default": "1,4,16,64,256", "metavar": "K1,K2,...",
                                                 "help": "reconstruct from the first k tokens, for each k (strips)"}),
        Option(("--steps",), ("reconstruct",), {"type": int, "help": "Euler steps of the flow decoder"}),
        Option(("--guidance",), ("reconstruct",), {"type": float, "help": "guidance scale (APG unless --cfg)"}),
        Option(("--cfg",), ("reconstruct",), {"action": "store_true", "help": "plain CFG instead of APG"}),
    ),
    verbs={"reconstruct": "tokenforge.tokenizers.flextok.cli:reconstruct_verb"},
    demo="tokenforge.tokenizers.flextok.demo:part",
)
