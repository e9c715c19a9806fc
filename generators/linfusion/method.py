"""LinFusion (text-to-image diffusion) as tokenforge sees it; registered in pyproject.toml."""

from tokenforge.methods import Command, Method, Option

GENERATE = ("generate",)

METHOD = Method(
    name="linfusion", kind="generator", modality="image", layout="continuous",
    package="tokenforge.generators.linfusion",
    official={"linfusion": "tokenforge.generators.linfusion.official"},
    parity={"linfusion": "tokenforge.generators.linfusion.official"},
    bench=Command("linfusion", "tokenforge.generators.linfusion.bench:main", "UNet forward time/memory vs resolution"),
    options=(
        Option(("--base",), GENERATE, {"default": None, "help": "local diffusers Stable Diffusion folder (required)"}),
        Option(("--prompt",), GENERATE, {"default": None, "help": "the text to draw"}),
        Option(("--height",), GENERATE, {"type": int, "default": None, "help": "pixels, a multiple of 8 (512)"}),
        Option(("--width",), GENERATE, {"type": int, "default": None, "help": "pixels, a multiple of 8 (512)"}),
        Option(("--steps",), GENERATE, {"type": int, "default": None, "help": "denoising steps (25)"}),
        Option(("--guidance",), GENERATE, {"type": float, "default": None, "help": "guidance scale (7.5)"}),
        Option(("--ladder",), GENERATE, {"type": float, "nargs": "*", "default": None,
                                         "help": "SDEdit strengths, each doubles the size (e.g. 0.4 0.3)"}),
        Option(("--dtype",), GENERATE, {"choices": ("float32", "float16", "bfloat16"), "default": None,
                                        "help": "the pipeline's dtype (float32)"}),
        Option(("--chunk-size",), GENERATE, {"type": int, "default": None,
                                             "help": "tokens per chunk in LinFusion (bounds memory)"}),
    ),
    verbs={"generate": "tokenforge.generators.linfusion.generate:main"},
    demo="tokenforge.generators.linfusion.demo:part",
)
