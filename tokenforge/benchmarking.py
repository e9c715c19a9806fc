"""Timing for `tokenforge bench`: the measuring conditions of shared/BENCHMARKS.md, written once.

Warm-up calls first, ``torch.cuda.synchronize()`` around every timed call, the median of the repeats, and
the peak of ``torch.cuda.max_memory_allocated()`` over the timed region.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], device: torch.device | str, warmup: int = 2, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeats`` synchronised calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed(fn: Callable[[], Any], device: torch.device | str, warmup: int = 2, repeats: int = 5) -> tuple[float, float]:
    """(median seconds, peak GiB allocated during the timed calls; NaN off CUDA)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = median_seconds(fn, device, warmup=0, repeats=repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak
