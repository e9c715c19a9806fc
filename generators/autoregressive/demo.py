"""GPT's part of `tokenforge demo`: a tiny LlamaGen-style GPT learns VQGAN's token grids of the labelled faces."""

from tokenforge.demo_stages import DemoPart, encode_stage, token_generator

EXPECT = "Generated from a model trained for seconds on VQGAN tokens of 32 px faces: expect textures, not faces."


def part() -> DemoPart:
    return token_generator("gpt", "generators/autoregressive", "image tokens", {"default": 80, "long": 3000},
                           encode_stage("vqgan", 32), options=("--top-k", "32"), requires=("vqgan",), expect=EXPECT)
