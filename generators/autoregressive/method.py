"""GPT (LlamaGen) and VAR as tokenforge sees them; registered in pyproject.toml."""

from tokenforge.methods import Command, Method

METHOD = Method(
    name="autoregressive", kind="generator", modality="any", layout="any",
    package="tokenforge.generators.autoregressive", aliases=("ar", "gpt", "llamagen", "var"),
    official={"llamagen": "tokenforge.generators.autoregressive.official",
              "var": "tokenforge.generators.autoregressive.official"},
    parity={"llamagen": "tokenforge.generators.autoregressive.official"},
    bench=Command("ar", "tokenforge.generators.autoregressive.bench:main", "GPT sampling and training speed"),
    commands=(Command("generate", "tokenforge.generators.autoregressive.generate:main",
                      "sample with a generator, decode with its tokenizer"),),
    demo="tokenforge.generators.autoregressive.demo:part",
)
