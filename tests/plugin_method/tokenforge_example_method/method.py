"""The stand-in method's declaration, found through its package's entry point."""

from tokenforge.methods import Command, Method

METHOD = Method(
    name="examplecodec", kind="tokenizer", modality="image", layout="grid", package="tokenforge_example_method",
    aliases=("example",),
    commands=(Command("example-hello", "tokenforge_example_method.cli:main", "say hello from a plugged-in method"),),
)
