"""TokenFlow as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Command, Method

METHOD = Method(
    name="tokenflow", kind="tokenizer", modality="image", layout="scales", package="tokenforge.tokenizers.tokenflow",
    official={"tokenflow": "tokenforge.tokenizers.tokenflow.official"},
    parity={"tokenflow": "tokenforge.tokenizers.tokenflow.official",
            "tokenflow_siglip": "tokenforge.tokenizers.tokenflow.official"},
    bench=Command("tokenflow", "tokenforge.tokenizers.tokenflow.bench:main", "encode/decode images/s (bf16, fp32)"),
    reconstruct="tokenforge.tokenizers.tokenflow.cli",
    commands=(Command("tokenflow", "tokenforge.tokenizers.tokenflow.cli:main",
                      "TokenFlow: reconstruct images (PNG grid, ids.npy, PSNR/SSIM)"),),
    demo="tokenforge.tokenizers.tokenflow.demo:part",
)
