"""The metrics of `tokenforge evaluate` that other modules provide, each reached through one small adapter.

A metric either gives numbers or one ``"unavailable: ..."`` line saying what is missing (a weight file, a
package, a metric module this installation lacks); evaluation never crashes on a missing metric and never
silently drops one. The adapters look their providers up when called, so a provider that lands later (the DNSMOS
module, weight tables in `tokenforge.metrics.weights`) is picked up without a change here:

- `ssim_variants`: SSIM under each labelled variant of `tokenforge.metrics.image` (``SSIM_VARIANTS``: as the
  reference implementations compute it, and as LlamaGen's evaluation does, ``data_range=2.0`` on [0, 1]).
- `Dnsmos`: `tokenforge.metrics.dnsmos` (its ``DNSMOSMeter``, or ``dnsmos(wave, sample_rate) -> dict`` per
  clip averaged per key).
- `weight_file`: a metric's local weight file, given by path or one of `tokenforge.metrics.weight_files` found
  and checked by `tokenforge.metrics.weights`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

UNAVAILABLE = "unavailable"


def _provider(module: str, *names: str) -> Callable[..., Any] | None:
    """The first of ``names`` that ``module`` defines, or None when the module or the names are absent."""
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError:
        return None
    return next((getattr(found, name) for name in names if callable(getattr(found, name, None))), None)


def ssim_variants(est: Any, ref: Any) -> dict[str, list[float]] | str:
    """Per-image SSIM under every labelled variant `tokenforge.metrics.image` defines besides its default
    (``SSIM_VARIANTS``, e.g. the call of a paper's evaluation script), by variant; or why there is none."""
    from tokenforge.metrics import image

    names = [name for name in getattr(image, "SSIM_VARIANTS", ())[1:]]
    if not names:
        return f"{UNAVAILABLE}: tokenforge.metrics.image defines no other SSIM variant in this installation"
    return {name: list(image.ssim(est, ref, variant=name)) for name in names}


class Dnsmos:
    """DNSMOS of reconstructed clips, one `update` per clip; `result` is ``{key: mean_std, ...provenance}`` or the
    reason it is unavailable. Uses `tokenforge.metrics.dnsmos.DNSMOSMeter` (means and the weights' hashes), else
    its ``dnsmos`` function per clip."""

    def __init__(self) -> None:
        self.meter, self.fn, self.reason = None, None, None
        self.scores: dict[str, list[float]] = {}
        meter = _provider("tokenforge.metrics.dnsmos", "DNSMOSMeter")
        if meter is not None:
            self.meter = meter()
            return
        self.fn = _provider("tokenforge.metrics.dnsmos", "dnsmos")
        if self.fn is None:
            self.reason = f"{UNAVAILABLE}: DNSMOS needs tokenforge.metrics.dnsmos, which this installation lacks"

    def update(self, wave: Any, sample_rate: int) -> None:
        wave = wave.reshape(-1).detach().cpu().float()
        if self.meter is not None:
            self.meter.update(wave, sample_rate)
            return
        if self.reason is not None:
            return
        from tokenforge.metrics.weights import WeightsUnavailable

        try:
            scores = self.fn(wave, sample_rate)
        except (WeightsUnavailable, ImportError, FileNotFoundError) as error:
            self.reason = _reason(error)
            return
        for key, value in scores.items():
            if isinstance(value, (int, float)):
                self.scores.setdefault(str(key), []).append(float(value))

    def result(self) -> dict[str, Any] | str:
        from tokenforge.metrics.image import mean_std

        if self.meter is not None:
            found = self.meter.result()
            return _reason(found) if isinstance(found, str) else found
        if self.reason is not None:
            return self.reason
        return {key: mean_std(values) for key, values in self.scores.items()}


def fid_weights(protocol: str) -> Any:
    """The Inception `WeightFile` of the named FID protocol (`tokenforge.metrics.fid_protocols`), else the name of
    the 2015 Inception file's entry in `tokenforge.metrics.weight_files`."""
    found = _provider("tokenforge.metrics.fid_protocols", "protocol")
    try:
        return found(protocol).weights if found else "FID_INCEPTION"
    except (KeyError, ValueError):
        return "FID_INCEPTION"


def _reason(error: Exception | str) -> str:
    """A provider's message as one ``"unavailable: ..."`` line (kept when it already says so)."""
    text = str(error)
    at = text.find(f"{UNAVAILABLE}:")  # "lpips-vgg unavailable: put ...": the column names the metric already
    return text[at:] if at >= 0 else f"{UNAVAILABLE}: {text}"


def weight_file(constant: Any, given: str | None, flag: str) -> tuple[str | None, str | None]:
    """``(path, None)`` for a metric's weight file, else ``(None, "unavailable: ...")``.

    ``given`` (a command-line path) wins; otherwise the `WeightFile` ``constant`` (itself, or its name in
    `tokenforge.metrics.weight_files`) is located under ``$TOKENFORGE_HOME/weights/`` and checked by sha256."""
    from tokenforge.metrics import weights

    if given:
        return str(given), None
    table = importlib.import_module("tokenforge.metrics.weight_files") if importlib.util.find_spec(
        "tokenforge.metrics.weight_files") else None
    weight = constant if isinstance(constant, weights.WeightFile) else getattr(table, constant, None)
    if not isinstance(weight, weights.WeightFile):
        return None, f"{UNAVAILABLE}: give {flag} FILE (this installation lists no published file for it)"
    try:
        return str(weights.locate(weight)), None
    except weights.WeightsUnavailable as error:
        return None, _reason(error)
