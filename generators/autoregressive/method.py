"""GPT (LlamaGen) and VAR as tokenforge sees them; registered in pyproject.toml."""

from tokenforge.methods import Command, Method, Option

GENERATE = ("generate",)

METHOD = Method(
    name="autoregressive", kind="generator", modality="any", layout="any",
    package="tokenforge.generators.autoregressive", aliases=("ar", "gpt", "llamagen", "var"),
    official={"llamagen": "tokenforge.generators.autoregressive.official",
              "var": "tokenforge.generators.autoregressive.official"},
    parity={"llamagen": "tokenforge.generators.autoregressive.official"},
    bench=Command("ar", "tokenforge.generators.autoregressive.bench:main", "GPT sampling and training speed"),
    options=(
        Option(("--cfg",), GENERATE, {"type": float, "default": None,
                                      "help": "guidance scale (GPT default 1 = off; VAR default 1.5)"}),
        Option(("--cfg-schedule",), GENERATE, {"choices": ("constant", "linear", "var"), "default": None,
                                               "help": "constant (GPT default) | linear | var (VAR default: "
                                                       "w = 1 + cfg * s/(K-1))"}),
        Option(("--temperature",), GENERATE, {"type": float, "default": None, "help": "softmax temperature (1)"}),
        Option(("--top-k",), GENERATE, {"type": int, "default": None, "help": "keep the k likeliest tokens (0 = off)"}),
        Option(("--top-p",), GENERATE, {"type": float, "default": None,
                                        "help": "nucleus filter, off unless in (0, 1)"}),
        Option(("--greedy",), GENERATE, {"action": "store_true", "default": None, "help": "argmax, no sampling"}),
        Option(("--compile",), GENERATE, {"action": "store_true", "default": None,
                                          "help": "torch.compile each whole GPT sampling step (a CUDA graph per "
                                                  "token on GPU)"}),
    ),
    demo="tokenforge.generators.autoregressive.demo:part",
)
