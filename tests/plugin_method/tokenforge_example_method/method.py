"""The stand-in method's declaration, found through its package's entry point."""

from tokenforge.methods import Method

METHOD = Method(
    name="examplecodec", kind="tokenizer", modality="image", layout="grid", package="tokenforge_example_method",
    aliases=("example",),
)
