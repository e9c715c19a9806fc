"""`tokenforge bench tokenizer wavtokenizer`: seconds of audio encoded / decoded per second.

    tokenforge bench tokenizer wavtokenizer --device cuda                        # BENCHMARKS.md rows (75 tok/s)
    tokenforge bench tokenizer wavtokenizer --variant tiny --batches 1 2 --seconds 1   # CPU smoke run

Conditions of shared/BENCHMARKS.md: random weights at a config's size (``--variant small_75``: the released size,
configs/tokenizers/wavtokenizer/small_75.yaml on its base.yaml, 73.8 M parameters without the unused SEANet
decoder; ``--model``: any config or a trained checkpoint), 10 s clips, warm-up calls, ``cuda.synchronize`` around the timed region,
median of ``--repeats``; rows for fp32 and bf16 (autocast; the VQ distances and the iSTFT stay fp32), batch 1
and 32; peak memory from ``torch.cuda.max_memory_allocated``. Encode = waveform -> ids
(`WavTokenizer.encode_ids`), decode = ids -> waveform (`decode_ids`), the unchecked fast paths the checked
`encode`/`decode` wrap. ``--mode compiled`` measures the torch.compile'd paths (Dynamo does not trace
nn.LSTM: the encoder compiles as two graphs around it); ``--mode graphed`` captures each whole call as a CUDA
graph (fixed shapes; removes launch overhead at small batch); ``--fuse`` folds weight norm first.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from tokenforge.benchmarking import bench_label, bench_model, median_seconds
from tokenforge.config_models import size_config
from tokenforge.errors import UsageError

VARIANTS = ("small_75", "small_40", "short_75", "tiny")  # configs/tokenizers/wavtokenizer/<variant>.yaml


def build(variant: str, model: str | None = None) -> Any:
    """Random weights at ``configs/tokenizers/wavtokenizer/<variant>.yaml`` (on its base.yaml), or ``model``: any
    config or a checkpoint / saved folder (its trained weights)."""
    from tokenforge.tokenizers.wavtokenizer import WavTokenizer

    built = bench_model(model or size_config("tokenizers", "wavtokenizer", variant))
    if not isinstance(built, WavTokenizer):
        raise UsageError(f"{model} is a {type(built).__name__}, not a WavTokenizer")
    return built


class GraphedCall:
    """A fixed-shape CUDA call captured once as a CUDA graph and replayed (the whole encode, LSTM included,
    which torch.compile cannot trace). Inputs are copied into static buffers; the output buffer is reused."""

    def __init__(self, fn, *example: torch.Tensor, warmup: int = 3) -> None:
        self.inputs = [e.clone() for e in example]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(*self.inputs)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        for buffer, value in zip(self.inputs, args):
            buffer.copy_(value)
        self.graph.replay()
        return self.output


@torch.inference_mode()
def measure(model: Any, batch: int, seconds: float, device: torch.device, bf16: bool, warmup: int = 3,
            repeats: int = 5, graphed: bool = False) -> dict[str, Any]:
    """Audio seconds per second for encode and decode of ``batch`` clips of ``seconds``."""
    x = (torch.rand(batch, int(seconds * model.sample_rate), device=device) * 2 - 1) * 0.5
    bandwidth_id = torch.zeros(1, dtype=torch.long, device=device)
    # no autocast weight cache: CUDA-graph capture (graphed=True) needs the casts inside the graph
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with autocast:
        encode, decode = model.encode_ids, model.decode_ids
        ids = encode(x)
        if graphed:
            encode, decode = GraphedCall(encode, x), GraphedCall(decode, ids, bandwidth_id)
        enc = median_seconds(lambda: encode(x), device, warmup, repeats)
        dec = median_seconds(lambda: decode(ids, bandwidth_id), device, warmup, repeats)
    audio = batch * seconds
    row = {"batch": batch, "dtype": "bf16" if bf16 else "fp32", "encode_s_per_s": round(audio / enc, 1),
           "decode_s_per_s": round(audio / dec, 1), "encode_ms": round(enc * 1e3, 2), "decode_ms": round(dec * 1e3, 2)}
    if device.type == "cuda":
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenforge bench tokenizer wavtokenizer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=VARIANTS, default="small_75", help="a config's size (small_75)")
    parser.add_argument("--model", default=None,
                        help="a config (YAML size overlay) or a checkpoint / saved folder instead of --variant")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (10)")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--mode", choices=["eager", "compiled", "graphed"], default="eager",
                        help="eager; torch.compile'd fast paths; or eager fast paths captured as CUDA graphs")
    parser.add_argument("--fuse", action="store_true", help="fold weight norm into plain weights first")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # honest fp32 rows
    model = build(args.variant, args.model).to(device).eval()
    label = bench_label(args.model) if args.model else args.variant
    if args.fuse:
        model.fuse_weight_norm()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    rows = []
    if args.mode == "graphed" and device.type != "cuda":
        parser.error("--mode graphed needs a CUDA device")
    for module in model.modules():  # one contiguous weight block per LSTM (cuDNN; graph capture)
        if isinstance(module, torch.nn.LSTM):
            module.flatten_parameters()
    for batch in args.batches:
        m = model
        if args.mode == "compiled":
            m = build(args.variant, args.model).to(device).eval()  # a fresh copy to compile
            if args.fuse:
                m.fuse_weight_norm()
            m.compile(dynamic=False)
        for dtype in args.dtypes:
            row = {"variant": label, "mode": args.mode, "device": device.type,
                   **measure(m, batch, args.seconds, device, dtype == "bf16", args.warmup, args.repeats,
                             graphed=args.mode == "graphed")}
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
    if not args.json:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"WavTokenizer {label} ({params:.1f} M params), {args.seconds:g} s clips, {name}")
        print("| mode | batch | dtype | encode s/s | decode s/s | encode ms | decode ms | peak GiB |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['mode']} | {r['batch']} | {r['dtype']} | {r['encode_s_per_s']:,} | {r['decode_s_per_s']:,} | "
                  f"{r['encode_ms']} | {r['decode_ms']} | {r.get('peak_mem_gib', '-')} |")
    return 0
