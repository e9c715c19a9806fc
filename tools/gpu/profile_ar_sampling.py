#!/usr/bin/env python
"""Where GPT-B's compiled sampler spends its time on a GPU: images/s with and without top-k, then the GPU kernel
time per generate and the top kernels (`torch.profiler`). LlamaGen's setting: batch 64, CFG 4, 256 tokens.
    python tools/gpu/profile_ar_sampling.py            # on the GPU host, after `source tools/gpu/env.sh`
"""

from __future__ import annotations

import torch

from tokenforge.benchmarking import kernel_report, timed
from tokenforge.generators.autoregressive.bench import SIZES
from tokenforge.generators.autoregressive.gpt import GPT


def main() -> None:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = GPT(**SIZES["B"]).to(device).eval()
    torch.nn.init.normal_(model.output.weight, std=0.02)  # a zero head would make every token 0
    model = model.to(torch.bfloat16)
    n, total = 64, model.seq_len
    labels = torch.arange(n, device=device) % model.num_classes

    def generate(top_k: int = 2000) -> None:
        gen = torch.Generator(device=device).manual_seed(0)
        model.generate(n, labels, cfg=4.0, top_k=top_k, generator=gen, compile=True)

    for top_k in (2000, 0):
        seconds, _ = timed(lambda: generate(top_k), device, 1, 3)
        print(f"top_k={top_k}: {n / seconds:.1f} images/s, {seconds / total * 1e3:.3f} ms per token", flush=True)
    kernel_ms, table = kernel_report(generate, rows=18)
    print(f"GPU kernel time per generate: {kernel_ms:.1f} ms = {kernel_ms / total:.3f} ms per token")
    print(table)


if __name__ == "__main__":
    main()
