"""Timing for `tokenforge bench`: the measuring conditions of shared/BENCHMARKS.md, written once.

Warm-up calls first, ``torch.cuda.synchronize()`` around every timed call, the median of the repeats, and
the peak of ``torch.cuda.max_memory_allocated()`` over the timed region. While it measures, a transient progress
bar counts the calls (`tokenforge.console.progress`: on a terminal only, never under ``--quiet``; it is cleared
when done, so the printed results stay as they were).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tokenforge import console


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], device: torch.device | str, warmup: int = 2, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeats`` synchronised calls, after ``warmup`` untimed ones."""
    times = []
    with console.progress(total=warmup + repeats, desc="measuring", unit="call", leave=False) as bar:
        for _ in range(warmup):
            fn()
            bar.update()
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
            bar.update()
    return statistics.median(times)


def first_and_median(fn: Callable[[], Any], device: torch.device | str, warmup: int = 2,
                     repeats: int = 5) -> dict[str, float]:
    """``{"seconds": median, "first_call_s": the first call (compilation included)}`` of ``fn``, plus
    ``"peak_mem_gib"`` (peak allocated over all the calls) on CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first = time.perf_counter()
    fn()
    synchronize(device)
    row = {"first_call_s": time.perf_counter() - first, "seconds": median_seconds(fn, device, warmup, repeats)}
    if device.type == "cuda":
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def timed(fn: Callable[[], Any], device: torch.device | str, warmup: int = 2, repeats: int = 5) -> tuple[float, float]:
    """(median seconds, peak GiB allocated during the timed calls; NaN off CUDA)."""
    device = torch.device(device)
    with console.progress(total=warmup, desc="warm-up", unit="call", leave=False) as bar:
        for _ in range(warmup):
            fn()
            bar.update()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = median_seconds(fn, device, warmup=0, repeats=repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak


def kernel_report(fn: Callable[[], Any], rows: int = 20) -> tuple[float, str]:
    """Run ``fn`` once under the CUDA profiler: (milliseconds of GPU kernels, table of the top kernels by their
    own time). Kernel time well below the wall time of the same call means the work is launch-bound."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = prof.key_averages()
    kernel_ms = sum(e.self_device_time_total for e in events) / 1e3
    return kernel_ms, events.table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=70)


def is_config(model: str | Path) -> bool:
    return Path(model).suffix in (".yaml", ".yml")


def bench_model(model: str | Path, overrides: dict[str, Any] | None = None) -> torch.nn.Module:
    """The model a bench measures: random weights at a config's size (a YAML size overlay, composed with its
    method's base.yaml; ``overrides`` change init args) or the trained weights of a checkpoint or saved folder."""
    if is_config(model):
        from tokenforge.config_models import build_model

        return build_model(model, overrides)
    from tokenforge.model_arg import load_model

    return load_model(str(model))


def bench_label(model: str | Path) -> str:
    """How a bench names ``--model`` in its rows: a config's size (``tiny``), a checkpoint's or folder's name."""
    return Path(model).stem if is_config(model) else Path(model).name
