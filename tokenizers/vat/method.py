"""VAT (3D shapes) as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Command, Method

METHOD = Method(
    name="vat", kind="tokenizer", modality="mesh", layout="scales", package="tokenforge.tokenizers.vat",
    official={"shape2vecset": "tokenforge.tokenizers.vat.official"},
    parity={"shape2vecset": "tokenforge.tokenizers.vat.official"},
    bench=Command("vat", "tokenforge.tokenizers.vat.bench:main", "encode shapes/s, decode meshes/s at 128^3 and 256^3"),
    reconstruct="tokenforge.tokenizers.vat.cli",
    commands=(Command("vat", "tokenforge.tokenizers.vat.cli:main",
                      "VAT 3D tokenizer: reconstruct meshes (PLY, tokens, preview PNG, bytes/Chamfer/F-score/IoU)"),),
    demo="tokenforge.tokenizers.vat.demo:part",
)
