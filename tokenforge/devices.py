"""`resolve_device`: a command's ``--device`` value -> ``torch.device``, or one line saying why it cannot be used.

``None``/``"auto"`` picks the first CUDA GPU when torch sees one, else the CPU. Asking for ``cuda`` (or
``cuda:N``, ``mps``) on a machine without it raises `UsageError` instead of failing deep inside torch with a
traceback. Commands call it once on their parsed ``--device`` argument.
"""

from __future__ import annotations

import torch

from tokenforge.errors import UsageError


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The device ``name`` names, checked to exist here; `UsageError` (one line) when it does not."""
    if name is None or str(name).strip().lower() in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name).strip())
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name!r} is not a device torch knows; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device {name}: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                             "use --device cpu, or check the driver and CUDA_VISIBLE_DEVICES")
        if device.index is not None and device.index >= count:
            raise UsageError(f"--device {name}: only {count} CUDA GPU(s) are visible (cuda:0..cuda:{count - 1})")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"--device {name}: Apple MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: unsupported device type {device.type!r}; use cpu, cuda or cuda:N")
    return device
