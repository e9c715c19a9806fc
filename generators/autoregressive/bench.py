"""`tokenforge bench generator ar`: GPT sampling and training throughput under shared/BENCHMARKS.md's conditions.

Sampling rows (LlamaGen's official setting): class-conditional, CFG 4 (batch doubled), top-k 2000, 256 tokens,
batch 1 and 64, KV cache on/off, compile on/off; bf16 weights and fp32. The sampler column: ``fused`` is
`GPT.generate`'s default (Gumbel-max; with compile, the whole step from token ids to next ids, CFG and top-k
included, in one ``torch.compile(mode="reduce-overhead", fullgraph=True)`` CUDA graph); ``multinomial``
(``--multinomial``) adds the former loop with ``torch.multinomial`` and only the transformer compiled.
Training rows: forward + backward (no optimiser step) at batch 64 x 256 tokens, bf16 autocast and fp32,
eager and compiled; the compiled row compiles `GPT.loss` (forward and cross-entropy in one graph, so the
float32 upcast of the logits fuses into the loss instead of materialising a [B, L, V] float32 copy). Each row: warm-up, ``torch.cuda.synchronize()`` around the timed
region, median of ``--repeats``, peak memory. Random weights at a config's size (``--size B``: GPT-B, 111 M,
configs/generators/autoregressive/gpt_b.yaml on its base.yaml; ``L``: gpt_l.yaml; ``tiny``: tiny.yaml, for CPU
smoke runs), or ``--model``: any GPT config or a trained checkpoint. Prints a Markdown table (and ``--json PATH`` writes the rows).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from tokenforge.benchmarking import bench_label, bench_model, is_config, timed
from tokenforge.config_models import size_config
from tokenforge.errors import UsageError
from tokenforge.generators.autoregressive.gpt import GPT

SIZES = {"B": "gpt_b", "L": "gpt_l", "tiny": "tiny"}  # --size -> configs/generators/autoregressive/<name>.yaml


def build(size: str, model: str | None = None) -> GPT:
    """Random weights at a size's config (on its base.yaml), or ``model``: any config or a trained checkpoint."""
    built = bench_model(model or size_config("generators", "autoregressive", SIZES[size]))
    if not isinstance(built, GPT):
        raise UsageError(f"{model} is a {type(built).__name__}; this bench measures GPT models")
    return built


def emit(rows: list[dict], row: dict) -> None:
    """Keep a row and print it at once: a table cut short by a time limit still reports its finished rows."""
    rows.append(row)
    print(table([row]).splitlines()[-1], flush=True)


def sampling_rows(model: GPT, device: torch.device, args: argparse.Namespace, dtype_name: str) -> list[dict]:
    rows = []
    for batch in args.batch:
        for cache in (True, False):
            for compiled in ((False, True) if cache and device.type == "cuda" and not args.no_compile else (False,)):
                for multinomial in ((False, True) if args.multinomial else (False,)):
                    if not cache and (batch > 1 or multinomial) and not args.all:
                        continue  # full recomputation at batch 64 is slow and says nothing new
                    labels = torch.arange(batch, device=device) % model.num_classes
                    gen = torch.Generator(device=device).manual_seed(0)

                    def run() -> None:
                        model.generate(batch, labels, cfg=args.cfg, top_k=args.top_k, generator=gen,
                                       use_cache=cache, compile=compiled, multinomial=multinomial)

                    seconds, peak = timed(run, device, args.warmup, args.repeats)
                    emit(rows, {"workload": "sample", "sampler": "multinomial" if multinomial else "fused",
                                "dtype": dtype_name, "batch": batch, "kv_cache": cache, "compile": compiled,
                                "images_per_s": batch / seconds, "tokens_per_s": batch * model.seq_len / seconds,
                                "peak_gib": peak})
                    model.clear_kv_cache()  # compiled sampling keeps its cache between calls
    return rows


def training_rows(model: GPT, device: torch.device, args: argparse.Namespace) -> list[dict]:
    rows = []
    model.train()
    ids = torch.randint(0, model.vocab_size, (args.train_batch, model.seq_len), device=device)
    labels = torch.randint(0, model.num_classes, (args.train_batch,), device=device)
    for dtype_name in args.dtype:
        for compiled in ((False, True) if device.type == "cuda" and not args.no_compile else (False,)):
            loss_fn = torch.compile(model.loss) if compiled else model.loss

            def step() -> None:
                with torch.autocast(device.type, torch.bfloat16, enabled=dtype_name == "bf16"):
                    loss = loss_fn(ids, labels)
                loss.backward()
                model.zero_grad(set_to_none=True)

            seconds, peak = timed(step, device, args.warmup + (2 if compiled else 0), args.repeats)
            emit(rows, {"workload": "train fwd+bwd", "sampler": "-",
                         "dtype": f"{dtype_name} autocast" if dtype_name == "bf16" else dtype_name,
                         "batch": args.train_batch, "kv_cache": None, "compile": compiled,
                         "images_per_s": args.train_batch / seconds,
                         "tokens_per_s": args.train_batch * model.seq_len / seconds, "peak_gib": peak})
    model.eval()
    return rows


def table(rows: list[dict]) -> str:
    head = ("| workload | sampler | dtype | batch | KV cache | compile | images/s | tokens/s | peak GiB |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [f"| {r['workload']} | {r['sampler']} | {r['dtype']} | {r['batch']} | {r['kv_cache']} | {r['compile']} | "
             f"{r['images_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_gib']:.2f} |" for r in rows]
    return "\n".join([head, *lines])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="tokenforge bench generator ar", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default=None, help="B on CUDA, tiny on CPU by default")
    p.add_argument("--model", default=None, help="a config (YAML size overlay) or a GPT checkpoint instead of --size")
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--dtype", nargs="+", choices=("bf16", "fp32"), default=["bf16", "fp32"])
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--top-k", type=int, default=2000)
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--multinomial", action="store_true",
                   help="also time the former torch.multinomial loop (only the transformer step compiled)")
    p.add_argument("--all", action="store_true", help="also time recomputation without cache at every batch")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    size = args.size or ("B" if device.type == "cuda" else "tiny")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are true fp32
    rows: list[dict] = []
    print(table([]), flush=True)
    torch.manual_seed(0)
    base = build(size, args.model).to(device).eval()
    if not args.model or is_config(args.model):  # random weights
        torch.nn.init.normal_(base.output.weight, std=0.02)  # a zero head would make every sample token 0
    label = f"GPT-{size}" if not args.model else bench_label(args.model)
    for dtype_name in args.dtype:
        model = base.to(torch.bfloat16 if dtype_name == "bf16" else torch.float32)
        rows += sampling_rows(model, device, args, f"{dtype_name} weights")
    if not args.no_train:
        rows += training_rows(base.to(torch.float32), device, args)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{label} ({sum(p.numel() for p in base.parameters()) / 1e6:.1f} M params), {base.seq_len} tokens, "
          f"CFG {args.cfg}, top-k {args.top_k}, on {name}, torch {torch.__version__}\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0
