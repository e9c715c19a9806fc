"""The collectives a quantizer needs to keep its codebook identical on every data-parallel rank.

Every helper is a no-op (returns its input) when ``torch.distributed`` is not initialised, so single-process
code pays nothing. Callers must reach each collective on every rank in the same order: the codebook code only
calls them in training mode and under conditions computed from already-synchronised state (the ``inited`` flag,
all-reduced cluster sizes), never from a rank's own data, which is what keeps them from hanging (the failure
mode of k-means and dead-code expiry in vector-quantize-pytorch #17/#105/#222).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over the ranks, in place; returns ``t``."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_rows(x: Tensor) -> Tensor:
    """Concatenate every rank's rows ``[N_r, ...]`` in rank order (ranks may hold different N_r).

    Rank order makes the result equal to the batch a single process would see if the ranks' batches were
    concatenated, which is what lets a DDP run reproduce a single-process run exactly.
    """
    if not is_distributed():
        return x
    sizes = [torch.zeros((), dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor(x.shape[0], dtype=torch.long, device=x.device))
    counts = [int(s) for s in sizes]
    padded = x.new_zeros(max(counts), *x.shape[1:])
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, counts)])


def broadcast_from_rank0(*tensors: Tensor) -> None:
    """Overwrite each tensor, in place, with rank 0's values (random choices may differ between ranks)."""
    if is_distributed():
        for t in tensors:
            dist.broadcast(t, src=0)


def exact_sum_dtype(device: torch.device) -> torch.dtype:
    """dtype for summing fp32 rows: float64 makes the sum (practically) independent of its order, so sums split
    over ranks and all-reduced round to the same fp32 values as one process's sum; MPS has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64
