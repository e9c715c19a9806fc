"""The one return convention and contract shared by every quantizer.

A quantizer maps a channel-first continuous map (``[B,C,H,W]`` grid or ``[B,C,L]`` sequence) to codes and
back. ``forward`` is the training pass: it returns the straight-through output (same shape as the input),
the indices, the quantizer's own already-weighted loss, and codebook statistics. ``encode`` / ``decode``
are the inference halves: indices out, continuous codes (channel-first) back.
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from tokenforge.config import Configurable


@dataclass
class QuantizerOutput:
    """What every quantizer's ``forward`` returns.

    ``quantized``: straight-through output, same shape as the input (channel-first).
    ``indices``: ``[B,*spatial]`` (``[B,H,W]`` / ``[B,L]``), or a list of per-scale ``[B, n_s]`` tensors.
    ``loss``: scalar, the quantizer's own loss (commitment + codebook), already weighted; 0 for FSQ.
    ``metrics``: e.g. ``perplexity``, ``usage`` (fraction of codes used in this batch), ``dead_codes_replaced``.
    """

    quantized: Tensor
    indices: Tensor | list[Tensor]
    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Quantizer(Configurable, nn.Module, metaclass=ABCMeta):
    """Abstract base: subclasses implement ``codebook_size``, ``dim``, ``encode``, ``decode`` and ``forward``.

    Observers (tokenforge.codebook_health) see the codes of every training pass through a forward hook on
    ``forward``'s `QuantizerOutput`. A quantizer whose parts a method calls without ``forward`` (FSQ's channel-last
    helpers) sets ``reports_indices`` and hands its training indices to `report_indices` itself.
    """

    reports_indices: bool = False

    def add_index_listener(self, listener: Callable[[Quantizer, Tensor], None]) -> RemovableHandle:
        """Call ``listener(self, indices)`` from `report_indices`; ``.remove()`` on the handle detaches it."""
        listeners = self.__dict__.setdefault("_index_listeners", OrderedDict())  # weak-referenced by the handle
        handle = RemovableHandle(listeners)
        listeners[handle.id] = listener
        return handle

    def report_indices(self, indices: Tensor) -> None:
        """Hand the code indices of a training-mode quantisation to the listeners (nothing in eval mode)."""
        if self.training:
            for listener in list(self.__dict__.get("_index_listeners", {}).values()):
                listener(self, indices)

    @property
    @abstractmethod
    def codebook_size(self) -> int:
        """Number of distinct codes (indices lie in ``[0, codebook_size)``)."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Channels of the continuous input and of the decoded codes."""

    @abstractmethod
    def encode(self, z: Tensor) -> Tensor | list[Tensor]:
        """Channel-first features -> code indices (no state changes, no gradients needed)."""

    @abstractmethod
    def decode(self, indices: Tensor | list[Tensor]) -> Tensor:
        """Code indices -> continuous codes, channel-first."""

    @abstractmethod
    def forward(self, z: Tensor) -> QuantizerOutput:
        """Training pass: straight-through output, indices, own loss, metrics."""


def check_channel_first(z: Tensor, dim: int, who: str, spatial_dims: int | None = None) -> None:
    """Raise a clear error unless ``z`` is ``[B, dim, *spatial]`` (with ``spatial_dims`` axes when given)."""
    if not isinstance(z, Tensor):
        raise TypeError(f"{who} expects a torch.Tensor, got {type(z).__name__}")
    want = f"[B, {dim}, " + ("H, W]" if spatial_dims == 2 else "L]" if spatial_dims == 1 else "*spatial]")
    if z.ndim < 3 or (spatial_dims is not None and z.ndim != 2 + spatial_dims):
        raise ValueError(f"{who} expects a channel-first tensor {want}, got shape {tuple(z.shape)}")
    if z.shape[1] != dim:
        raise ValueError(
            f"{who} expects {dim} channels on dim 1 (channel-first {want}), got shape {tuple(z.shape)}; "
            "move the channel axis to position 1 (e.g. x.transpose(1, -1)) or change the quantizer's dim"
        )
    if not z.is_floating_point():
        raise TypeError(f"{who} expects a floating-point tensor, got {z.dtype}")


def check_indices(indices: Tensor, codebook_size: int, who: str) -> None:
    """Raise a clear error for non-integer or out-of-range code indices."""
    if not isinstance(indices, Tensor) or indices.is_floating_point() or indices.is_complex():
        raise TypeError(f"{who} expects an integer tensor of code indices, got {getattr(indices, 'dtype', indices)}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= codebook_size):
        raise ValueError(
            f"{who}: code indices must lie in [0, {codebook_size - 1}], got min {int(indices.min())} "
            f"max {int(indices.max())}"
        )


def to_rows(z: Tensor) -> Tensor:
    """``[B, C, *spatial]`` -> ``[B * prod(spatial), C]`` (channel-last rows, row-major over space)."""
    return z.movedim(1, -1).reshape(-1, z.shape[1])


def from_rows(rows: Tensor, batch: int, spatial: tuple[int, ...]) -> Tensor:
    """Inverse of `to_rows`: ``[N, C]`` -> ``[B, C, *spatial]``."""
    return rows.reshape(batch, *spatial, rows.shape[-1]).movedim(-1, 1)


def code_statistics(indices: Tensor, codebook_size: int) -> dict[str, Tensor]:
    """Batch histogram statistics: ``perplexity`` = exp(entropy of code frequencies), ``usage`` = used fraction."""
    stats = histogram_statistics(torch.bincount(indices.reshape(-1).long(), minlength=codebook_size).float())
    return {"perplexity": stats["perplexity"], "usage": stats["usage"]}


def histogram_statistics(counts: Tensor) -> dict[str, Tensor]:
    """Health of a codebook from its code histogram ``counts`` ``[codebook_size]`` (any float dtype).

    ``usage``: fraction of the codes used at least once; ``dead_codes``: codes never used; ``entropy``: of the
    code frequencies, in bits (at most log2 codebook_size); ``perplexity``: 2**entropy, the number of equally used
    codes with that entropy; ``vectors``: how many quantised vectors the histogram counts.
    """
    total = counts.sum()
    probs = counts / total.clamp_min(1.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()  # nats
    used = (counts > 0).sum()
    return {"usage": used.float() / counts.numel(), "dead_codes": counts.numel() - used, "perplexity": entropy.exp(),
            "entropy": entropy / math.log(2.0), "vectors": total}
