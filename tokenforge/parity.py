"""Parity with official implementations: recompute a fixture's outputs from its inputs.

A fixture folder (see ``shared/fixtures/*/README.md``) holds an official checkpoint, ``config.json``,
``inputs.safetensors`` and ``outputs.safetensors``. Each method registers a function that reads the folder
through `tokenforge.hub.from_official`, recomputes what it can and returns ``{output_name: Result}``;
an output it does not return is reported as ``missing``. Nothing here may assume a particular fixture's
seed or sizes: every shape comes from the folder's config and tensors.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from tokenforge.methods import sources


@dataclass
class Result:
    """One recomputed output and the tolerance the fixture README gives for it (0 means exact)."""

    value: torch.Tensor
    tolerance: float


ParityFn = Callable[[Path], dict[str, Result]]
_PARITY: dict[str, ParityFn] = {}

def parity_sources() -> dict[str, str]:
    """Fixture/method name -> the module that registers its parity function on import, from each method's
    declaration (`tokenforge.methods`)."""
    return sources("parity")


def register_parity(method: str, fn: ParityFn) -> None:
    _PARITY[method] = fn


def parity_function(method: str) -> ParityFn | None:
    if method not in _PARITY and method in (known := parity_sources()):
        importlib.import_module(known[method])
    return _PARITY.get(method)


def load_inputs(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "inputs.safetensors"))


@dataclass
class Line:
    name: str
    diff: float | None
    tolerance: float | None
    status: str  # ok | FAIL | missing

    def __str__(self) -> str:
        if self.status == "missing":
            return f"{self.name} - - missing"
        return f"{self.name} {self.diff:.3e} {self.tolerance:.1e} {self.status}"


def compare(expected: torch.Tensor, result: Result | None, name: str) -> Line:
    if result is None:
        return Line(name, None, None, "missing")
    got = result.value.detach().cpu()
    if tuple(got.shape) != tuple(expected.shape):
        return Line(name, float("inf"), result.tolerance, "FAIL")
    if expected.dtype.is_floating_point or got.dtype.is_floating_point:
        diff = (got.double() - expected.double()).abs().max().item() if expected.numel() else 0.0
    else:
        diff = float((got.long() != expected.long()).sum().item())  # exact outputs: count of differing entries
    ok = diff <= result.tolerance and diff == diff  # NaN never passes
    return Line(name, diff, result.tolerance, "ok" if ok else "FAIL")


def check(folder: str | Path, method: str | None = None) -> list[Line]:
    """Run the parity function for ``folder`` (method = folder name unless given) against its outputs."""
    folder = Path(folder)
    method = method or folder.name
    expected = load_file(str(folder / "outputs.safetensors"))
    fn = parity_function(method)
    results: dict[str, Result] = fn(folder) if fn is not None else {}
    return [compare(expected[name], results.get(name), name) for name in expected]
