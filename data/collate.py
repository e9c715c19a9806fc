"""Turning decoded samples into dict batches, shared by every modality.

`with_extras` adds what travels beside the data (``__key__``, ``cls``, ``txt``) to a modality decoder's output;
`collate` stacks tensors (padding variable-length token sequences with -1 and adding ``lengths``), turns
ints into a long tensor and keeps strings as lists.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

PAD_ID = -1


def _decode_extras(decode: Callable[[dict[str, Any]], dict[str, Any]], sample: dict[str, Any]) -> dict[str, Any]:
    out = decode(sample)
    out["__key__"] = sample["__key__"]
    if "cls" in sample:
        out["cls"] = int(sample["cls"].decode() if isinstance(sample["cls"], bytes) else sample["cls"])
    if "txt" in sample:
        out["txt"] = sample["txt"].decode() if isinstance(sample["txt"], bytes) else str(sample["txt"])
    return out


def with_extras(decode: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``decode`` plus ``__key__`` and, when present, ``cls`` (int) and ``txt`` (str)."""
    return partial(_decode_extras, decode)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of decoded samples; keys missing from any sample are dropped from the batch."""
    keys = [k for k in samples[0] if all(k in s for s in samples)]
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        first = values[0]
        if isinstance(first, torch.Tensor):
            if any(v.shape != first.shape for v in values):
                if key != "ids" or first.ndim != 1:
                    shapes = sorted({tuple(v.shape) for v in values})
                    raise ValueError(f"cannot batch {key!r}: shapes differ {shapes}; set a fixed crop/segment size")
                batch["lengths"] = torch.tensor([len(v) for v in values])
                batch[key] = torch.nn.utils.rnn.pad_sequence(values, batch_first=True, padding_value=PAD_ID)
            else:
                batch[key] = torch.stack(values)
        elif isinstance(first, bool):
            batch[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, int):
            batch[key] = torch.tensor(values, dtype=torch.long)
        else:
            batch[key] = values
    return batch
