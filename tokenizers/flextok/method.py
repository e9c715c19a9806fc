"""FlexTok as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Command, Method

METHOD = Method(
    name="flextok", kind="tokenizer", modality="image", layout="sequence", package="tokenforge.tokenizers.flextok",
    official={"flextok": "tokenforge.tokenizers.flextok.official"},
    parity={"flextok": "tokenforge.tokenizers.flextok.official"},
    bench=Command("flextok", "tokenforge.tokenizers.flextok.bench:main", "encode / decode images/s at k=1,32,256"),
    reconstruct="tokenforge.tokenizers.flextok.cli",
    commands=(Command("flextok", "tokenforge.tokenizers.flextok.cli:main",
                      "FlexTok: coarse-to-fine reconstruction strips, PSNR per k (--tokens 1,4,16,64,256)"),),
    demo="tokenforge.tokenizers.flextok.demo:part",
)
