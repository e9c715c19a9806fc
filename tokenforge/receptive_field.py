"""Receptive field of a 1D convolutional stack, computed from its layers (kernel, stride, dilation, padding).

Why: chunked encoding of long audio is exact only when each chunk carries enough real neighbouring samples on
each side, and "enough" is a property of the architecture. `receptive_field(module)` walks the stack and returns,
for an output frame ``t``, the input samples it reads: ``[t * stride - left, t * stride + right]``.

Rules (each layer in its own input units, composed left to right with the running stride ``J``:
``left += l * J``, ``right += r * J``, ``J *= s``):
- a padded conv (`tokenforge.nn.conv1d.Conv1d`: effective kernel ``k = (kernel - 1) * dilation + 1``, left pad
  ``p``) reads ``l = p`` samples before ``t * s`` and ``r = k - 1 - p`` after; a plain ``nn.Conv1d`` likewise with
  its ``padding``;
- a residual unit reads the wider of its branches; pointwise layers (activations, 1x1 convs) add nothing;
- a recurrent layer (``nn.LSTM`` / ``nn.GRU``, `SLSTM`) reads the whole past: ``left`` becomes unbounded
  (``recurrent = "causal"``); a bidirectional one also the whole future (``"bidirectional"``).
The left pad of a conv is the one it uses on interior samples (right padding that completes the last window
only touches the end of the input). A layer the walker does not know is refused rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tokenforge.nn.conv1d import SLSTM, Conv1d, ConvResidualUnit1d

POINTWISE = (nn.ELU, nn.ReLU, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Tanh, nn.Identity, nn.Dropout)


@dataclass(frozen=True)
class ReceptiveField:
    """Output frame ``t`` reads input samples ``[t * stride - left, t * stride + right]`` (finite conv part);
    ``recurrent`` is None, ``"causal"`` (plus every earlier sample) or ``"bidirectional"`` (every sample)."""

    left: int
    right: int
    stride: int
    recurrent: str | None = None

    def context_frames(self) -> tuple[int, int]:
        """Whole frames of real context a window needs on each side so its kept frames see no window edge:
        left ``ceil(left / stride)``; right ``ceil((right + 1) / stride) - 1`` (frame ``t`` ends at ``t*stride +
        stride - 1``, so the first ``stride - 1`` samples of right reach come free)."""
        return -(-self.left // self.stride), max(0, -(-(self.right + 1) // self.stride) - 1)

    def then(self, other: ReceptiveField) -> ReceptiveField:
        """This layer followed by ``other`` (``other`` in this layer's output units)."""
        recurrent = "bidirectional" if "bidirectional" in (self.recurrent, other.recurrent) else \
            self.recurrent or other.recurrent
        return ReceptiveField(self.left + other.left * self.stride, self.right + other.right * self.stride,
                              self.stride * other.stride, recurrent)

    def widest(self, other: ReceptiveField) -> ReceptiveField:
        """Two parallel branches of the same stride (a residual unit)."""
        if self.stride != other.stride:
            raise ValueError(f"parallel branches with strides {self.stride} and {other.stride}")
        recurrent = "bidirectional" if "bidirectional" in (self.recurrent, other.recurrent) else \
            self.recurrent or other.recurrent
        return ReceptiveField(max(self.left, other.left), max(self.right, other.right), self.stride, recurrent)


IDENTITY = ReceptiveField(0, 0, 1)


def receptive_field(module: nn.Module) -> ReceptiveField:
    """The receptive field of ``module`` (see the module docstring for the rules)."""
    if isinstance(module, Conv1d):
        total = module.kernel_size - module.stride
        left = total if module.causal else total - total // 2
        return ReceptiveField(left, module.kernel_size - 1 - left, module.stride)
    if isinstance(module, nn.Conv1d):
        if not isinstance(module.padding, tuple):
            raise ValueError(f"receptive_field: nn.Conv1d with padding={module.padding!r} (give it in samples)")
        k = (module.kernel_size[0] - 1) * module.dilation[0] + 1
        return ReceptiveField(module.padding[0], k - 1 - module.padding[0], module.stride[0])
    if isinstance(module, ConvResidualUnit1d):
        return receptive_field(module.block).widest(receptive_field(module.shortcut))
    if isinstance(module, nn.Sequential):
        field = IDENTITY
        for layer in module:
            field = field.then(receptive_field(layer))
        return field
    if isinstance(module, SLSTM):
        return receptive_field(module.lstm)
    if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
        return ReceptiveField(0, 0, 1, "bidirectional" if module.bidirectional else "causal")
    if isinstance(module, POINTWISE):
        return IDENTITY
    raise TypeError(f"receptive_field: no rule for {type(module).__name__}; add one rather than guess")
