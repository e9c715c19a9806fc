"""VAT (3D shapes) as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Command, Method, Option

METHOD = Method(
    name="vat", kind="tokenizer", modality="mesh", layout="scales", package="tokenforge.tokenizers.vat",
    official={"shape2vecset": "tokenforge.tokenizers.vat.official"},
    parity={"shape2vecset": "tokenforge.tokenizers.vat.official"},
    bench=Command("vat", "tokenforge.tokenizers.vat.bench:main", "encode shapes/s, decode meshes/s at 128^3 and 256^3"),
    options=(
        Option(("--scales",), ("reconstruct",), {
            "help": "scales kept (coarse-to-fine): K, a list 'K1,K2,...' or 'all' (1..S); default all S"}),
        Option(("--eval-points",), ("reconstruct",), {"type": int, "default": 100_000,
                                                      "help": "surface/volume samples for the metrics (100000)"}),
        Option(("--format",), ("reconstruct",), {"choices": ("ply", "glb"), "default": "ply",
                                                 "help": "mesh file format (ply)"}),
        Option(("--largest-component",), ("reconstruct",), {
            "action": "store_true", "help": "keep only the largest connected piece of each reconstruction"}),
    ),
    verbs={"reconstruct": "tokenforge.tokenizers.vat.cli:reconstruct_verb"},
    demo="tokenforge.tokenizers.vat.demo:part",
)
