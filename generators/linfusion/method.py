"""LinFusion (text-to-image diffusion) as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Command, Method

METHOD = Method(
    name="linfusion", kind="generator", modality="image", layout="continuous",
    package="tokenforge.generators.linfusion",
    official={"linfusion": "tokenforge.generators.linfusion.official"},
    parity={"linfusion": "tokenforge.generators.linfusion.official"},
    bench=Command("linfusion", "tokenforge.generators.linfusion.bench:main", "UNet forward time/memory vs resolution"),
    commands=(Command("linfusion", "tokenforge.generators.linfusion.generate:main",
                      "LinFusion text-to-image on a local SD folder (direct / SDEdit ladder)"),),
    demo="tokenforge.generators.linfusion.demo:part",
)
